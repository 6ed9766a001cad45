"""Data set loading from local files, name resolution, and the download path (file:// URLs)."""

import gzip
import hashlib

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
    with pytest.raises(InputError, match="mnist: download failed.*checksum mismatch"):
        load_dataset("mnist", data_dir=tmp_path / "data")
    assert list((tmp_path / "data" / "mnist").iterdir()) == []


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
