"""Streaming readers: any input size, bounded memory, a clear error for every bad file.

Every reader yields ``Batch(start, values, labels)`` where ``values`` is a float32 array of
shape (rows, n_values_per_row). Readers reuse their buffers: a batch is valid until the
next one is requested, which keeps peak memory at a few batches whatever the file size.
(A plain ``np.memmap`` would not: every page it touches stays resident.)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import InputError
from .vector_columns import element_names, element_widths, first_width, is_vector_type, source_column, vector_rows

log = logging.getLogger("deepclust")

DEFAULT_BATCH_ROWS = 4096


@dataclass
class Batch:
    start: int
    values: np.ndarray
    labels: np.ndarray | None = None
    kept: tuple = ()  # the kept columns' (ids') values as pyarrow arrays, in their order and input types

    def rows(self, first: int, stop: int | None = None) -> "Batch":
        """Rows ``first`` to ``stop`` of this batch, every field cut alike."""
        cut = slice(first, stop)
        return Batch(self.start + first, self.values[cut], None if self.labels is None else self.labels[cut],
                     tuple(k[cut] for k in self.kept))


SAMPLE_BLOCKS, SAMPLE_BYTES = 64, 4096


def sampled_sha256(path: Path, size: int) -> str:
    """sha256 of ``SAMPLE_BLOCKS`` blocks of ``SAMPLE_BYTES`` spread evenly over a file, the first
    and last included (the whole file when it is smaller): a change to rows anywhere but
    between the blocks changes it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= SAMPLE_BLOCKS * SAMPLE_BYTES:
            h.update(f.read())
        else:
            step = (size - SAMPLE_BYTES) / (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                f.seek(round(i * step))
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


class Reader:
    """Common interface; subclasses fill ``n_rows`` (None when unknown up front) and
    ``sample_shape`` (shape of one row), and implement ``_batches``."""

    path: Path
    n_rows: int | None
    sample_shape: tuple[int, ...]
    kept_columns: tuple[str, ...] = ()  # table readers: columns carried beside the rows (ids)
    kept_types: tuple = ()  # their pyarrow types, the same in every file of one input (open_inputs)

    @property
    def n_values(self) -> int:
        return int(np.prod(self.sample_shape))

    @property
    def files(self) -> list[Path]:
        return [self.path]

    def fingerprint(self) -> dict:
        """What identifies this input for a resumed job: its files' paths, sizes and mtimes, and
        a sample of their bytes. Size and mtime alone miss a file rewritten with other rows of
        the same size and its old mtime restored (``rsync -a``, ``tar``, ``cp -p``, ``touch
        -r``): every .npy of one shape has one size. The sample (:func:`sampled_sha256`) costs
        milliseconds; a full hash would cost a few percent of the job, on every rerun."""
        h = hashlib.sha256()
        for f in self.files:
            st = f.stat()
            h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{sampled_sha256(f, st.st_size)}\n".encode())
        return {"first": str(self.files[0].resolve()), "files": len(self.files), "files_sha256": h.hexdigest()}

    def batches(self, batch_rows: int = DEFAULT_BATCH_ROWS, start_row: int = 0, *,
                allow_empty: bool = False) -> Iterator[Batch]:
        """Yield validated float32 batches from row ``start_row`` on (a resumed job skips what it
        has done); raise InputError on NaN/Inf, truncation, and empty input unless
        ``allow_empty`` (one empty part of a data set, as Spark writes them, is no error)."""
        seen = start_row
        for batch in self._batches(batch_rows, start_row):
            check_finite(batch.values, self.path, batch.start, getattr(self, "features", None))
            seen += len(batch.values)
            yield batch
        if seen == 0 and not allow_empty:
            raise InputError(f"{self.path}: empty input (no rows)")
        if self.n_rows is not None and seen != self.n_rows:
            raise InputError(f"{self.path}: truncated: read {seen} of {self.n_rows} rows")

    def _batches(self, batch_rows: int, start_row: int) -> Iterator[Batch]:  # pragma: no cover - abstract
        raise NotImplementedError


def check_finite(values: np.ndarray, path, start: int, columns: Sequence[str] | None = None) -> None:
    """Refuse NaN, Inf and missing values, naming the first row (and ``columns``' name for it:
    in a 500-column table the row alone leaves the user hunting)."""
    if not np.isfinite(values).all():
        row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(values.reshape(len(values), -1))))
        where = f"row {start + row}" + (f", column {columns[col]!r}," if columns is not None else "")
        raise InputError(f"{path}: {where} holds NaN, Inf or a missing value")


