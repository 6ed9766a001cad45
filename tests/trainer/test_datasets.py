"""Data set loading from local files, name resolution, and the download path (file:// URLs)."""

import gzip
import hashlib
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepclust.runtime.errors import InputError
from deepclust.trainer import datasets
from deepclust.trainer.datasets import IDX_PARTS, IdxSource, load_dataset

from ..conftest import write_idx


def _mnist_folder(folder, n_train=30, n_test=10, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in parts.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr, gz=gz)
    return parts


def test_named_data_set_resolves_in_data_dir(tmp_path):
    parts = _mnist_folder(tmp_path / "mnist")
    ds = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert ds.x.shape == (40, 28, 28) and ds.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.x[:30], parts["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y[30:], parts["t10k-labels-idx1-ubyte"])
    assert ds.preprocessing.scale == pytest.approx(1 / 255)
    assert ds.features().max() <= 1.0


def test_idx_folder_given_as_a_path_uncompressed(tmp_path):
    _mnist_folder(tmp_path / "fm", gz=False)
    assert load_dataset(str(tmp_path / "fm")).x.shape == (40, 28, 28)


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(InputError, match="nosuchset: unknown data set"):
        load_dataset("nosuchset")
    with pytest.raises(InputError, match="no such file or folder"):
        load_dataset(str(tmp_path / "x.npy"))


def test_download_checks_md5_and_uses_the_next_mirror(tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    _mnist_folder(src)
    md5 = {p: hashlib.md5((src / f"{p}.gz").read_bytes()).hexdigest() for p in IDX_PARTS}
    dead = (tmp_path / "dead").as_uri() + "/"
    monkeypatch.setitem(datasets.NAMED, "mnist", IdxSource(mirrors=(dead, src.as_uri() + "/"), md5=md5))
    ds = load_dataset("mnist", data_dir=tmp_path / "data")
    assert ds.x.shape == (40, 28, 28)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(f"{p}.gz" for p in IDX_PARTS)


def test_download_with_bad_checksum_keeps_nothing(tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    _mnist_folder(src)
    md5 = dict.fromkeys(IDX_PARTS, "0" * 32)
    monkeypatch.setitem(datasets.NAMED, "mnist", IdxSource(mirrors=(src.as_uri() + "/",), md5=md5))
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    (tmp_path / "data" / "mnist" / ".train-images-idx3-ubyte.gz.k1ll3d").write_bytes(b"half")  # a killed download's
    with pytest.raises(InputError, match="mnist: download failed.*checksum mismatch"):
        load_dataset("mnist", data_dir=tmp_path / "data")
    assert list((tmp_path / "data" / "mnist").iterdir()) == []
    (tmp_path / "data" / "mnist").rmdir()
    with pytest.raises(InputError, match=r"names a folder holding mnist/"):
        load_dataset("mnist", data_dir=tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # not even the folder it made
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="file: is a file; --data-dir"):
        load_dataset("mnist", data_dir=tmp_path / "file")


def test_tabular_parquet_standardises_and_keeps_names(tmp_path):
    t = pa.table({"a": [1.0, 2.0, 3.0, 4.0], "b": [10, 10, 10, 10], "label": ["x", "y", "x", "y"],
                  "id": ["1", "2", "3", "4"]})
    pq.write_table(t, tmp_path / "t.parquet")
    ds = load_dataset(str(tmp_path / "t.parquet"), label_column="label", ignore_columns=["id"])
    assert ds.feature_names == ("a", "b")
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 1])
    f = ds.features()
    np.testing.assert_allclose(f[:, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(f[:, 0].std(), 1, atol=1e-5)
    np.testing.assert_array_equal(f[:, 1], 0)  # constant column: centred, not divided by zero


def test_npz_and_csv(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((5, 3)), y=np.array([3, 3, 4, 4, 4]))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.x.shape == (5, 3) and ds.y.tolist() == [0, 0, 1, 1, 1]
    (tmp_path / "d.csv").write_text("f1,f2,cls\n1,2,a\n3,4,b\n")
    ds = load_dataset(str(tmp_path / "d.csv"), label_column="cls")
    assert ds.x.shape == (2, 2) and ds.y.tolist() == [0, 1]


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = load_dataset(str(tmp_path / "imgs"))
    assert ds.x.shape == (6, 6, 5) and ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "imgs" / "dog" / "odd.png")
    with pytest.raises(InputError, match=r"odd.png: image shape \(7, 7\) differs"):
        load_dataset(str(tmp_path / "imgs"))


def _image_tree(folder, names):
    from PIL import Image

    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(folder / name)


@pytest.mark.parametrize("names, labels", [
    (["cat/indoor/0.png", "cat/outdoor/1.png", "cat/2.png", "dog/a/b/3.png"], [0, 0, 0, 1]),
    (["cat/0.png", "cat/1.png"], [0, 0]),
    (["0.png", "1.png"], None),
])
def test_image_folder_class_is_the_first_sub_folder(tmp_path, names, labels):
    # As torchvision's ImageFolder: images anywhere under a class folder are of that class, and
    # one class folder is still a labelled set; images only at the top level are unlabelled.
    _image_tree(tmp_path / "imgs", names)
    ds = load_dataset(str(tmp_path / "imgs"))
    assert len(ds.x) == len(names) and ds.x.dtype == np.uint8
    assert (ds.y if ds.y is None else ds.y.tolist()) == labels


def test_image_folder_with_images_at_the_top_and_in_class_folders_is_refused(tmp_path):
    # Are the top-level images a class of their own, or unlabelled? Neither guess is safe.
    _image_tree(tmp_path / "imgs", ["cat/0.png", "dog/1.png", "stray.png"])
    with pytest.raises(InputError, match=r"imgs: holds images both at its top level \(stray.png\) and in "
                                         r"class sub-folders"):
        load_dataset(str(tmp_path / "imgs"))


def test_corrupt_gz_in_named_set(tmp_path):
    _mnist_folder(tmp_path / "mnist")
    p = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(p.read_bytes())[:50])
    with pytest.raises(InputError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_npy_preprocessing_follows_what_the_array_holds(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "img.npy", rng.integers(0, 256, (20, 4, 4)).astype(np.uint8))
    np.save(tmp_path / "tab.npy", rng.normal(50, 10, (20, 3)))
    images, table = load_dataset(str(tmp_path / "img.npy")), load_dataset(str(tmp_path / "tab.npy"))
    assert images.preprocessing.scale == pytest.approx(1 / 255) and images.x.dtype == np.uint8
    np.testing.assert_allclose(table.features().mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(table.features().std(0), 1, atol=1e-4)
    # 0/1 features stored as uint8 are a table too, z-scored as their int64 copy is (not divided by 255)
    flags = rng.integers(0, 2, (20, 3))
    np.save(tmp_path / "flags8.npy", flags.astype(np.uint8))
    np.save(tmp_path / "flags64.npy", flags)
    u8, i64 = load_dataset(str(tmp_path / "flags8.npy")), load_dataset(str(tmp_path / "flags64.npy"))
    assert u8.preprocessing == i64.preprocessing
    np.testing.assert_allclose(u8.features().std(0), 1, atol=1e-4)


@pytest.mark.parametrize("kind", ["digits", "npy", "npz", "idx", "idx folder", "image folder"])
@pytest.mark.parametrize("options", [{"label_column": "cls"}, {"ignore_columns": ["id"]}])
def test_column_options_are_refused_where_there_are_no_columns(tmp_path, kind, options):
    # Silently ignoring them would train on what the user asked to leave out, or without labels.
    from PIL import Image

    x = np.random.default_rng(0).integers(0, 256, (6, 4, 4)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    write_idx(tmp_path / "x.idx", x)
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "images.idx", x)
    (tmp_path / "img").mkdir()
    Image.fromarray(x[0]).save(tmp_path / "img" / "0.png")
    spec = {"digits": "digits", "npy": "x.npy", "npz": "x.npz", "idx": "x.idx", "idx folder": "idx",
            "image folder": "img"}[kind]
    spec = spec if kind == "digits" else str(tmp_path / spec)
    with pytest.raises(InputError, match="--label-column and --ignore-column apply to .csv and .parquet data only"):
        load_dataset(spec, **options)


def _missing_label_file(tmp_path, kind):
    if kind == "csv text":
        (tmp_path / "d.csv").write_text("f,cls\n1,a\n2,\n3,b\n4, \n")
        return tmp_path / "d.csv", "cls", 2
    if kind == "csv numbers":
        (tmp_path / "d.csv").write_text("f,cls\n1,1\n2,\n3,2\n4,1\n")
        return tmp_path / "d.csv", "cls", 1
    if kind == "parquet":
        pq.write_table(pa.table({"f": [1.0, 2.0, 3.0], "cls": ["a", None, "b"]}), tmp_path / "d.parquet")
        return tmp_path / "d.parquet", "cls", 1
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.array([0.0, np.nan, 1.0, np.nan]))
    return tmp_path / "d.npz", None, 2


@pytest.mark.parametrize("kind", ["csv text", "csv numbers", "parquet", "npz"])
def test_missing_labels_are_counted_not_made_a_class(tmp_path, kind):
    # A blank label would be a class of its own (and k inferred one too many); a null one broke the encoding.
    path, column, missing = _missing_label_file(tmp_path, kind)
    name = repr(column or "y")
    with pytest.raises(InputError, match=rf"{path.name}: label column {name} has {missing} missing label\(s\)"):
        load_dataset(str(path), label_column=column)


@pytest.mark.parametrize("value", ["NA", "N/A", "null", "NaN", " NA"])
def test_csv_null_markers_in_a_text_label_column_are_missing_labels(tmp_path, value):
    # pyarrow reads them as null in a column of numbers; in a column of text they became a class.
    # Parquet has real nulls, so there the same text is a label.
    (tmp_path / "d.csv").write_text(f"f,cls\n1,a\n2,{value}\n3,b\n")
    with pytest.raises(InputError, match=r"d.csv: label column 'cls' has 1 missing label\(s\)"):
        load_dataset(str(tmp_path / "d.csv"), label_column="cls")
    pq.write_table(pa.table({"f": [1.0, 2.0, 3.0], "cls": ["a", value, "b"]}), tmp_path / "d.parquet")
    assert sorted(load_dataset(str(tmp_path / "d.parquet"), label_column="cls").y.tolist()) == [0, 1, 2]


def test_npz_labels_of_shape_n_by_1_are_one_label_per_row(tmp_path):
    # As Keras and scikit-learn often save them.
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3)), y=np.array([[7], [5], [7], [5]]))
    assert load_dataset(str(tmp_path / "d.npz")).y.tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("shape", [(4, 2), (1, 4), (4, 1, 1)])
