"""Streaming readers: same values as a full load, bounded buffers, clear errors."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from deepclust.runtime.errors import InputError
from deepclust.runtime.readers import open_inputs, open_reader, read_idx, read_image

from ..conftest import write_idx


def _read_all(reader, batch_rows=7):
    return np.concatenate([b.values.copy() for b in reader.batches(batch_rows)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
def test_npy_batches_equal_the_array(tmp_path, dtype):
    x = (np.arange(50 * 6).reshape(50, 6) % 120).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    r = open_reader(tmp_path / "x.npy")
    assert r.n_rows == 50 and r.sample_shape == (6,)
    np.testing.assert_array_equal(_read_all(r), x.astype(np.float32))


def test_npy_image_rows_are_flattened(tmp_path):
    x = np.random.default_rng(0).random((10, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = open_reader(tmp_path / "x.npy")
    assert r.sample_shape == (4, 4) and r.n_values == 16
    np.testing.assert_array_equal(_read_all(r, 3), x.reshape(10, 16))


def test_npy_reader_reuses_one_buffer(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((100, 4), np.float32))
    bases = {b.values.__array_interface__["data"][0] for b in open_reader(tmp_path / "x.npy").batches(10)}
    assert len(bases) == 1


def test_truncated_npy_is_detected_at_open(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((100, 8), np.float32))
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[:-100])
    with pytest.raises(InputError, match=r"x.npy: truncated: the header says 100 rows, the file holds 96"):
        open_reader(tmp_path / "x.npy")


def test_nan_is_reported_with_its_row(tmp_path):
    x = np.ones((30, 3), np.float32)
    x[17, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(InputError, match="row 17 holds NaN"):
        _read_all(open_reader(tmp_path / "x.npy"), 5)


def test_empty_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((0, 3), np.float32))
    with pytest.raises(InputError, match="empty input"):
        _read_all(open_reader(tmp_path / "x.npy"))


def test_non_numeric_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.array([["a", "b"]]))
    with pytest.raises(InputError, match="not numeric"):
        open_reader(tmp_path / "x.npy")


def test_garbage_file(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"hello world, not an array")
    with pytest.raises(InputError, match="x.npy: not a readable .npy file"):
        open_reader(tmp_path / "x.npy")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_and_read_idx(tmp_path, gz):
    x = np.random.default_rng(0).integers(0, 256, (20, 5, 5)).astype(np.uint8)
    p = write_idx(tmp_path / ("imgs-idx3-ubyte" + (".gz" if gz else "")), x, gz=gz)
    np.testing.assert_array_equal(read_idx(p), x)
    r = open_reader(p)
    assert r.sample_shape == (5, 5)
    np.testing.assert_array_equal(_read_all(r, 6), x.reshape(20, 25).astype(np.float32))


def test_truncated_gzipped_idx(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (200, 10, 10)).astype(np.uint8)
    p = write_idx(tmp_path / "imgs-idx3-ubyte.gz", x, gz=True)
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(InputError, match="imgs-idx3-ubyte.gz: (corrupt or truncated|truncated in rows)"):
        _read_all(open_reader(p), 50)


def test_parquet_with_label_and_ignored_columns(tmp_path):
    t = pa.table({"a": [1.0, 2.0, 3.0], "id": ["x", "y", "z"], "b": [4, 5, 6], "y": [0, 1, 0]})
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=2)
    r = open_reader(tmp_path / "t.parquet", label_column="y", ignore_columns=["id"])
    batches = list(r.batches(2))
    np.testing.assert_array_equal(np.concatenate([b.values for b in batches]), [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), [0, 1, 0])


def test_parquet_selects_feature_names_in_model_order(tmp_path):
    pq.write_table(pa.table({"b": [1.0, 2.0], "a": [3.0, 4.0], "extra": ["p", "q"]}), tmp_path / "t.parquet")
    r = open_reader(tmp_path / "t.parquet", feature_names=["a", "b"])
    np.testing.assert_array_equal(_read_all(r), [[3, 1], [4, 2]])
    with pytest.raises(InputError, match="missing feature columns the model expects: c"):
        open_reader(tmp_path / "t.parquet", feature_names=["a", "c"])


def test_non_numeric_column_is_named(tmp_path):
    (tmp_path / "t.csv").write_text("a,name\n1,foo\n2,bar\n")
    with pytest.raises(InputError, match=r"t.csv: column 'name' is string, not numeric"):
        open_reader(tmp_path / "t.csv")


def test_csv_reads_later_floats_in_an_integer_column(tmp_path):
    rows = "\n".join(f"{i},{i * 2}" for i in range(5)) + "\n1.5,2\n"
    (tmp_path / "t.csv").write_text("a,b\n" + rows)
    x = _read_all(open_reader(tmp_path / "t.csv"))
    assert x.shape == (6, 2) and x[-1, 0] == 1.5


def test_csv_missing_value_is_an_error(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,\n")
    with pytest.raises(InputError, match="row 1, column 'b', holds NaN, Inf or a missing value"):
        _read_all(open_reader(tmp_path / "t.csv"))


def test_empty_csv(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="empty input"):
        _read_all(open_reader(tmp_path / "t.csv"))


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="unknown input format"):
        open_reader(tmp_path / "x.txt")
    with pytest.raises(InputError, match="no such file"):
        open_reader(tmp_path / "nope.npy")


@pytest.mark.parametrize("fmt", ["npy", "idx", "idx.gz", "parquet", "csv"])
@pytest.mark.parametrize("start_row", [0, 1, 7, 23, 49, 50])
def test_reading_from_a_start_row_gives_the_rest_of_the_rows(tmp_path, fmt, start_row):
    # What a resumed job relies on: same rows, same start indices, whatever the format.
    x = (np.arange(50 * 4).reshape(50, 4) % 97).astype(np.uint8)
    path = tmp_path / f"x.{fmt}"
    if fmt == "npy":
        np.save(path, x)
    elif fmt.startswith("idx"):
        write_idx(path, x, gz=fmt.endswith("gz"))
    elif fmt == "parquet":
        pq.write_table(pa.table({f"c{j}": x[:, j] for j in range(4)}), path, row_group_size=9)
    else:
        pa.csv.write_csv(pa.table({f"c{j}": x[:, j] for j in range(4)}), path)
    batches = list((b.start, b.values.copy()) for b in open_reader(path).batches(5, start_row=start_row))
    got = np.concatenate([v for _, v in batches]) if batches else np.empty((0, 4), np.float32)
    np.testing.assert_array_equal(got, x[start_row:].astype(np.float32))
    assert [s for s, _ in batches] == list(np.cumsum([start_row] + [len(v) for _, v in batches])[:-1])


def test_csv_without_a_header_reads_its_first_line_as_a_row(tmp_path):
    x = np.random.default_rng(0).integers(0, 17, (20, 4)).astype(np.float32)
    x[0] = 3  # a first line of repeated values: as names they would clash
    np.savetxt(tmp_path / "t.csv", x, delimiter=",", fmt="%g")
    r = open_reader(tmp_path / "t.csv")
    assert r.features == ["0", "1", "2", "3"]  # pandas' names for a frame's columns
    np.testing.assert_array_equal(_read_all(r), x)


def test_csv_header_of_pandas_default_names_is_a_header(tmp_path):
    (tmp_path / "t.csv").write_text("0,1,2\n5,6,7\n")  # DataFrame(x).to_csv(index=False)
    r = open_reader(tmp_path / "t.csv")
    assert r.features == ["0", "1", "2"]
    np.testing.assert_array_equal(_read_all(r), [[5, 6, 7]])


def test_csv_header_of_numbers_over_other_numbers_is_a_header(tmp_path, caplog):
    # Wavelengths as names over measurements: read as a row, training got one extreme extra row
    # (stds of ~30 for ~1) and scoring wrote n + 1 results.
    x = np.random.default_rng(0).normal(size=(6, 3)).round(4)
    (tmp_path / "t.csv").write_text("400,450,500\n" + "".join(",".join(map(str, row)) + "\n" for row in x))
    r = open_reader(tmp_path / "t.csv")
    assert r.features == ["400", "450", "500"]
    np.testing.assert_array_equal(_read_all(r), x.astype(np.float32))
    assert "its first line (400,450,500) is read as column names" in caplog.text  # a guess, said


def test_csv_first_line_of_whole_numbers_not_counting_up_stays_a_row(tmp_path):
    # np.savetxt(fmt="%g") writes 3.0 as "3": a row 3,1,2 over fractions is data, not names
    (tmp_path / "t.csv").write_text("3,1,2\n0.5,1.25,2.5\n")
    r = open_reader(tmp_path / "t.csv")
    assert r.features == ["0", "1", "2"] and len(_read_all(r)) == 2


def test_csv_without_a_header_scored_by_a_model_trained_without_one_keeps_every_row(tmp_path):
    # A row "1,0" holds the names "0" and "1": taken as a header, the row was lost and columns swapped
    (tmp_path / "t.csv").write_text("1,0\n0,1\n1,1\n")
    np.testing.assert_array_equal(_read_all(open_reader(tmp_path / "t.csv", feature_names=["0", "1"])),
                                  [[1, 0], [0, 1], [1, 1]])


def test_csv_first_line_of_integers_over_integers_stays_a_row_with_a_warning(tmp_path, caplog):
    (tmp_path / "t.csv").write_text("2019,2020\n5,6\n7,8\n")  # years over counts, or a row: either
    r = open_reader(tmp_path / "t.csv")
    assert r.features == ["0", "1"] and len(_read_all(r)) == 3
    assert "t.csv: its first line (2019,2020) is read as a row of data" in caplog.text


def test_csv_numeric_header_follows_the_models_feature_names(tmp_path):
    (tmp_path / "t.csv").write_text("2019,2020\n5,6\n")
    assert open_reader(tmp_path / "t.csv", feature_names=["2020"]).features == ["2020"]
    assert len(_read_all(open_reader(tmp_path / "t.csv", feature_names=["2020"]))) == 1
    assert len(_read_all(open_reader(tmp_path / "t.csv", feature_names=["0", "1"]))) == 2


@pytest.mark.parametrize("index_name", ["", "Unnamed: 0"])
def test_pandas_index_column_of_a_csv_is_no_feature(tmp_path, caplog, index_name):
    # DataFrame.to_csv writes the index first, unnamed: as a feature, rows clustered by position
    (tmp_path / "t.csv").write_text(f"{index_name},a,b\n0,1.5,2\n1,3,4\n")
    r = open_reader(tmp_path / "t.csv")
    assert r.features == ["a", "b"]
    assert f"its first column has no name ({index_name!r}): taken as the row index pandas writes" in caplog.text
    assert open_reader(tmp_path / "t.csv", ignore_columns=[index_name]).features == ["a", "b"]  # no clash


def test_pandas_unnamed_index_column_of_a_parquet_is_no_feature(tmp_path):
    pq.write_table(pa.table({"Unnamed: 0": [0, 1], "a": [1.5, 3.0]}), tmp_path / "t.parquet")
    assert open_reader(tmp_path / "t.parquet").features == ["a"]
    assert open_reader(tmp_path / "t.parquet", feature_names=["Unnamed: 0", "a"]).features == ["Unnamed: 0", "a"]


@pytest.mark.parametrize("marker", ["None", "?"])
def test_csv_missing_marker_in_numbers_is_named_with_its_row(tmp_path, marker):
    # was "column 'age' is string, not numeric (pass --ignore-column age to skip it)"
    rows = [str(20 + i) for i in range(10)]
    rows[7] = marker
    (tmp_path / "t.csv").write_text("age,b\n" + "".join(f"{v},1\n" for v in rows))
    with pytest.raises(InputError, match=rf"t.csv: column 'age', row 7: '{re.escape(marker)}' is not a number"):
        open_reader(tmp_path / "t.csv")


def test_csv_bad_value_past_the_first_block_names_its_column(tmp_path):
    rows = ["1234567,1\n"] * 450_000 + ["None,1\n"]  # 4.5 MB: past the 4 MiB block types are inferred from
    (tmp_path / "t.csv").write_text("id_like,flag\n" + "".join(rows))
    with pytest.raises(InputError, match=r"t.csv: column 'id_like': 'None' is not a number \(after row \d+\)"):
        _read_all(open_reader(tmp_path / "t.csv"), batch_rows=65536)


def test_csv_header_that_is_not_utf8_is_one_clear_error(tmp_path):
    (tmp_path / "t.csv").write_bytes("größe,b\n1,2\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"t.csv: its header is not UTF-8 text \(save the CSV as UTF-8\)"):
        open_reader(tmp_path / "t.csv")


@pytest.mark.parametrize("text", ["a;b;c\n1;2;3\n", "a;b;c\n0,5;1,25;2\n"])
def test_csv_separated_by_semicolons_gets_the_hint(tmp_path, text):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(InputError, match="separated by something other than commas"):
        open_reader(tmp_path / "t.csv")


def _vectors(x, fixed):
    return (pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]) if fixed
            else pa.array([list(r) for r in x], type=pa.list_(pa.float32())))


@pytest.mark.parametrize("fixed", [True, False])
def test_a_vector_column_is_read_as_one_feature_per_element(tmp_path, fixed):
    # Embeddings as Parquet stores them: was refused as "not numeric", with advice to drop the column
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(10)], "emb": _vectors(x, fixed), "age": np.arange(10.0)}),
                   tmp_path / "t.parquet", row_group_size=4)
    r = open_reader(tmp_path / "t.parquet", ignore_columns=["id"])
    assert r.features == ["emb[0]", "emb[1]", "emb[2]", "emb[3]", "age"] and r.sample_shape == (5,)
    np.testing.assert_array_equal(_read_all(r, 3), np.column_stack([x, np.arange(10.0)]))
    by_name = open_reader(tmp_path / "t.parquet", feature_names=["age", "emb[2]", "emb[0]", "emb[1]", "emb[3]"])
    np.testing.assert_array_equal(_read_all(by_name, 4), np.column_stack([np.arange(10.0), x[:, [2, 0, 1, 3]]]))


def test_a_vector_of_another_length_or_a_missing_one_is_named(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    rows = [list(r) for r in x]
    pq.write_table(pa.table({"emb": pa.array(rows[:5] + [[1.0, 2.0]], type=pa.list_(pa.float32()))}),
                   tmp_path / "short.parquet")
    with pytest.raises(InputError, match=r"short.parquet: row 5, column 'emb': a vector of 2 values, where the model "
                                         r"reads 4"):
        _read_all(open_reader(tmp_path / "short.parquet"))
    pq.write_table(pa.table({"emb": pa.array(rows[:3] + [None] + rows[4:], type=pa.list_(pa.float32()))}),
                   tmp_path / "gap.parquet")
    with pytest.raises(InputError, match=r"gap.parquet: row 3, column 'emb\[0\]', holds NaN, Inf or a missing value"):
        _read_all(open_reader(tmp_path / "gap.parquet"))
    pq.write_table(pa.table({"emb": x[:, 0]}), tmp_path / "scalar.parquet")
    with pytest.raises(InputError, match=r"column 'emb' is float, not a vector of numbers "
                                         r"\(the model reads 'emb\[0\]'"):
        open_reader(tmp_path / "scalar.parquet", feature_names=["emb[0]"])
    pq.write_table(pa.table({"emb": _vectors(x, True)}), tmp_path / "wide.parquet")  # 4 values, the model reads 3
    with pytest.raises(InputError, match=r"row 0, column 'emb': a vector of 4 values, where the model reads 3"):
        _read_all(open_reader(tmp_path / "wide.parquet", feature_names=["emb[0]", "emb[1]", "emb[2]"]))


def test_a_vector_column_beside_a_column_named_like_its_element_is_refused(tmp_path):
    x = np.zeros((3, 2), np.float32)
    pq.write_table(pa.table({"emb": _vectors(x, True), "emb[0]": [1.0, 2.0, 3.0]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"feature names repeat \('emb\[0\]'\)"):
        open_reader(tmp_path / "t.parquet")


def test_missing_column_error_quotes_the_names_there_are(tmp_path):
    (tmp_path / "t.csv").write_text("a, b ,segment \n1,2,3\n")
    with pytest.raises(InputError, match=r"no column named 'segment' \(columns: 'a', ' b ', 'segment '\)"):
        open_reader(tmp_path / "t.csv", label_column="segment")


def test_repeated_column_names_are_refused(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,a\n1,2,3\n")
    with pytest.raises(InputError, match=r"t.csv: column names repeat \('a'\)"):
        open_reader(tmp_path / "t.csv")


def test_csv_booleans_read_as_zero_and_one(tmp_path):
    (tmp_path / "t.csv").write_text("a,flag\n1.5,true\n2,false\n")
    np.testing.assert_array_equal(_read_all(open_reader(tmp_path / "t.csv")), [[1.5, 1], [2, 0]])


def test_pandas_index_column_in_parquet_is_not_a_feature(tmp_path):
    # what DataFrame.to_parquet writes for a filtered frame: its index as a column, named in metadata
    meta = {b"pandas": json.dumps({"index_columns": ["__index_level_0__"], "columns": []}).encode()}
    t = pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0], "__index_level_0__": [7, 9]}).replace_schema_metadata(meta)
    pq.write_table(t, tmp_path / "t.parquet")
    r = open_reader(tmp_path / "t.parquet")
    assert r.features == ["a", "b"]
    np.testing.assert_array_equal(_read_all(r), [[1, 3], [2, 4]])


def test_non_numeric_column_hint_fits_the_caller(tmp_path):
    (tmp_path / "t.csv").write_text("a,name\n1,foo\n")
    with pytest.raises(InputError, match="pass --ignore-column name"):
        open_reader(tmp_path / "t.csv")
    with pytest.raises(InputError, match="remove it from the input") as e:  # assign has no --ignore-column
        open_inputs(tmp_path / "t.csv")
    assert "--ignore-column" not in str(e.value)
    (tmp_path / "s.csv").write_text("a;b\n1;2\n")
    with pytest.raises(InputError, match="separated by something other than commas"):
        open_inputs(tmp_path / "s.csv")


def test_16_bit_grey_png_is_scaled_to_8_bits(tmp_path):
    from PIL import Image

    v = np.arange(64, dtype=np.uint16).reshape(8, 8) * 4
    Image.fromarray(v * 257).save(tmp_path / "i16.png")  # the same picture at 16 bits
    assert Image.open(tmp_path / "i16.png").mode.startswith("I;16")
    np.testing.assert_array_equal(read_image(tmp_path / "i16.png"), v)


def test_a_label_column_with_a_null_shows_the_null_whatever_its_type(tmp_path):
    # pyarrow's to_numpy hides these: an int column becomes float64, a dictionary (pandas
    # categorical) column shows another row's value where the null is
    for i, expected in enumerate([[3, 1, None, 2], ["b", "a", None, "b"]]):
        labels = pa.array(expected, pa.int64()) if i == 0 else pa.array(expected).dictionary_encode()
        pq.write_table(pa.table({"f": [0.0, 1.0, 2.0, 3.0], "label": labels}), tmp_path / f"t{i}.parquet")
        got = next(open_reader(tmp_path / f"t{i}.parquet", label_column="label").batches()).labels
        assert got.tolist() == expected


@pytest.mark.parametrize("shape", [(70, 64), (70, 8, 8)])
def test_a_fortran_ordered_npy_reads_the_rows_a_c_ordered_one_does(tmp_path, shape):
    # np.save(path, frame.to_numpy()) writes pandas' column-major array as it is
    x = np.random.default_rng(0).integers(0, 17, size=shape).astype(np.uint8)
    np.save(tmp_path / "c.npy", x)
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    assert b"'fortran_order': True" in (tmp_path / "f.npy").read_bytes()[:128]
    for start in (0, 33):
        # batches reuse one buffer: copy each
        c = np.concatenate([b.values.copy() for b in open_reader(tmp_path / "c.npy").batches(16, start_row=start)])
        f = np.concatenate([b.values.copy() for b in open_reader(tmp_path / "f.npy").batches(16, start_row=start)])
        np.testing.assert_array_equal(f, c)
        np.testing.assert_array_equal(f, x[start:].reshape(len(x) - start, -1))


def test_ignoring_a_column_the_model_reads_is_refused_not_silently_dropped(tmp_path):
    pq.write_table(pa.table({"a": [1.0], "b": [2.0], "note": ["x"]}), tmp_path / "t.parquet")
    assert open_reader(tmp_path / "t.parquet", feature_names=["a", "b"], ignore_columns=["note"]).features == ["a", "b"]
    with pytest.raises(InputError, match="t.parquet: column 'b' is a feature the model reads; it cannot be ignored"):
        open_reader(tmp_path / "t.parquet", feature_names=["a", "b"], ignore_columns=["b"])


def test_a_column_float32_cannot_resolve_is_named_once(tmp_path, caplog):
    rng = np.random.default_rng(0)
    n = 400
    ms = 1_700_000_000_000 + np.repeat([0, 60_000], n // 2) + rng.integers(-5_000, 5_000, n)  # int64 epoch ms
    pq.write_table(pa.table({"reading": rng.normal(size=n), "epoch_ms_resolution_test": ms}), tmp_path / "t.parquet",
                   row_group_size=100)
    with caplog.at_level("WARNING", logger="deepclust"):
        x = np.concatenate([b.values for b in open_reader(tmp_path / "t.parquet").batches(100)])
    assert len(np.unique(x[:, 1])) <= 2  # what float32 leaves of 400 distinct times: why the warning
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith("column 'epoch_ms_resolution_test': its values")