def open_reader(path: str | os.PathLike, *, feature_names: Sequence[str] | None = None,
                label_column: str | None = None, ignore_columns: Sequence[str] = (),
                can_ignore: bool = True, kept_columns: Sequence[str] = ()) -> Reader:
    """Open ``path`` by its format: .npy, .parquet, .csv (optionally .gz) or IDX (raw or .gz).

    ``feature_names`` (tabular inputs) selects and orders columns; otherwise every column but
    ``label_column``, ``ignore_columns`` and ``kept_columns`` is a feature and must be numeric
    (``can_ignore``: the caller lets users ignore columns, so a non-numeric column's error
    suggests it). ``kept_columns`` (ids) come with each batch as its ``kept`` values.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file (.npy, .parquet, .csv or IDX)")
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            return NpyReader(path)
        if name.endswith((".parquet", ".pq")):
            return ParquetReader(path, feature_names, label_column, ignore_columns, can_ignore=can_ignore,
                                 kept_columns=kept_columns)
        if name.endswith((".csv", ".csv.gz")):
            return CsvReader(path, feature_names, label_column, ignore_columns, can_ignore=can_ignore,
                             kept_columns=kept_columns)
        if is_idx(path):
            return IdxReader(path)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    raise InputError(f"{path}: unknown input format (expected .npy, .parquet, .csv or an IDX file)")


TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def open_inputs(inputs, *, feature_names: Sequence[str] | None = None, kept: Sequence[str] = (),
                kept_types: Sequence | None = None) -> Reader:
    """One reader over ``inputs``: a file, a folder, or a list of them. A folder holds files of
    one format (read in name order; e.g. a Parquet data set) or PNG/JPEG images (recursively).
    ``kept`` names columns of table inputs, no features unless ``feature_names`` names them,
    to be carried to the output (ids): batches hold their values as ``kept``, as pyarrow
    arrays of one type per column over all the files (:func:`kept_column_types`), or of
    ``kept_types`` when given (a part of a larger input, read by the Ray engine)."""
    kept = tuple(kept)
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not paths:
        raise InputError("no input given")
    readers: list[Reader] = []
    for path in paths:
        if not path.is_dir():
            readers.append(open_reader(path, feature_names=feature_names, kept_columns=kept, can_ignore=False))
            continue
        files = [f for f in data_files(path) if f.name.lower().endswith(TABLE_SUFFIXES + (".npy",)) or is_idx(f)]
        if files:
            found = [open_reader(f, feature_names=feature_names, kept_columns=kept, can_ignore=False)
                     for f in files]
            # An MNIST-style folder holds label files beside the images: they are not rows.
            samples = [r for r in found if not (isinstance(r, IdxReader) and r.is_labels)]
            readers.extend(samples or found)
        elif image_files(path):
            readers.append(ImageFolderReader(path))
        else:
            raise InputError(f"{path}: no .npy, .parquet, .csv, IDX or image files in this folder")
    if kept:
        for r in readers:
            if not r.kept_columns:
                raise InputError(f"{r.path}: has no columns to keep (a kept column is read from .parquet and .csv "
                                 "inputs)")
        types = tuple(kept_types) if kept_types is not None else kept_column_types(readers, kept)
        for r in readers:
            r.kept_types = types
    reader = readers[0] if len(readers) == 1 else MultiReader(readers)
    reader.kept_types = readers[0].kept_types
    return reader


def kept_column_types(readers: Sequence[Reader], names: Sequence[str]) -> tuple:
    """One pyarrow type per kept column for all ``readers``: the files' own when they agree,
    else the widest of integers of one sign, of strings or of binaries, a dictionary's values
    (pandas writes the codes of a categorical in as few bits as each part needs). Ids are
    copied exactly, so any other mix (int64 and double, numbers and text) is refused rather
    than converted."""
    import pyarrow as pa

    unified = []
    for i, name in enumerate(names):
        seen: dict = {}  # each type and the first file that has it
        for r in readers:
            seen.setdefault(r.kept_types[i], r.path)
        types = [t for t in seen if not pa.types.is_null(t)] or list(seen)  # an all-null part: reported per row
        if len(types) > 1:  # categoricals by their values
            decoded: dict = {}
            for t in types:
                decoded.setdefault(t.value_type if pa.types.is_dictionary(t) else t, seen[t])
            seen, types = decoded, list(decoded)
        if len(types) == 1:
            unified.append(types[0])
        elif all(pa.types.is_signed_integer(t) for t in types) or all(pa.types.is_unsigned_integer(t) for t in types):
            unified.append(max(types, key=lambda t: t.bit_width))
        elif all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types):
            unified.append(pa.large_string())
        elif all(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in types):
            unified.append(pa.large_binary())
        else:
            found = ", ".join(f"{t} in {seen[t]}" for t in types[:3])
            raise InputError(f"kept column {name!r} is {found}: ids are copied exactly, so give the column one type "
                             "in every file")
    return tuple(unified)


def data_files(folder: Path) -> list[Path]:
    """A data set folder's files, in name order, as Spark and ``pyarrow.dataset`` take them:
    not hidden (a name starting with "." or "_": ``_SUCCESS``, ``_metadata``, ``.crc``
    files) and not empty (Hadoop and Hive write zero-byte parts for empty partitions). Both
    scoring and training list folders by this rule."""
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and not f.name.startswith((".", "_")) and f.stat().st_size)


class MultiReader(Reader):
    """Several inputs read one after another as one sequence of rows. Some may be empty
    (Spark writes empty part files); not all."""

    def __init__(self, readers: Sequence[Reader]):
        self.readers = list(readers)
        self.path = self.readers[0].path
        self.sample_shape = self.readers[0].sample_shape
        for r in self.readers[1:]:
            if r.n_values != self.readers[0].n_values:
                raise InputError(f"{r.path}: rows have {r.n_values} values, but {self.path} has {self.n_values}")
        counts = [r.n_rows for r in self.readers]
        self.n_rows = None if None in counts else sum(counts)

    @property
    def files(self) -> list[Path]:
        return [f for r in self.readers for f in r.files]

    def batches(self, batch_rows: int = DEFAULT_BATCH_ROWS, start_row: int = 0, *,
                allow_empty: bool = False) -> Iterator[Batch]:
        offset = 0  # rows before the current reader
        for r in self.readers:
            if r.n_rows is not None and offset + r.n_rows <= start_row:
                offset += r.n_rows  # done before: skip without reading
                continue
            # Known length: seek to the first row wanted. Unknown (CSV): read and drop rows.
            local_start = max(start_row - offset, 0) if r.n_rows is not None else 0
            rows = local_start
            for b in r.batches(batch_rows, start_row=local_start, allow_empty=True):
                first, n = offset + b.start, len(b.values)
                rows = b.start + n
                skip = max(start_row - first, 0)
                if skip < n:
                    yield Batch(first, b.values, b.labels, b.kept).rows(skip)
            offset += r.n_rows if r.n_rows is not None else rows
        if offset == 0 and not allow_empty:
            raise InputError(f"{self.path}: empty input (no rows in any of its {len(self.readers)} files)")


# --- .npy ---------------------------------------------------------------------------------

class NpyReader(Reader):
    """Reads rows with ``readinto`` into one reused buffer (no memory map, flat RSS)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                self._offset = f.tell()
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: not a readable .npy file ({e})") from None
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise InputError(f"{path}: dtype {dtype} is not numeric")
        if len(shape) == 0:
            raise InputError(f"{path}: holds a scalar, not rows")
        self.dtype = dtype
        self.fortran = fortran and len(shape) > 1  # np.save of pandas' to_numpy(): a row's values lie apart
        self.n_rows = int(shape[0])
        self.sample_shape = tuple(int(s) for s in shape[1:]) or (1,)
        row_bytes = self.n_values * dtype.itemsize
        have = os.path.getsize(path) - self._offset
        if have < self.n_rows * row_bytes:
            raise InputError(
                f"{path}: truncated: the header says {self.n_rows} rows, the file holds "
                f"{max(have, 0) // max(row_bytes, 1)} complete rows"
            )

    def _batches(self, batch_rows: int, start_row: int) -> Iterator[Batch]:
        width, batch_rows = self.n_values, _buffer_rows(batch_rows, self.n_rows, start_row)
        if self.fortran:
            yield from self._fortran_batches(batch_rows, start_row)
            return
        raw = np.empty(batch_rows * width, dtype=self.dtype)
        out = raw if self.dtype == np.float32 else np.empty(batch_rows * width, dtype=np.float32)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._offset + start_row * width * self.dtype.itemsize)
            for start in range(start_row, self.n_rows, batch_rows):
                n = min(batch_rows, self.n_rows - start)
                view = memoryview(raw.view(np.uint8))[: n * width * self.dtype.itemsize]
                got = _read_fully(f, view)
                if got != len(view):
                    raise InputError(f"{self.path}: truncated in rows {start}-{start + n - 1}")
                values = out[: n * width].reshape(n, width)
                if out is not raw:
                    np.copyto(values, raw[: n * width].reshape(n, width), casting="unsafe")
                yield Batch(start, values)

    def _fortran_batches(self, batch_rows: int, start_row: int) -> Iterator[Batch]:
        """Column-major rows, gathered from a memory map into one reused buffer: a batch
        reads a contiguous run of each column; the map's pages are the file's, which the
        system can drop again."""
        width = self.n_values
        out = np.empty(batch_rows * width, dtype=np.float32)
        columns = np.load(self.path, mmap_mode="r", allow_pickle=False)
        for start in range(start_row, self.n_rows, batch_rows):
            n = min(batch_rows, self.n_rows - start)
            values = out[: n * width].reshape(n, width)
            np.copyto(values.reshape(n, *self.sample_shape), columns[start:start + n], casting="unsafe")
            yield Batch(start, values)


