"""Training data: named data sets (downloaded and checksummed when missing) and local files.

A data set on the CLI is either a name (``mnist``, ``fashion-mnist``, ``kmnist``, ``digits``)
resolved in a data directory, or a path: .npy/.npz, .parquet, .csv, an IDX file, a folder of
IDX files, of .parquet/.csv parts or of .npy parts, or a folder of PNG/JPEG images (as torchvision's
ImageFolder: an image's class is the first sub-folder it is under; images all at the top level are
unlabelled). Label and ignored columns name columns of a table, so only tables take them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from deepclust.runtime.errors import InputError
from deepclust.runtime.preprocessing import Preprocessing
from deepclust.runtime.readers import (TABLE_SUFFIXES, check_finite, data_files, image_files, is_idx, open_reader,
                                       read_idx, read_image)

DATA_ENV = "DEEPCLUST_DATA"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
IDX_PARTS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX data set can be downloaded from, and the md5 of each gzipped part."""

    mirrors: tuple[str, ...]
    md5: dict


NAMED = {
    "mnist": IdxSource(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion-mnist": IdxSource(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"}),
    "kmnist": IdxSource(
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5={"train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
             "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
             "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
             "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134"}),
}
DATASET_NAMES = (*NAMED, "digits")


@dataclass
class Dataset:
    """Rows ``x`` of shape (n, *sample_shape) in their stored dtype (images stay uint8),
    optional labels ``y`` (n,), and the preprocessing the encoder should be trained behind."""

    name: str
    x: np.ndarray
    y: np.ndarray | None
    preprocessing: Preprocessing
    feature_names: tuple[str, ...] | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape))

    def features(self) -> np.ndarray:
        """Preprocessed float32 rows (n, n_features): exactly what the encoder sees."""
        x = np.array(self.x.reshape(len(self.x), -1), dtype=np.float32)
        return self.preprocessing.apply_(x)


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "deepclust")


def load_dataset(spec: str, *, data_dir: str | os.PathLike | None = None, label_column: str | None = None,
                 ignore_columns: Sequence[str] = (), feature_names: Sequence[str] | None = None,
                 download: bool = True) -> Dataset:
    """Load a named data set or a file/folder path; see the module docstring for the formats.

    ``feature_names`` (tabular files) selects and orders the feature columns, e.g. as a
    bundle recorded them.
    """
    path = Path(spec).expanduser()
    columns = (label_column, ignore_columns)
    if spec in NAMED:
        _refuse_columns(spec, *columns)
        return _load_named_idx(spec, Path(data_dir) if data_dir else default_data_dir(), download)
    if spec == "digits":
        _refuse_columns(spec, *columns)
        return _load_digits()
    if path.is_dir():
        return _load_folder(path, label_column, ignore_columns, feature_names)
    if path.exists():
        if path.name.lower().endswith(TABLE_SUFFIXES):
            return _load_tables([path], path.stem, label_column, ignore_columns, feature_names)
        _refuse_columns(path, *columns)
        if path.suffix.lower() == ".npz":
            return _load_npz(path)
        return _load_array(path)
    if os.sep in spec or "." in Path(spec).name:
        raise InputError(f"{spec}: no such file or folder")
    raise InputError(f"{spec}: unknown data set (named data sets: {', '.join(DATASET_NAMES)}; or give a path)")


def _refuse_columns(where, label_column, ignore_columns) -> None:
    """Column options on data without columns would be silently ignored: refuse them instead."""
    if label_column is not None or ignore_columns:
        raise InputError(f"{where}: --label-column and --ignore-column apply to .csv and .parquet data only")