def test_npz_labels_of_other_shapes_are_refused(tmp_path, shape):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3)), y=np.zeros(shape))
    with pytest.raises(InputError, match=rf"d.npz: labels y have shape {re.escape(str(shape))}, not \(4,\) or "
                                         r"\(4, 1\)"):
        load_dataset(str(tmp_path / "d.npz"))


@pytest.mark.parametrize("content, match", [
    (b"PK\x03\x04 truncated", "not a readable .npz file"),
    ("0-d", "array x is a single value, not rows"),
])
def test_unreadable_npz_is_one_line_naming_the_file(tmp_path, content, match):
    path = tmp_path / "d.npz"
    if content == "0-d":
        np.savez(path, x=np.array(3.0))
    else:
        np.savez(path, x=np.ones((50, 3)))
        path.write_bytes(path.read_bytes()[:120])  # cut off: the zip's directory is gone
    with pytest.raises(InputError, match=f"d.npz: {match}"):
        load_dataset(str(path))


@pytest.mark.parametrize("files, labelled", [
    (["train-images-idx3-ubyte", "train-labels-idx1-ubyte"], True),
    (["images.idx", "labels.idx"], True),
    (["t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"], False),
    (["a-images.idx", "a-labels.idx", "b-images.idx", "b-labels.idx"], True),
])
def test_a_folder_of_some_idx_files(tmp_path, files, labelled):
    # Image files are the rows, in name order; 1-D files their labels when they pair up row for row.
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i, name in enumerate(files):
        is_labels = "labels" in name
        arr = rng.integers(0, 3, 5 + i // 2) if is_labels else rng.integers(0, 256, (5 + i // 2, 4, 4))
        (labels if is_labels else images).append(arr)
        write_idx(tmp_path / name, arr, gz=name.endswith(".gz"))
    ds = load_dataset(str(tmp_path))
    np.testing.assert_array_equal(ds.x, np.concatenate(images))
    assert ds.preprocessing.scale == pytest.approx(1 / 255)
    if labelled:
        np.testing.assert_array_equal(ds.y, np.unique(np.concatenate(labels), return_inverse=True)[1])
    else:
        assert ds.y is None


def test_idx_label_files_that_do_not_pair_up_are_refused(tmp_path):
    write_idx(tmp_path / "images.idx", np.zeros((5, 4, 4)))
    write_idx(tmp_path / "labels.idx", np.zeros(4))
    with pytest.raises(InputError, match="label files labels.idx do not pair up row for row with image files "
                                         "images.idx"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_a_folder_of_table_parts(tmp_path, suffix):
    # As Spark writes a data set: parts in name order (one of them empty), a _SUCCESS marker, hidden .crc files.
    rows = [{"id": ["a", "b", "c"], "f": [1.0, 2.0, 3.0], "cls": ["x", "y", "x"]},
            {"id": [], "f": [], "cls": []},
            {"id": ["d", "e"], "f": [4.0, 5.0], "cls": ["y", "y"]}]
    for i, part in enumerate(rows):
        table = pa.table(part, schema=pa.schema([("id", pa.string()), ("f", pa.float64()), ("cls", pa.string())]))
        if suffix == "parquet":
            pq.write_table(table, tmp_path / f"part-{i}.parquet")
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp_path / f"part-{i}.csv")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part-0.parquet.crc").write_bytes(b"\0")
    ds = load_dataset(str(tmp_path), label_column="cls", ignore_columns=["id"])
    assert ds.feature_names == ("f",) and ds.name == tmp_path.name
    np.testing.assert_array_equal(ds.x[:, 0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 1, 1])
    with pytest.raises(InputError, match="part-0.*column 'id' is string, not numeric"):
        load_dataset(str(tmp_path))  # the column options apply to every part


def test_table_parts_with_other_columns_are_refused(tmp_path):
    pq.write_table(pa.table({"f": [1.0], "g": [2.0]}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"f": [1.0], "h": [2.0]}), tmp_path / "part-1.parquet")
    with pytest.raises(InputError, match="part-1.parquet: feature columns f, h differ from part-0.parquet's f, g"):
        load_dataset(str(tmp_path))