def _buffer_rows(batch_rows: int, n_rows: int, start_row: int) -> int:
    """Rows a reader's reused buffer needs: a batch, but no more than the rows left to read."""
    return max(min(batch_rows, n_rows - start_row), 1)


def _read_fully(f, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


# --- IDX (MNIST, Fashion-MNIST, KMNIST) -------------------------------------------------------

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def is_idx(path: Path) -> bool:
    """IDX files have no standard suffix; recognise the usual names, then the magic bytes."""
    name = path.name.lower()
    if "-ubyte" in name or name.endswith((".idx", ".idx.gz")) or "idx1" in name or "idx3" in name:
        return True
    try:
        head = _open_maybe_gz(path).read(4)
    except (OSError, EOFError):
        return False
    return len(head) == 4 and head[:2] == b"\0\0" and head[2] in _IDX_DTYPES and 1 <= head[3] <= 4


def _open_maybe_gz(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb", buffering=0)


def read_idx_header(f, path) -> tuple[np.dtype, tuple[int, ...], int]:
    head = f.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or not 1 <= head[3] <= 4:
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    ndim = head[3]
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise InputError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    return _IDX_DTYPES[head[2]], tuple(int(d) for d in dims), 4 + 4 * ndim


class IdxReader(Reader):
    def __init__(self, path: Path):
        self.path = path
        try:
            with _open_maybe_gz(path) as f:
                self.dtype, dims, self._offset = read_idx_header(f, path)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: unreadable IDX file ({e})") from None
        self.n_rows = dims[0]
        self.sample_shape = dims[1:] or (1,)
        self.is_labels = len(dims) == 1  # one value per row: MNIST's label files

    def _batches(self, batch_rows: int, start_row: int) -> Iterator[Batch]:
        width, batch_rows = self.n_values, _buffer_rows(batch_rows, self.n_rows, start_row)
        raw = np.empty(batch_rows * width, dtype=self.dtype)
        out = np.empty(batch_rows * width, dtype=np.float32)
        try:
            with _open_maybe_gz(self.path) as f:
                f.seek(self._offset + start_row * width * self.dtype.itemsize)  # gzip: decompresses up to it
                for start in range(start_row, self.n_rows, batch_rows):
                    n = min(batch_rows, self.n_rows - start)
                    view = memoryview(raw.view(np.uint8))[: n * width * self.dtype.itemsize]
                    if _read_fully(f, view) != len(view):
                        raise InputError(f"{self.path}: truncated in rows {start}-{start + n - 1}")
                    values = out[: n * width].reshape(n, width)
                    np.copyto(values, raw[: n * width].reshape(n, width), casting="unsafe")
                    yield Batch(start, values)
        except (EOFError, OSError, gzip.BadGzipFile) as e:
            raise InputError(f"{self.path}: corrupt or truncated ({e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a whole IDX file in its own dtype (uint8 images stay uint8: 4x less memory)."""
    path = Path(path)
    try:
        with _open_maybe_gz(path) as f:
            dtype, dims, _ = read_idx_header(f, path)
            data = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: corrupt or truncated ({e})") from None
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) < expected:
        raise InputError(f"{path}: truncated: {len(data)} of {expected} data bytes")
    return np.frombuffer(data[:expected], dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


# --- tabular: Parquet and CSV -----------------------------------------------------------------

def _select_columns(path, schema_names, types, feature_names, label_column, ignore_columns, *,
                    can_ignore: bool = True, kept_columns: Sequence[str] = (), vector_width=None):
    """The feature names, checked: columns, and a vector column's elements ``emb[0]``, ... (see
    :mod:`.vector_columns`; ``vector_width(column)`` gives a variable-length one's when training).
    ``can_ignore``: the caller has an --ignore-column to offer."""
    import pyarrow as pa

    names = list(schema_names)
    type_of = dict(zip(names, types))  # dict and set lookups: a table may have 10,000 columns
    repeated = sorted(c for c, n in Counter(names).items() if n > 1)
    if repeated:
        raise InputError(f"{path}: column names repeat ({', '.join(map(repr, repeated[:5]))}); each column "
                         "needs its own name")
    for col in [label_column, *ignore_columns, *kept_columns]:
        if col is not None and col not in type_of:
            more = f", ... ({len(names)} in all)" if len(names) > 20 else ""
            raise InputError(f"{path}: no column named {col!r} (columns: {', '.join(map(repr, names[:20]))}{more})")
    if feature_names is not None:
        read = [c for c in ignore_columns if c in feature_names]
        if read:  # ignoring it would be silent: the model reads it whatever the option says
            raise InputError(f"{path}: column {read[0]!r} is a feature the model reads; it cannot be ignored")
        sources = [source_column(c, type_of) for c in feature_names]
        missing = [c for c, (source, _) in zip(feature_names, sources) if source not in type_of]
        if missing:
            raise InputError(f"{path}: missing feature columns the model expects: {', '.join(missing[:10])}")
        features = list(feature_names)
        columns = list(dict.fromkeys(source for source, _ in sources))
        for (source, element), c in zip(sources, feature_names):
            if element is not None and not is_vector_type(type_of[source]):
                raise InputError(f"{path}: column {source!r} is {type_of[source]}, not a vector of numbers "
                                 f"(the model reads {c!r} of it)")
    else:
        skipped = {label_column, *ignore_columns, *kept_columns}
        columns = [c for c in names if c not in skipped]
        features = []
        for c in columns:
            t = type_of[c]
            if is_vector_type(t):
                width = t.list_size if pa.types.is_fixed_size_list(t) else vector_width and vector_width(c)
                if not width:
                    raise InputError(f"{path}: column {c!r} holds vectors of no fixed width")
                features += element_names(c, width)
            else:
                features.append(c)
        clash = sorted(c for c, n in Counter(features).items() if n > 1)
        if clash:  # a vector column "emb" beside a column named "emb[0]"
            raise InputError(f"{path}: feature names repeat ({', '.join(map(repr, clash[:5]))}): a vector column's "
                             "elements are named like another column; rename one")
    if not features:
        raise InputError(f"{path}: no feature columns")
    for c in columns:
        t = type_of[c]
        if is_vector_type(t):
            continue
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or pa.types.is_null(t) or pa.types.is_decimal(t)):
            if any(sep in c for sep in ";\t|") and len(features) == 1:
                hint = " (is the file separated by something other than commas? CSV inputs use commas)"
            elif feature_names is not None:
                hint = " (the model was trained on it as a number)"
            else:
                hint = f" (pass --ignore-column {c} to skip it)" if can_ignore else \
                    " (the model reads every column as a feature: remove it from the input)"
            raise InputError(f"{path}: column {c!r} is {t}, not numeric{hint}")
    return features


def table_to_matrix(table, features: Sequence[str], where: str = "", start: int = 0) -> np.ndarray:
    """The ``features`` of a pyarrow Table (checked by ``_select_columns``) as a new, writable
    float32 (rows, len(features)) array; missing values become NaN. Shared by the Parquet and
    CSV readers and the Ray engine, so every engine converts values the same way. ``where`` and
    ``start`` (the file and its first row here) name a vector of the wrong length."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.empty((table.num_rows, len(features)), dtype=np.float32)
    names = set(table.column_names)
    elements = [source_column(c, names) for c in features]
    widths = element_widths(elements)
    vectors = {}
    for j, (c, (source, element)) in enumerate(zip(features, elements)):
        if element is not None:
            if source not in vectors:
                vectors[source] = vector_rows(table.column(source), source, widths[source], where, start)
            values[:, j] = vectors[source][:, element]
            continue
        col = table.column(c)
        if table.num_rows > 1 and (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)) \
                and col.type.bit_width > 32 and c not in _RESOLUTION_CHECKED:
            _RESOLUTION_CHECKED.add(c)  # on a column's first rows only: each check costs as much as converting it
            low_high = pc.min_max(col)
            warn_if_unresolved(c, low_high["min"].as_py(), low_high["max"].as_py())
        values[:, j] = col.to_numpy(zero_copy_only=False) if col.null_count == 0 else \
            col.cast("double").fill_null(float("nan")).to_numpy(zero_copy_only=False)
    return values


_RESOLUTION_CHECKED: set = set()  # table columns checked by warn_if_unresolved, once a process


def warn_if_unresolved(name, low, high) -> None:
    """Warn when a column's values vary by less than float32 tells apart at their size: rows
    are float32 from here on, so epoch-millisecond times (float32 steps of 131,072 ms around
    1.7e12) or large ids lose what sets them apart, and a model learns nothing from them."""
    if low is None or high is None or not high > low:
        return
    step = float(np.spacing(np.float32(max(abs(low), abs(high)))))
    if high - low < 16 * step:
        log.warning("column %r: its values (%.12g to %.12g) vary by less than 16 float32 steps of %.3g at that size; "
                    "subtract an offset first (such as the column's minimum) or leave the column out", name, low,
                    high, step)


def _table_to_batch(path, table, features, label_column, start, kept_columns=(), kept_types=()) -> Batch:
    values = table_to_matrix(table, features, f"{path}: ", start)
    labels = column_values(table.column(label_column)) if label_column is not None else None
    kept = tuple(_kept_values(table.column(c), t) for c, t in zip(kept_columns, kept_types))
    return Batch(start, values, labels, kept)


def _kept_values(column, kept_type):
    """A kept column's values as one pyarrow array of the input's ``kept_type``: ids pass
    through untouched (binary keys keep their NUL bytes, time stamps their zone, decimals their
    scale), which a trip through numpy would not do."""
    values = column.combine_chunks()
    return values if values.type == kept_type else values.cast(kept_type)


def column_values(column) -> np.ndarray:
    """A label or kept (id) column's values as numpy, each row its own value: a missing one is
    None in an object array. pyarrow's ``to_numpy`` would turn an int column with a null into
    float64 (large ids lose digits; the null becomes NaN) and ignores which entries of a
    dictionary (pandas categorical) column are null (another row's value shows through)."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if column.null_count:
        return np.array(column.to_pylist(), dtype=object)
    return column.to_numpy(zero_copy_only=False)


def pandas_index_columns(schema) -> list[str]:
    """Columns pandas' ``to_parquet`` stored its index in (``__index_level_0__`` for a filtered
    frame): row labels, not features."""
    try:
        meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
    except ValueError:
        return []
    return [c for c in meta.get("index_columns", []) if isinstance(c, str)]


class ParquetReader(Reader):
    """Reads row groups in batches. The file is opened per pass, not held: a data set may have
    more parts than the process may have open files."""

    def __init__(self, path, feature_names, label_column, ignore_columns, *, can_ignore: bool = True,
                 kept_columns: Sequence[str] = ()):
        self.path = path
        with self._open() as f:
            schema, self._metadata = f.schema_arrow, f.metadata
        index = [c for c in pandas_index_columns(schema)
                 if c != label_column and c not in ignore_columns and c not in kept_columns]
        if feature_names is None and not index:
            index = _unnamed_index(path, schema.names, [label_column, *ignore_columns, *kept_columns])
        self.features = _select_columns(path, schema.names, schema.types, feature_names, label_column,
                                        [*ignore_columns, *index], can_ignore=can_ignore, kept_columns=kept_columns,
                                        vector_width=self._first_width)
        names = set(schema.names)
        self._columns = list(dict.fromkeys(source_column(c, names)[0] for c in self.features))
        self.label_column, self.kept_columns = label_column, tuple(kept_columns)
        self.kept_types = tuple(schema.field(c).type for c in self.kept_columns)
        self.n_rows = self._metadata.num_rows
        self.sample_shape = (len(self.features),)

    def _first_width(self, column: str) -> int:
        """A variable-length vector column's width, from its first vector (only for features)."""
        with self._open() as f:
            return first_width(self.path, column, f.iter_batches(batch_size=1024, columns=[column]))

    def _open(self):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError variants
            raise InputError(f"{self.path}: not a readable Parquet file ({_short(e)})") from None

    def _batches(self, batch_rows: int, start_row: int) -> Iterator[Batch]:
        with self._open() as file:
            yield from self._row_groups(file, batch_rows, start_row)

    def _row_groups(self, file, batch_rows: int, start_row: int) -> Iterator[Batch]:
        import pyarrow as pa

        # once each: a kept column may also be a feature
        columns = list(dict.fromkeys([*self._columns, *([self.label_column] if self.label_column else []),
                                      *self.kept_columns]))
        start = 0
        for rg in range(self._metadata.num_row_groups):
            rg_rows = self._metadata.row_group(rg).num_rows
            if start + rg_rows <= start_row:  # done before: skip without decoding
                start += rg_rows
                continue
            try:
                for rb in file.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=columns):
                    if start < start_row:
                        skip = min(start_row - start, rb.num_rows)
                        rb, start = rb.slice(skip), start + skip
                        if rb.num_rows == 0:
                            continue
                    yield _table_to_batch(self.path, pa.Table.from_batches([rb]), self.features,
                                          self.label_column, start, self.kept_columns, self.kept_types)
                    start += rb.num_rows
            except InputError:
                raise
            except Exception as e:
                raise InputError(f"{self.path}: row group {rg} (from row {start}) is corrupt ({_short(e)})") from None


class CsvReader(Reader):
    """Comma-separated rows with a header line, or without one: a first line of numbers only
    (as ``numpy.savetxt`` writes) is a row, and the columns are named "0", "1", ... as pandas
    names a frame's columns by default."""

    def __init__(self, path, feature_names, label_column, ignore_columns, *, can_ignore: bool = True,
                 kept_columns: Sequence[str] = ()):
        import pyarrow as pa

        self.path = path
        self._feature_names, self.label_column, self.kept_columns = feature_names, label_column, tuple(kept_columns)
        self._column_names = None
        schema = self._open().schema
        names = _header_names(path, schema)
        if len(names) == 1 and any(sep in names[0] for sep in ";\t|"):
            raise InputError(f"{path}: one column named {names[0][:60]!r}: is the file separated by something other "
                             "than commas? CSV inputs use commas (and a point for decimals)")
        if _first_line_is_data(path, names, feature_names):
            self._column_names = [str(i) for i in range(len(names))]
            schema = self._open().schema
            names = schema.names
        if feature_names is None:
            ignore_columns = [*ignore_columns, *_unnamed_index(path, names, [label_column, *ignore_columns,
                                                                             *kept_columns])]
        _refuse_text_in_numbers(path, self._open, names, schema.types, feature_names,
                                [label_column, *ignore_columns, *kept_columns])
        self.features = _select_columns(path, schema.names, schema.types, feature_names, label_column,
                                        ignore_columns, can_ignore=can_ignore, kept_columns=kept_columns)
        # Types are inferred from the first block only: read features as float64 so that a
        # later "1.5" in a column of integers is a value, not an error (booleans stay booleans).
        type_of = dict(zip(schema.names, schema.types))
        self._types = {c: pa.float64() for c in self.features if not pa.types.is_boolean(type_of[c])}
        for c in (label_column, *self.kept_columns):
            if c is not None and c not in self.features:
                # A label or an id is text: as a number, "00123" would lose its zeros, and a
                # word after the first block would fail a column inferred as numbers.
                self._types[c] = pa.string()
        self.kept_types = tuple(self._types.get(c, type_of[c]) for c in self.kept_columns)
        self.n_rows = None
        self.sample_shape = (len(self.features),)

    def _open(self, column_types: dict | None = None):
        import pyarrow.csv as pcsv

        try:
            return pcsv.open_csv(self.path, read_options=pcsv.ReadOptions(block_size=1 << 22,
                                                                          column_names=self._column_names),
                                 convert_options=pcsv.ConvertOptions(column_types=column_types))
        except Exception as e:
            if "Expected 1 columns, got" in str(e):  # "a;b;c" over "0,5;1,25;2": a European CSV
                raise InputError(f"{self.path}: its header is one column and its rows are more: is the file separated "
                                 "by something other than commas? CSV inputs use commas (and a point for decimals)") \
                    from None
            raise InputError(f"{self.path}: not a readable CSV file ({_short(e)})") from None

    def _batches(self, batch_rows: int, start_row: int) -> Iterator[Batch]:
        import pyarrow as pa

        reader = self._open(self._types)
        start = 0
        while True:
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                return
            except Exception as e:
                raise InputError(f"{self.path}: {_bad_value(e, reader.schema.names)} (after row {start})") from None
            if start < start_row:
                skip = min(start_row - start, rb.num_rows)
                rb, start = rb.slice(skip), start + skip
            for off in range(0, rb.num_rows, batch_rows):
                part = pa.Table.from_batches([rb.slice(off, batch_rows)])
                yield _table_to_batch(self.path, part, self.features, self.label_column, start, self.kept_columns,
                                      self.kept_types)
                start += part.num_rows


# What pandas names a frame's unnamed first column: its row index, written by to_csv ("") and
# read back by read_csv ("Unnamed: 0").
PANDAS_INDEX_NAMES = ("", "Unnamed: 0")
_INTEGER = r"^[+-]?[0-9]+$"


def _unnamed_index(path, names: Sequence[str], named: Sequence[str]) -> list[str]:
    """A first column without a name, which is a row index pandas wrote, as a column to leave
    out of the features: taken as one, a model would cluster partly by row number."""
    if not names or names[0] not in PANDAS_INDEX_NAMES or names[0] in named:
        return []
    log.warning("%s: its first column has no name (%r): taken as the row index pandas writes "
                "(to_csv without index=False) and left out", path, names[0])
    return [names[0]]


def _header_names(path, schema) -> list[str]:
    try:
        return list(schema.names)
    except UnicodeDecodeError:
        raise InputError(f"{path}: its header is not UTF-8 text (save the CSV as UTF-8)") from None


def _first_line_is_data(path, names: Sequence[str], feature_names: Sequence[str] | None) -> bool:
    """Whether a CSV's first line is a row of numbers (``numpy.savetxt`` writes no header) rather
    than a header of numeric names (wavelengths, years, channels 1..n).

    Names "0".."n-1" are pandas' defaults, so a header. A model's feature names decide for it
    when they are on the line (a model trained without a header reads every line as a row).
    Otherwise whole numbers counting up over values that are not all whole are a header, and
    other lines rows; either guess is said in a warning when the line could be the other.
    """
    import re

    if list(names) == [str(i) for i in range(len(names))]:
        return False
    for name in names:
        try:
            float(name)
        except ValueError:
            return False
    shown = ",".join(names[:6]) + (",..." if len(names) > 6 else "")
    if feature_names is not None:
        if list(feature_names) == [str(i) for i in range(len(feature_names))]:
            return True  # trained without a header: a row of 1,0 is a row, not those names reordered
        return not set(feature_names) <= set(names)
    integers = [int(n) for n in names if re.match(_INTEGER, n.strip())]
    if len(integers) != len(names) or any(b <= a for a, b in zip(integers, integers[1:])):
        return True  # a header of numbers counts up: wavelengths, years, channels 1..n
    if _later_values_are_integers(path, len(names)):
        log.warning("%s: its first line (%s) is read as a row of data, as every value below it is an integer too; "
                    "if it is a header, name the columns with words", path, shown)
        return True
    log.warning("%s: its first line (%s) is read as column names: whole numbers counting up, over values that are not "
                "all whole; if it is a row of data, add a header line", path, shown)
    return False


def _later_values_are_integers(path, n_columns: int) -> bool:
    """Whether every value below the first line, in the file's first block, is an integer."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    names = [f"c{i}" for i in range(n_columns)]
    try:
        block = pcsv.open_csv(path, read_options=pcsv.ReadOptions(column_names=names, skip_rows=1,
                                                                   block_size=1 << 20),
                              convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in names}))
        batch = block.read_next_batch()
    except Exception:  # an empty or unreadable rest: the reader says what is wrong
        return True
    for column in batch.columns:
        text = pc.utf8_trim_whitespace(column)
        if pc.all(pc.or_(pc.equal(text, ""), pc.match_substring_regex(text, _INTEGER))).as_py() is False:
            return False  # blanks (missing values) say nothing either way
    return True


def _refuse_text_in_numbers(path, open_csv, names, types, feature_names, not_features) -> None:
    """A column of numbers holding one marker pyarrow does not read as missing ("None", "?")
    is inferred as text; name the value and its row, rather than call the column text and
    suggest leaving it out."""
    import pyarrow as pa

    wanted = None if feature_names is None else set(feature_names)
    candidates = [i for i, (c, t) in enumerate(zip(names, types)) if pa.types.is_string(t) and c not in not_features
                  and (wanted is None or c in wanted)]
    if not candidates:
        return
    try:
        batch = open_csv().read_next_batch()
    except Exception:
        return
    for i in candidates:
        values = batch.column(i).to_pylist()
        numbers, first_bad = 0, None
        for row, v in enumerate(values):
            try:
                float(v)
                numbers += 1
            except (TypeError, ValueError):
                if v is not None and first_bad is None:
                    first_bad = (row, v)
        if first_bad is not None and numbers >= len(values) / 2:
            row, v = first_bad
            raise InputError(f"{path}: column {names[i]!r}, row {row}: {v[:40]!r} is not a number (missing values "
                             "are refused: fill or drop such rows)")


def _bad_value(e: Exception, names: Sequence[str]) -> str:
    """pyarrow's "In CSV column #3: CSV conversion error to double: invalid value 'None'", said
    with the column's name."""
    import re

    m = re.search(r"CSV column #(\d+): CSV conversion error to \w+: invalid value '(.*)'", str(e))
    if m and int(m.group(1)) < len(names):
        return f"column {names[int(m.group(1))]!r}: {m.group(2)[:40]!r} is not a number"
    return f"bad value ({_short(e)})"


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


# --- image folders ------------------------------------------------------------------------------

def image_files(folder: Path) -> list[Path]:
    """PNG and JPEG files under ``folder``, recursively, in a stable (sorted) order; hidden
    files and folders (``.ipynb_checkpoints``, macOS' ``._*``) are not images of the set."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_image(path: Path) -> np.ndarray:
    """An image as uint8: (H, W) for grey-scale and palette images, (H, W, 3) otherwise."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a base dependency
        raise InputError("image inputs need Pillow: pip install pillow") from None
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):  # 16-bit grey: scale to 8 bits (convert("L") would clip)
                wide = np.asarray(im, dtype=np.uint16)
                return ((wide.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
            im = im.convert("L" if im.mode in ("L", "1", "P") else "RGB")
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable image ({_short(e)})") from None


class ImageFolderReader(Reader):
    """Every PNG/JPEG under a folder (sorted), one row per image; all of one size."""

    def __init__(self, path: Path):
        self.path = path
        self._files = image_files(path)
        if not self._files:
            raise InputError(f"{path}: no PNG or JPEG images")
        self.n_rows = len(self._files)
        self.sample_shape = read_image(self._files[0]).shape

    @property
    def files(self) -> list[Path]:
        return self._files

    def _batches(self, batch_rows: int, start_row: int) -> Iterator[Batch]:
        out = np.empty((_buffer_rows(batch_rows, self.n_rows, start_row), self.n_values), dtype=np.float32)
        for start in range(start_row, self.n_rows, batch_rows):
            n = min(batch_rows, self.n_rows - start)
            for i, f in enumerate(self._files[start:start + n]):
                img = read_image(f)
                if img.shape != self.sample_shape:
                    raise InputError(f"{f}: image shape {img.shape} differs from {self.sample_shape} "
                                     "(all images must have one size)")
                out[i] = img.reshape(-1)
            yield Batch(start, out[:n])
