"""Resumable scoring jobs, multi-file and image inputs, and errors in the middle of a file."""

import fcntl
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from deepclust.runtime import Assigner, InputError, Interrupted, open_inputs, score_file
from deepclust.runtime.scoring import work_dir_for

from ..conftest import write_idx

CHUNK = 128  # small chunks so a few hundred rows make several


@pytest.fixture(scope="module")
def assigner(reference_bundle):
    # encoder calls of 64 rows: chunks are whole calls, so CHUNK stays 128
    return Assigner.load(reference_bundle, device="cpu", precision="fp32", batch_size=64)


@pytest.fixture
def rows(tmp_path, digits_rows):
    x = np.concatenate([digits_rows] * 3)  # 900 rows: 7 full chunks and a partial one
    np.save(tmp_path / "in.npy", x)
    return tmp_path / "in.npy", x


def _interrupt_after(rows_wanted):
    def hook(done, total):
        if done >= rows_wanted:
            raise KeyboardInterrupt
    return hook


@pytest.mark.parametrize("fmt", [".parquet", ".npy", ".csv"])
def test_interrupted_job_resumes_to_a_byte_identical_output(tmp_path, assigner, rows, fmt):
    src, x = rows
    whole, resumed = tmp_path / f"whole{fmt}", tmp_path / f"resumed{fmt}"
    score_file(assigner, src, whole, soft=True, chunk_rows=CHUNK, batch_rows=100)
    with pytest.raises(Interrupted, match="run the same command again to resume") as e:
        score_file(assigner, src, resumed, soft=True, chunk_rows=CHUNK, batch_rows=100,
                   on_progress=_interrupt_after(450))
    assert not resumed.exists()
    # progress comes per encoder call (one chunk here): Ctrl-C at the report of row 512 keeps 4 chunks
    assert e.value.rows_done == 4 * CHUNK
    report = score_file(assigner, src, resumed, soft=True, chunk_rows=CHUNK, batch_rows=100)
    assert report.resumed_rows == 4 * CHUNK and report.rows == len(x)
    assert resumed.read_bytes() == whole.read_bytes()
    assert not work_dir_for(resumed).exists()