def test_parquet_parts_with_number_and_text_labels_are_refused(tmp_path):
    # Numbers and strings cannot be sorted into one set of classes; name the part that differs.
    for i, labels in enumerate([[1, 2], [], ["x", "y"]]):
        table = pa.table({"f": [1.0, 2.0][:len(labels)], "cls": labels},
                         schema=pa.schema([("f", pa.float64()), ("cls", pa.int64() if i < 2 else pa.string())]))
        pq.write_table(table, tmp_path / f"part-{i}.parquet")
    with pytest.raises(InputError, match="part-2.parquet: label column 'cls' holds strings, part-0.parquet's "
                                         "holds numbers"):
        load_dataset(str(tmp_path), label_column="cls")


def test_a_csv_label_column_is_text_whatever_its_first_block_looks_like(tmp_path):
    # pyarrow infers a column's type from the first block (4 MB): a column of numbers there
    # with a word later failed mid-file; a CSV's labels are its text
    n = 800_000  # 4.8 MB: past the first block
    f = tmp_path / "t.csv"
    f.write_text("f,cls\n" + "".join(f"{i % 7}.5,{i % 3}\n" for i in range(n)) + "1.5,unknown\n")
    ds = load_dataset(str(f), label_column="cls")
    assert len(ds.y) == n + 1 and len(np.unique(ds.y)) == 4