def _load_folder(folder: Path, label_column, ignore_columns, feature_names) -> Dataset:
    """A folder holds IDX files, .parquet/.csv or .npy parts (as Spark or a sharded export
    writes a data set), or images. Its files are listed as scoring lists them."""
    if _find_idx_parts(folder):  # MNIST's four files: train rows first, as the named data sets
        _refuse_columns(folder, label_column, ignore_columns)
        return _load_idx_folder(folder, folder.name)
    files = data_files(folder)
    kinds = {"IDX": [f for f in files if is_idx(f)],
             ".parquet/.csv": [f for f in files if f.name.lower().endswith(TABLE_SUFFIXES)],
             ".npy": [f for f in files if f.suffix.lower() == ".npy"]}
    found = [kind for kind, parts in kinds.items() if parts]
    if len(found) > 1:
        raise InputError(f"{folder}: holds {' and '.join(found)} files; give a folder of one kind")
    if kinds[".parquet/.csv"]:
        return _load_tables(kinds[".parquet/.csv"], folder.name, label_column, ignore_columns, feature_names)
    _refuse_columns(folder, label_column, ignore_columns)
    if kinds["IDX"]:
        return _load_idx_files(folder, kinds["IDX"])
    if kinds[".npy"]:
        return _load_npy_parts(folder, kinds[".npy"])
    return _load_image_folder(folder)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)  # 8x8 images with values 0..16
    return Dataset("digits", x, d.target.astype(np.int64), Preprocessing(scale=1.0 / 16.0))


# --- IDX data sets --------------------------------------------------------------------------------

def _find_idx_parts(folder: Path) -> dict | None:
    found = {}
    for part in IDX_PARTS:
        for cand in (folder / f"{part}.gz", folder / part, folder / part.replace("-idx", ".idx")):
            if cand.is_file():
                found[part] = cand
                break
    return found if len(found) == len(IDX_PARTS) else None


def _load_named_idx(name: str, data_dir: Path, download: bool) -> Dataset:
    # The data dir itself only when it is named for the set: MNIST, Fashion-MNIST and KMNIST
    # share their file names, so a --data-dir pointed at one set's folder must not serve
    # another's under its name (local copies are often recompressed: their md5s differ).
    own = [data_dir] if data_dir.name.lower().replace("_", "-") == name else []
    for folder in (data_dir / name, *own, SYSTEM_DATA_DIR / name):
        if folder.is_dir() and _find_idx_parts(folder):
            return _load_idx_folder(folder, name)
    if not download:
        raise InputError(f"{name}: not found in {data_dir / name} or {SYSTEM_DATA_DIR / name} (--data-dir or "
                         f"${DATA_ENV} names a folder holding {name}/)")
    _download_idx(name, NAMED[name], data_dir / name)
    return _load_idx_folder(data_dir / name, name)


def _load_idx_folder(folder: Path, name: str) -> Dataset:
    """The training then the test split, each split's labels checked against its own images."""
    parts = _find_idx_parts(folder)
    xs, ys = [], []
    for split in ("train", "t10k"):
        images, labels = parts[f"{split}-images-idx3-ubyte"], parts[f"{split}-labels-idx1-ubyte"]
        x, y = read_idx(images), read_idx(labels)
        if len(x) != len(y) or y.ndim != 1:
            raise InputError(f"{images}: {len(x)} images, but {labels.name} holds {y.shape} labels")
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise InputError(f"{images}: images of shape {x.shape[1:]} differ from the training split's "
                             f"{xs[0].shape[1:]}")
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs)
    return Dataset(name, x, np.concatenate(ys).astype(np.int64), _image_preprocessing(x))