def test_a_killed_process_resumes_to_a_byte_identical_output(tmp_path, assigner, rows, reference_bundle):
    src, x = rows
    whole, killed = tmp_path / "whole.parquet", tmp_path / "killed.parquet"
    score_file(assigner, src, whole, chunk_rows=CHUNK, batch_rows=100)
    # SIGKILL itself after 5 chunks: no handler, no cleanup, like `kill -9` or an OOM kill.
    script = textwrap.dedent(f"""
        import os, signal
        from deepclust.runtime import Assigner, score_file
        a = Assigner.load({str(reference_bundle)!r}, device="cpu", precision="fp32", batch_size=64)
        def hook(done, total):
            if done >= 5 * {CHUNK}:
                os.kill(os.getpid(), signal.SIGKILL)
        score_file(a, {str(src)!r}, {str(killed)!r}, chunk_rows={CHUNK}, batch_rows=100, on_progress=hook)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert not killed.exists() and len(list(work_dir_for(killed).glob("chunk-*.npz"))) == 5
    report = score_file(assigner, src, killed, chunk_rows=CHUNK, batch_rows=100)
    assert report.resumed_rows == 5 * CHUNK
    assert killed.read_bytes() == whole.read_bytes()


def test_output_bytes_do_not_depend_on_the_read_batch_size_or_the_chunk_size(tmp_path, reference_bundle, rows):
    src, x = rows
    # small encoder calls and chunks that do not divide the input, so every cut lands somewhere new
    a = Assigner.load(reference_bundle, device="cpu", precision="fp32", batch_size=100)
    outputs = []
    for batch_rows, chunk_rows in ((1, 250), (7, 250), (64, 250), (333, 250), (4096, 250), (64, 1), (64, 777),
                                   (333, 100_000)):
        out = tmp_path / f"out{batch_rows}-{chunk_rows}.npy"
        score_file(a, src, out, soft=True, embeddings=True, chunk_rows=chunk_rows, batch_rows=batch_rows)
        outputs.append(out.read_bytes())
    assert all(o == outputs[0] for o in outputs[1:])


def test_a_rerun_with_other_arguments_starts_afresh(tmp_path, assigner, rows):
    src, x = rows
    out = tmp_path / "out.parquet"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    report = score_file(assigner, src, out, chunk_rows=CHUNK, embeddings=True)  # other arguments
    assert report.resumed_rows == 0
    table = pq.read_table(out)
    np.testing.assert_array_equal(table["label"].to_numpy(), assigner.assign(x).labels)
    assert "embedding" in table.column_names


def test_a_changed_input_is_not_resumed(tmp_path, assigner, rows):
    src, x = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, batch_rows=100, on_progress=_interrupt_after(300))
    np.save(src, x[::-1].copy())  # same size, new contents and mtime
    os.utime(src, ns=(1, 1))
    report = score_file(assigner, src, out, chunk_rows=CHUNK, batch_rows=100)
    assert report.resumed_rows == 0
    np.testing.assert_array_equal(np.load(out)["label"], assigner.assign(x[::-1]).labels)


@pytest.mark.parametrize("copies", [1, 10])  # under and over the bytes the fingerprint samples
def test_an_input_rewritten_with_its_old_size_and_mtime_is_not_resumed(tmp_path, assigner, rows, copies):
    src, x = rows
    x = np.concatenate([x] * copies)
    np.save(src, x)
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    st = os.stat(src)
    y = np.concatenate([x[:len(x) // 2], x[len(x) // 2:][::-1]])  # other rows after the ones scored
    np.save(src, y)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # as rsync -a, tar or touch -r leave it
    assert os.stat(src).st_size == st.st_size
    report = score_file(assigner, src, out, chunk_rows=CHUNK)
    assert report.resumed_rows == 0
    np.testing.assert_array_equal(np.load(out)["label"], assigner.assign(y).labels)


def test_no_resume_starts_afresh(tmp_path, assigner, rows):
    src, _ = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    assert score_file(assigner, src, out, chunk_rows=CHUNK, resume=False).resumed_rows == 0


def test_a_second_process_on_the_same_job_is_refused(tmp_path, assigner, rows):
    src, _ = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    with open(work_dir_for(out) / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another deepclust assign is writing this output"):
            score_file(assigner, src, out, chunk_rows=CHUNK)
    assert not out.exists()


def test_corrupt_parquet_row_group_mid_file_names_the_file_and_row_group(tmp_path, assigner, digits_rows):
    src = tmp_path / "in.parquet"
    table = pa.table({f"f{j}": digits_rows[:, j] for j in range(64)})
    pq.write_table(table, src, row_group_size=50, compression="NONE")
    meta = pq.ParquetFile(src).metadata
    rg = meta.row_group(4)  # rows 200-249: chunk 1 with CHUNK = 128
    cols = [rg.column(j) for j in range(rg.num_columns)]
    start = min(c.data_page_offset for c in cols)
    end = max(c.data_page_offset + c.total_compressed_size for c in cols)
    data = bytearray(src.read_bytes())
    data[start:end] = b"\xff" * (end - start)
    src.write_bytes(bytes(data))
    out = tmp_path / "out.parquet"
    with pytest.raises(InputError) as e:
        score_file(assigner, src, out, chunk_rows=CHUNK, batch_rows=50)
    assert str(e.value).startswith(f"{src}: row group 4 (from row 200) is corrupt")
    assert not out.exists() and not work_dir_for(out).exists()


def test_npy_truncated_while_the_job_runs_names_the_file_and_rows(tmp_path, assigner, rows):
    src, x = rows
    out = tmp_path / "out.npy"

    def truncate_after_first_chunk(done, total):
        if done == CHUNK:
            with open(src, "r+b") as f:
                f.truncate(os.path.getsize(src) - 64 * 4 * 500)

    with pytest.raises(InputError) as e:
        score_file(assigner, src, out, chunk_rows=CHUNK, batch_rows=CHUNK, on_progress=truncate_after_first_chunk)
    assert str(e.value) == f"{src}: truncated in rows 384-511"
    assert not out.exists() and not work_dir_for(out).exists()


def test_a_truncated_npy_is_refused_before_any_work(tmp_path, assigner, rows):
    src, x = rows
    with open(src, "r+b") as f:
        f.truncate(os.path.getsize(src) - 10)
    with pytest.raises(InputError, match="truncated: the header says 900 rows"):
        score_file(assigner, src, tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists() and not work_dir_for(tmp_path / "out.npy").exists()


def test_a_folder_of_parquet_files_is_one_input_in_name_order(tmp_path, assigner, digits_rows):
    folder = tmp_path / "parts"
    folder.mkdir()
    cols = [f"f{j}" for j in range(64)]
    for i, part in enumerate(np.array_split(digits_rows, 3)):
        pq.write_table(pa.table({c: part[:, j] for j, c in enumerate(cols)}), folder / f"part-{i}.parquet",
                       row_group_size=40)
    (folder / "_SUCCESS").write_text("")  # ignored, as Spark and Ray write them
    out = tmp_path / "out.npy"
    # interrupt and resume across a file boundary too
    with pytest.raises(Interrupted):
        score_file(assigner, folder, out, chunk_rows=64, batch_rows=30, on_progress=_interrupt_after(130))
    report = score_file(assigner, folder, out, chunk_rows=64, batch_rows=30)
    assert report.resumed_rows == 192  # Ctrl-C at the report of row 192, the first past 130
    np.testing.assert_array_equal(np.load(out)["label"], assigner.assign(digits_rows).labels)


def test_several_input_files_must_agree_on_the_row_size(tmp_path, assigner, digits_rows):
    np.save(tmp_path / "a.npy", digits_rows)
    np.save(tmp_path / "b.npy", digits_rows[:, :32])
    with pytest.raises(InputError, match="b.npy: rows have 32 values"):
        score_file(assigner, [tmp_path / "a.npy", tmp_path / "b.npy"], tmp_path / "out.npy")


def test_an_image_folder_scores_like_its_pixels(tmp_path, assigner, digits_rows):
    from PIL import Image

    images = digits_rows[:20].reshape(20, 8, 8).astype(np.uint8)
    for i, img in enumerate(images):
        (tmp_path / "img" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(tmp_path / "img" / f"c{i % 2}" / f"{i:03d}.png")
    out = tmp_path / "out.npy"
    score_file(assigner, tmp_path / "img", out)
    order = sorted(range(20), key=lambda i: (f"c{i % 2}", i))  # sorted paths: c0/..., then c1/...
    np.testing.assert_array_equal(np.load(out)["label"], assigner.assign(images[order]).labels)


def test_job_fingerprint_is_plain_json(tmp_path, assigner, rows):
    src, _ = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    job = json.loads((work_dir_for(out) / "job.json").read_text())
    assert job["chunk_rows"] == CHUNK and job["precision"] == "fp32" and job["inputs"]["files"] == 1


def test_a_run_with_other_arguments_leaves_a_running_job_alone(tmp_path, assigner, rows):
    src, _ = rows
    out = tmp_path / "out.npy"
    with pytest.raises(Interrupted):
        score_file(assigner, src, out, chunk_rows=CHUNK, on_progress=_interrupt_after(300))
    chunks = sorted(p.name for p in work_dir_for(out).glob("chunk-*.npz"))
    with open(work_dir_for(out) / "lock", "w") as held:  # the first run, still writing
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another deepclust assign is writing this output"):
            score_file(assigner, src, out, chunk_rows=CHUNK, embeddings=True)
    assert sorted(p.name for p in work_dir_for(out).glob("chunk-*.npz")) == chunks and chunks


def test_empty_parts_of_a_data_set_folder_are_skipped(tmp_path, assigner, digits_rows):
    folder = tmp_path / "parts"
    folder.mkdir()
    cols = [f"f{j}" for j in range(64)]
    for i, part in enumerate([digits_rows[:100], digits_rows[:0], digits_rows[100:]]):  # Spark writes empty parts
        pq.write_table(pa.table({c: part[:, j] for j, c in enumerate(cols)}), folder / f"part-{i}.parquet")
    score_file(assigner, folder, tmp_path / "out.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy")["label"], assigner.assign(digits_rows).labels)
    for f in folder.iterdir():
        pq.write_table(pq.read_table(f).slice(0, 0), f)
    with pytest.raises(InputError, match="empty input"):
        score_file(assigner, folder, tmp_path / "out2.npy")


def test_a_data_set_folder_is_read_without_holding_its_files_open(tmp_path, assigner, digits_rows):
    folder = tmp_path / "parts"
    folder.mkdir()
    cols = [f"f{j}" for j in range(64)]
    for i in range(60):
        part = digits_rows[i * 5:(i + 1) * 5]
        pq.write_table(pa.table({c: part[:, j] for j, c in enumerate(cols)}), folder / f"part-{i:03d}.parquet")
    before = len(os.listdir("/proc/self/fd"))
    reader = open_inputs(folder)
    assert len(os.listdir("/proc/self/fd")) - before < 5  # not one per part: ulimit -n is often 1,024
    assert reader.n_rows == 300
    score_file(assigner, folder, tmp_path / "out.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy")["label"], assigner.assign(digits_rows).labels)


def test_an_mnist_style_folder_scores_its_images_not_its_label_files(tmp_path, assigner, digits_rows):
    folder = tmp_path / "idx"
    folder.mkdir()
    images = digits_rows.reshape(-1, 8, 8).astype(np.uint8)
    write_idx(folder / "t10k-images-idx3-ubyte", images[:100])
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(100) % 10)
    write_idx(folder / "train-images-idx3-ubyte", images[100:])
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(200) % 10)
    score_file(assigner, folder, tmp_path / "out.npy")  # name order: t10k, then train
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy")["label"], assigner.assign(images).labels)


def test_hidden_files_in_an_image_folder_are_not_images(tmp_path, assigner, digits_rows):
    from PIL import Image

    images = digits_rows[:6].reshape(6, 8, 8).astype(np.uint8)
    folder = tmp_path / "img"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img, mode="L").save(folder / f"{i}.png")
    Image.fromarray(images[0], mode="L").save(folder / ".ipynb_checkpoints" / "0-checkpoint.png")
    (folder / "._0.png").write_bytes(b"\0\5\26\7 macOS resource fork")
    score_file(assigner, folder, tmp_path / "out.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy")["label"], assigner.assign(images).labels)


def test_a_folder_as_output_is_refused_before_scoring(tmp_path, assigner, rows):
    src, _ = rows
    (tmp_path / "out.parquet").mkdir()
    with pytest.raises(InputError, match="out.parquet: is a folder"):
        score_file(assigner, src, tmp_path / "out.parquet", overwrite=True)
    assert not work_dir_for(tmp_path / "out.parquet").exists()


def test_a_read_batch_larger_than_the_input_needs_no_more_memory_than_the_input(tmp_path, assigner, rows):
    src, x = rows
    score_file(assigner, src, tmp_path / "out.npy", batch_rows=1 << 40)  # a 2^40-row buffer would not fit
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy")["label"], assigner.assign(x).labels)


def test_zero_byte_parts_of_a_data_set_folder_are_skipped_and_an_input_is_never_the_output(
        tmp_path, assigner, digits_rows):
    folder = tmp_path / "parts"
    folder.mkdir()
    np.save(folder / "part-0.npy", digits_rows)
    (folder / "part-1.npy").write_bytes(b"")  # Hadoop and Hive write zero-byte parts
    score_file(assigner, folder, tmp_path / "out.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy")["label"], assigner.assign(digits_rows).labels)
    with pytest.raises(InputError, match="part-0.npy: is also an input"):
        score_file(assigner, folder / "part-0.npy", folder / "part-0.npy", overwrite=True)
    np.testing.assert_array_equal(np.load(folder / "part-0.npy"), digits_rows)


def _parts_with_ids(folder, x, ids):
    folder.mkdir()
    cols = [f"f{j}" for j in range(x.shape[1])]
    for i, part in enumerate(np.array_split(np.arange(len(x)), 3)):
        pq.write_table(pa.table({"id": [ids[r] for r in part], **{c: x[part, j] for j, c in enumerate(cols)}}),
                       folder / f"part-{i}.parquet", row_group_size=70)
    return folder


def test_a_kept_column_is_carried_to_the_output_and_survives_a_resume(tmp_path, assigner, digits_rows):
    x = np.concatenate([digits_rows] * 3)
    ids = [f"order-{i:05d}" for i in range(len(x))]
    src = _parts_with_ids(tmp_path / "parts", x, ids)
    whole, resumed = tmp_path / "whole.parquet", tmp_path / "resumed.parquet"
    score_file(assigner, src, whole, chunk_rows=CHUNK, batch_rows=100, keep_columns=["id"])
    with pytest.raises(Interrupted):
        score_file(assigner, src, resumed, chunk_rows=CHUNK, batch_rows=30, keep_columns=["id"],
                   on_progress=_interrupt_after(300))
    score_file(assigner, src, resumed, chunk_rows=CHUNK, batch_rows=30, keep_columns=["id"])
    assert resumed.read_bytes() == whole.read_bytes()
    table = pq.read_table(whole)
    assert table.column_names == ["id", "label", "distance"] and table["id"].to_pylist() == ids
    np.testing.assert_array_equal(table["label"].to_numpy(), assigner.assign(x).labels)
    score_file(assigner, src, tmp_path / "out.csv", keep_columns=["id"])
    assert pa.csv.read_csv(tmp_path / "out.csv")["id"].to_pylist() == ids


def test_a_kept_column_needs_table_inputs_and_outputs(tmp_path, assigner, rows, digits_rows):
    src, _ = rows
    with pytest.raises(InputError, match="in.npy: has no columns to keep"):
        score_file(assigner, src, tmp_path / "out.parquet", keep_columns=["id"])
    parts = _parts_with_ids(tmp_path / "parts", digits_rows, list(range(len(digits_rows))))
    with pytest.raises(InputError, match="a kept column needs a .parquet or .csv output"):
        score_file(assigner, parts, tmp_path / "out.npy", keep_columns=["id"])
    with pytest.raises(InputError, match="kept column 'label': the output has a column of that name"):
        score_file(assigner, parts, tmp_path / "out.parquet", keep_columns=["label"])
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


def test_kept_ids_are_copied_exactly_and_a_missing_one_is_refused(tmp_path, assigner, digits_rows):
    x = digits_rows[:200]
    cols = {f"f{j}": x[:, j] for j in range(x.shape[1])}
    big = [1234567890123456789 + i for i in range(len(x))]  # not exact as float64: neighbours collide
    pq.write_table(pa.table({"id": pa.array(big, pa.int64()), **cols}), tmp_path / "big.parquet")
    score_file(assigner, tmp_path / "big.parquet", tmp_path / "big-out.parquet", keep_columns=["id"])
    got = pq.read_table(tmp_path / "big-out.parquet")["id"]
    assert got.type == pa.int64() and got.to_pylist() == big
    # a pandas categorical column is dictionary-encoded: its values, not its codes, are kept
    names = pa.array([f"user{i % 7}" for i in range(len(x))]).dictionary_encode()
    pq.write_table(pa.table({"id": names, **cols}), tmp_path / "cat.parquet")
    score_file(assigner, tmp_path / "cat.parquet", tmp_path / "cat-out.parquet", keep_columns=["id"])
    assert pq.read_table(tmp_path / "cat-out.parquet")["id"].to_pylist() == [f"user{i % 7}" for i in range(len(x))]
    holes = [pa.array([*big[:4], None, *big[5:]], pa.int64()),  # to_numpy would make it float64, the null NaN
             pa.array([*[f"user{i}" for i in range(4)], None, *[f"user{i}" for i in range(5, len(x))]])
             .dictionary_encode()]  # to_numpy would show another row's value through the null
    for i, ids in enumerate(holes):
        pq.write_table(pa.table({"id": ids, **cols}), tmp_path / f"holes{i}.parquet")
        with pytest.raises(InputError, match="kept column 'id': row 4 has no value"):
            score_file(assigner, tmp_path / f"holes{i}.parquet", tmp_path / "out.parquet", keep_columns=["id"])
    assert not (tmp_path / "out.parquet").exists()


def test_kept_ids_keep_their_type_and_bytes_through_a_resume(tmp_path, assigner, digits_rows):
    import datetime
    import decimal
    import uuid

    x = np.concatenate([digits_rows[:200]] * 2)
    n = len(x)
    rng = np.random.default_rng(0)
    ids = {  # what a trip through numpy changed: NUL bytes cut, bytes decoded, zones and scales dropped
        "key": pa.array([b"x" + b"\0" * (i % 3) if i % 2 else b"\0" + str(i).encode() for i in range(n)], pa.binary()),
        "uuid": pa.array([uuid.UUID(bytes=rng.bytes(16)).bytes for _ in range(n)], pa.binary(16)),
        "price": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
        "at": pa.array([datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=i)
                        for i in range(n)], pa.timestamp("ms", tz="Europe/Paris")),
    }
    table = pa.table({**ids, **{f"f{j}": x[:, j] for j in range(x.shape[1])}})
    src = tmp_path / "parts"
    src.mkdir()
    for i, part in enumerate(np.array_split(np.arange(n), 3)):
        pq.write_table(table.take(part), src / f"part-{i}.parquet", row_group_size=70)
    whole, resumed = tmp_path / "whole.parquet", tmp_path / "resumed.parquet"
    score_file(assigner, src, whole, chunk_rows=CHUNK, keep_columns=list(ids))
    with pytest.raises(Interrupted):
        score_file(assigner, src, resumed, chunk_rows=CHUNK, batch_rows=30, keep_columns=list(ids),
                   on_progress=_interrupt_after(300))
    score_file(assigner, src, resumed, chunk_rows=CHUNK, batch_rows=30, keep_columns=list(ids))
    assert resumed.read_bytes() == whole.read_bytes()
    got = pq.read_table(whole)
    for name, values in ids.items():
        assert got[name].combine_chunks().equals(values), name  # type and every byte
    src = tmp_path / "ids.parquet"  # the same rows, every id kept: a CSV holds text
    pq.write_table(table, src)
    with pytest.raises(InputError, match="kept column 'uuid' holds bytes that are not text"):
        score_file(assigner, src, tmp_path / "out.csv", keep_columns=list(ids))
    pq.write_table(table.drop_columns(["uuid"]), src)
    score_file(assigner, src, tmp_path / "out.csv", keep_columns=["price", "key", "at"])
    assert pa.csv.read_csv(tmp_path / "out.csv", convert_options=pa.csv.ConvertOptions(
        column_types={"price": pa.string()}))["price"].to_pylist()[:3] == ["0.00", "0.01", "0.02"]


def test_parts_storing_an_id_at_other_widths_give_one_type_and_other_kinds_are_refused(tmp_path, assigner,
                                                                                       digits_rows):
    x = digits_rows[:300]
    cols = {f"f{j}": x[:, j] for j in range(x.shape[1])}
    src = tmp_path / "parts"
    src.mkdir()
    big = 1 << 40  # beyond int32: the wider part decides the column's type
    for i, (t, first) in enumerate([(pa.int32(), 0), (pa.int64(), big)]):
        rows = slice(150 * i, 150 * (i + 1))
        ids = pa.array(range(first, first + 150), t)
        pq.write_table(pa.table({"id": ids, **{c: v[rows] for c, v in cols.items()}}), src / f"part-{i}.parquet")
    outs = []
    for chunk_rows in (64, 1024):  # one chunk inside the first part, or one across both
        out = tmp_path / f"out-{chunk_rows}.parquet"
        score_file(assigner, src, out, chunk_rows=chunk_rows, keep_columns=["id"])
        outs.append(pq.read_table(out))
    assert outs[0].equals(outs[1]) and outs[0].schema.field("id").type == pa.int64()
    assert outs[0]["id"].to_pylist() == [*range(150), *range(big, big + 150)]
    pq.write_table(pa.table({"id": pa.array(np.arange(150.0)), **{c: v[:150] for c, v in cols.items()}}),
                   src / "part-2.parquet")  # float64 ids beside int64 ones: no exact common type
    with pytest.raises(InputError, match=r"kept column 'id' is int32 in .*part-0.parquet, int64 in .*part-1.parquet, "
                                         r"double in "):
        score_file(assigner, src, tmp_path / "mixed.parquet", keep_columns=["id"])


def test_a_csv_kept_column_is_copied_as_its_text(tmp_path, assigner, digits_rows):
    x = digits_rows[:50]
    ids = [f"{i:05d}" for i in range(len(x))]  # as numbers, "00007" would become 7
    header = "id," + ",".join(f"f{j}" for j in range(x.shape[1]))
    lines = [f"{i}," + ",".join(str(int(v)) for v in row) for i, row in zip(ids, x)]
    (tmp_path / "in.csv").write_text("\n".join([header, *lines]) + "\n")
    score_file(assigner, tmp_path / "in.csv", tmp_path / "out.parquet", keep_columns=["id"])
    assert pq.read_table(tmp_path / "out.parquet")["id"].to_pylist() == ids


def test_several_kept_columns_come_first_in_their_order_and_survive_a_resume(tmp_path, assigner, digits_rows):
    x = np.concatenate([digits_rows] * 3)
    src = tmp_path / "parts"
    src.mkdir()
    cols = {f"f{j}": x[:, j] for j in range(x.shape[1])}
    day = [f"2026-11-{1 + i % 28:02d}" for i in range(len(x))]
    shop = np.arange(len(x)) % 13
    table = pa.table({"shop": shop, **cols, "day": day})
    for i, part in enumerate(np.array_split(np.arange(len(x)), 3)):
        pq.write_table(table.take(part), src / f"part-{i}.parquet", row_group_size=70)
    whole, resumed = tmp_path / "whole.parquet", tmp_path / "resumed.parquet"
    score_file(assigner, src, whole, chunk_rows=CHUNK, keep_columns=["day", "shop"])
    with pytest.raises(Interrupted):
        score_file(assigner, src, resumed, chunk_rows=CHUNK, batch_rows=30, keep_columns=["day", "shop"],
                   on_progress=_interrupt_after(300))
    score_file(assigner, src, resumed, chunk_rows=CHUNK, batch_rows=30, keep_columns=["day", "shop"])
    assert resumed.read_bytes() == whole.read_bytes()
    got = pq.read_table(whole)
    assert got.column_names == ["day", "shop", "label", "distance"] and got["day"].to_pylist() == day
    assert got.schema.field("shop").type == pa.int64() and got["shop"].to_pylist() == shop.tolist()
    np.testing.assert_array_equal(got["label"].to_numpy(), assigner.assign(x).labels)
    score_file(assigner, src, tmp_path / "out.csv", keep_columns=["shop", "day"])
    assert pa.csv.read_csv(tmp_path / "out.csv").column_names[:3] == ["shop", "day", "label"]
    with pytest.raises(InputError, match="kept column 'day' given more than once"):
        score_file(assigner, src, tmp_path / "twice.parquet", keep_columns=["day", "day"])
    with pytest.raises(InputError, match="kept column 'soft_0': the output has a column of that name"):
        score_file(assigner, src, tmp_path / "flat.csv", keep_columns=["soft_0"])


def test_a_file_where_the_work_folder_goes_is_named(tmp_path, assigner, rows):
    src, _ = rows
    out = tmp_path / "out.npy"
    work_dir_for(out).write_text("not ours")
    with pytest.raises(InputError, match=r"\.out\.npy\.deepclust-job: a file is where this output's work folder goes"):
        score_file(assigner, src, out)
    assert work_dir_for(out).read_text() == "not ours" and not out.exists()