def test_a_folder_without_data_says_what_it_looked_for(tmp_path):
    (tmp_path / "rows.txt").write_text("1 2\n3 4\n")
    with pytest.raises(InputError, match="no PNG or JPEG images, IDX, .parquet, .csv or .npy files"):
        load_dataset(str(tmp_path))


def test_a_folder_of_npy_parts_trains_on_the_rows_scoring_reads(tmp_path):
    from deepclust.runtime import open_inputs

    parts = [np.arange(6, dtype=np.float32).reshape(3, 2), np.full((2, 2), 9, np.float32)]
    np.save(tmp_path / "part-0.npy", parts[0])
    np.save(tmp_path / "part-1.npy", parts[1])
    (tmp_path / "part-2.npy").write_bytes(b"")  # a zero-byte part, as Hadoop writes for an empty partition
    np.save(tmp_path / "_extra.npy", np.ones((5, 2), np.float32))  # "_" hides a file, as for Spark and pyarrow
    np.save(tmp_path / ".part-0.npy", np.ones((5, 2), np.float32))
    ds = load_dataset(str(tmp_path))
    np.testing.assert_array_equal(ds.x, np.concatenate(parts))
    assert ds.y is None and ds.name == tmp_path.name
    scored = np.concatenate([b.values for b in open_inputs(tmp_path).batches()])
    np.testing.assert_array_equal(scored, ds.x)  # the same files, in the same order
    np.save(tmp_path / "part-1.npy", np.ones((2, 3), np.float32))
    with pytest.raises(InputError, match=r"part-1.npy: rows of shape \(3,\) and dtype float32 differ from "
                                         r"part-0.npy's \(2,\) and float32"):
        load_dataset(str(tmp_path))
    np.save(tmp_path / "part-1.npy", np.ones((2, 2), np.uint8))
    with pytest.raises(InputError, match="dtype uint8 differ"):
        load_dataset(str(tmp_path))
    pq.write_table(pa.table({"f": [1.0]}), tmp_path / "part-3.parquet")
    with pytest.raises(InputError, match="holds .parquet/.csv and .npy files; give a folder of one kind"):
        load_dataset(str(tmp_path))