def _load_idx_files(folder: Path, files: list[Path]) -> Dataset:
    """IDX files in name order: files of samples (two or more axes) are the rows, concatenated;
    1-D files (MNIST's label files) are their labels if they pair up with them row for row."""
    arrays = [(f, read_idx(f)) for f in files]
    samples = [(f, a) for f, a in arrays if a.ndim > 1]
    labels = [(f, a) for f, a in arrays if a.ndim == 1]
    if not samples:
        raise InputError(f"{folder}: its IDX files are all 1-D (labels); no file of images or rows to train on")
    first, shape = samples[0][0], samples[0][1].shape[1:]
    for f, a in samples[1:]:
        if a.shape[1:] != shape:
            raise InputError(f"{f}: samples of shape {a.shape[1:]} differ from {first.name}'s {shape}")
    x = np.concatenate([a for _, a in samples])
    if len(x) == 0:
        raise InputError(f"{folder}: empty input (no rows)")
    y = None
    if labels:
        if [len(a) for _, a in labels] != [len(a) for _, a in samples]:
            raise InputError(f"{folder}: label files {', '.join(f.name for f, _ in labels)} do not pair up row for "
                             f"row with image files {', '.join(f.name for f, _ in samples)} (in name order)")
        y = _encode_labels(np.concatenate([a for _, a in labels]))
    if x.dtype.kind == "f":
        check_finite(x.reshape(len(x), -1), folder, 0)
    return Dataset(folder.name, x, y, _image_preprocessing(x))


def _download_idx(name: str, source: IdxSource, dest: Path) -> None:
    """Fetch each part from the first mirror that answers, check its md5, then move it in place.
    A failed download leaves nothing behind, not even the data set's folder it made."""
    if dest.parent.exists() and not dest.parent.is_dir():
        raise InputError(f"{dest.parent}: is a file; --data-dir (or ${DATA_ENV}) names a folder")
    made = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(".*-ubyte.gz.*"):  # a killed download's temporary file
        stale.unlink(missing_ok=True)
    for part, md5 in source.md5.items():
        target = dest / f"{part}.gz"
        if target.is_file():
            continue
        errors = []
        for mirror in source.mirrors:
            url = f"{mirror}{part}.gz"
            try:
                _fetch_checked(url, target, md5)
                break
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {e}")
        else:
            if made and not any(dest.iterdir()):
                dest.rmdir()
            raise InputError(f"{name}: download failed, and no local copy in {dest} or {SYSTEM_DATA_DIR / name} "
                             f"(--data-dir or ${DATA_ENV} names a folder holding {name}/; "
                             f"{'; '.join(errors)[:300]})")