def test_a_data_dir_holding_another_named_set_does_not_serve_it(tmp_path, monkeypatch):
    import deepclust.trainer.datasets as datasets

    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", tmp_path / "system")
    parts = _mnist_folder(tmp_path / "mnist")  # MNIST's files, which Fashion-MNIST's share the names of
    ds = load_dataset("mnist", data_dir=tmp_path / "mnist", download=False)  # the folder named for the set
    np.testing.assert_array_equal(ds.x[:30], parts["train-images-idx3-ubyte"])
    with pytest.raises(InputError, match="fashion-mnist: not found"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "mnist", download=False)


def test_each_idx_split_pairs_its_own_labels_and_shape(tmp_path):
    parts = _mnist_folder(tmp_path / "mnist")
    # one label moved from the training split to the test split: the totals still match
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", parts["train-labels-idx1-ubyte"][:-1], gz=True)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.r_[0, parts["t10k-labels-idx1-ubyte"]], gz=True)
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte.gz: 30 images, but train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    _mnist_folder(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32), np.uint8), gz=True)
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte.gz: images of shape \(32, 32\) differ"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_a_parts_folder_with_an_empty_part_and_a_vector_column_loads(tmp_path):
    # Spark writes empty parts; a variable-length vector column has no width to read from one
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    kind = pa.list_(pa.float32())
    (tmp_path / "parts").mkdir()
    for i, rows in enumerate((x[:4], x[:0], x[4:])):
        pq.write_table(pa.table({"emb": pa.array([list(r) for r in rows], type=kind)}),
                       tmp_path / "parts" / f"part-{i}.parquet")
    ds = load_dataset(str(tmp_path / "parts"))
    assert ds.feature_names == ("emb[0]", "emb[1]", "emb[2]")
    np.testing.assert_array_equal(ds.x, x)