def _fetch_checked(url: str, target: Path, md5: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != md5:
            raise ValueError(f"checksum mismatch (md5 {h.hexdigest()}, expected {md5})")
        shutil.move(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _image_preprocessing(x: np.ndarray) -> Preprocessing:
    return Preprocessing(scale=1.0 / 255.0) if x.dtype == np.uint8 else Preprocessing()


def default_preprocessing(x: np.ndarray) -> Preprocessing:
    """What the encoder sees of rows ``x`` unless told otherwise (`deepclust train` on an array,
    the estimator's ``fit``): 2-D arrays are tables, z-scored per column whatever their dtype
    (0/1 and count features are often uint8: divided by 255, they would train on near-zeros);
    images (more dimensions) of 8-bit values are scaled to [0, 1], float ones used as they are."""
    if x.ndim == 2:
        return _standardize(x)
    return _image_preprocessing(x)


# --- files ------------------------------------------------------------------------------------------

def _load_array(path: Path) -> Dataset:
    """An IDX or .npy file: rows without labels."""
    if is_idx(path):  # images keep their stored dtype (uint8: 4x less memory than float32)
        x = read_idx(path)
        if len(x) == 0:
            raise InputError(f"{path}: empty input (no rows)")
        if x.dtype.kind == "f":
            check_finite(x.reshape(len(x), -1), path, 0)
        return Dataset(path.stem, x, None, _image_preprocessing(x))
    x = _read_npy(path)
    if len(x) == 0:
        raise InputError(f"{path}: empty input (no rows)")
    return Dataset(path.stem, x, None, default_preprocessing(x))


def _read_npy(path: Path) -> np.ndarray:
    """A .npy file's rows (one value per row becomes one column), checked finite."""
    reader = open_reader(path)  # validates the header and the length before loading; else says why not
    x = np.load(path, allow_pickle=False)
    if x.ndim == 1:
        x = x[:, None]
    for s in range(0, len(x), 65536):
        check_finite(x[s:s + 65536].reshape(-1, reader.n_values), path, s)
    return x


def _load_npy_parts(folder: Path, files: list[Path]) -> Dataset:
    """.npy parts in name order, as scoring reads them: rows of one shape, concatenated."""
    parts = [(f, _read_npy(f)) for f in files]
    first, shape = parts[0][0], parts[0][1].shape[1:]
    for f, a in parts[1:]:
        if a.shape[1:] != shape or a.dtype != parts[0][1].dtype:
            raise InputError(f"{f}: rows of shape {a.shape[1:]} and dtype {a.dtype} differ from {first.name}'s "
                             f"{shape} and {parts[0][1].dtype}")
    x = np.concatenate([a for _, a in parts])
    if len(x) == 0:
        raise InputError(f"{folder}: empty input (no rows)")
    return Dataset(folder.name, x, None, default_preprocessing(x))


def _load_tables(files: list[Path], name: str, label_column, ignore_columns, feature_names=None) -> Dataset:
    """Rows of .parquet/.csv files (one, or a data set's parts in name order), each file read
    with the same column options; the parts must have the same feature columns, and labels of
    one kind (numbers and strings cannot be sorted into one set of classes)."""
    import pyarrow.csv as pcsv

    # pyarrow reads "NA", "null", ... as null in a CSV column of numbers but keeps them as text in
    # a column of strings; both are missing labels. Parquet has real nulls: there "NA" is a label.
    csv_nulls = frozenset(pcsv.ConvertOptions().null_values)
    xs, ys, features, first_labels = [], [], None, None
    for f in files:
        if len(files) > 1 and _empty_parquet(f):  # Spark's empty parts: nothing to read, and no vector to
            continue                                # take a vector column's width from
        reader = open_reader(f, feature_names=feature_names, label_column=label_column,
                             ignore_columns=ignore_columns)
        if features is None:
            features, first = tuple(reader.features), f
        elif tuple(reader.features) != features:
            raise InputError(f"{f}: feature columns {', '.join(reader.features[:10])} differ from "
                             f"{first.name}'s {', '.join(features[:10])}")
        labels = []
        for batch in reader.batches(allow_empty=len(files) > 1):  # Spark writes empty parts
            xs.append(batch.values.copy())
            if batch.labels is not None:
                labels.append(np.asarray(batch.labels).copy())
        if labels:
            nulls = csv_nulls if f.name.lower().endswith((".csv", ".csv.gz")) else ()
            y = _complete_labels(np.concatenate(labels), f, label_column, nulls)
            if len(y):  # an empty part's label column has no values to have a kind
                kind = _label_kind(y)
                if first_labels is None:
                    first_labels = (f, kind)
                elif kind != first_labels[1]:
                    raise InputError(f"{f}: label column {label_column!r} holds {kind}, "
                                     f"{first_labels[0].name}'s holds {first_labels[1]}")
            ys.append(y)
    if not xs:
        raise InputError(f"{files[0].parent}: empty input (no rows in any of its {len(files)} files)")
    x = np.concatenate(xs)
    y = _encode_labels(np.concatenate(ys)) if ys else None
    return Dataset(name, x, y, _standardize(x), feature_names=features)


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            xk = next((k for k in ("x", "X", "data", "features") if k in keys), None)
            if xk is None:
                raise InputError(f"{path}: no array named x, X, data or features (found: {', '.join(keys)})")
            x = z[xk]
            yk = next((k for k in ("y", "labels", "target") if k in keys), None)
            y = z[yk] if yk else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
    if x.dtype.kind not in "biuf":
        raise InputError(f"{path}: array {xk} has dtype {x.dtype}, not numeric")
    if x.ndim == 0:
        raise InputError(f"{path}: array {xk} is a single value, not rows")
    if x.ndim == 1:
        x = x[:, None]  # one value per row, as for .npy
    if len(x) == 0:
        raise InputError(f"{path}: empty input (no rows)")
    if y is not None and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # (n, 1), as Keras and scikit-learn often save labels
    if y is not None and y.ndim > 1:
        raise InputError(f"{path}: labels {yk} have shape {y.shape}, not ({len(x)},) or ({len(x)}, 1)")
    if y is not None and (y.ndim == 0 or len(y) != len(x)):
        raise InputError(f"{path}: {yk} has shape {y.shape}, but {xk} has {len(x)} rows (one label per row)")
    check_finite(x.reshape(len(x), -1), path, 0)
    y = _encode_labels(_complete_labels(y, path, yk)) if y is not None else None
    return Dataset(path.stem, x, y, default_preprocessing(x))


def _load_image_folder(folder: Path) -> Dataset:
    """Images (one size), labelled as torchvision's ImageFolder labels them: by the first
    sub-folder each is under (``cat/indoor/1.png`` is a cat), even when there is one class.
    Images all at the top level are unlabelled; some there and some in sub-folders are refused,
    as it is not clear whether the top-level ones are unlabelled or a class of their own."""
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: no PNG or JPEG images, IDX, .parquet, .csv or .npy files")
    classes = [f.relative_to(folder).parts[0] if f.parent != folder else None for f in files]
    top = [f for f, c in zip(files, classes) if c is None]
    if top and len(top) < len(files):
        raise InputError(f"{folder}: holds images both at its top level ({top[0].name}) and in class sub-folders; "
                         "move them all into class sub-folders, or all to the top level for unlabelled data")
    images, shape = [], None
    for f in files:
        arr = read_image(f)
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise InputError(f"{f}: image shape {arr.shape} differs from {shape} (resize images to one size)")
        images.append(arr)
    x = np.stack(images)
    y = None if top else _encode_labels(np.asarray(classes))
    return Dataset(folder.name, x, y, Preprocessing(scale=1.0 / 255.0))


def _standardize(x: np.ndarray) -> Preprocessing:
    """Per-feature z-scores for tabular data (constant columns keep scale 1)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std[std == 0] = 1.0
    return Preprocessing(offset=tuple(mean.tolist()), scale=tuple((1.0 / std).tolist()))


def _empty_parquet(path: Path) -> bool:
    if path.suffix.lower() not in (".parquet", ".pq"):
        return False
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows == 0
    except Exception:  # unreadable: the reader says so
        return False


def _complete_labels(y: np.ndarray, path, column: str, nulls=()) -> np.ndarray:
    """``y`` if every row has a label; a blank or null one would count as a class of its own
    (or break the encoding), so name the file, the column and how many are missing. ``nulls``:
    text that means missing (a CSV's null markers, which pyarrow keeps as text in a string column)."""
    if y.dtype.kind == "f":
        missing = int(np.isnan(y).sum())
    elif y.dtype.kind in "OUS":
        missing = sum(v is None or v != v or (isinstance(v, (str, bytes)) and (not v.strip() or v.strip() in nulls))
                      for v in y.tolist())
    else:
        missing = 0
    if missing:
        raise InputError(f"{path}: label column {column!r} has {missing} missing label(s) (empty, NA, null or NaN) "
                         f"of {len(y)}; fill them in or drop those rows")
    return y


def _label_kind(y: np.ndarray) -> str:
    """What a file's (non-empty, complete) labels are, in words, to compare files by."""
    first = y.flat[0]
    if isinstance(first, (str, bytes)):
        return "strings"
    if y.dtype.kind in "biuf" or isinstance(first, (int, float, np.number, np.bool_)):
        return "numbers"
    return f"{type(first).__name__} values"


def _encode_labels(y: np.ndarray) -> np.ndarray:
    """Any label values (ints, strings) as integer codes 0..c-1."""
    _, codes = np.unique(np.asarray(y), return_inverse=True)
    return codes.astype(np.int64)
