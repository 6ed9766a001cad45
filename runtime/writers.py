"""Incremental, atomic result writers: the output appears only when the job completes.

Rows are appended batch by batch to a hidden temporary file beside the target, which is
renamed into place by ``commit``; any error (or Ctrl-C) removes it, so a failed job leaves
no partial output behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError

FORMATS = (".parquet", ".npy", ".csv")


RESULT_COLUMNS = ("label", "distance", "soft", "embedding")


class ResultWriter:
    """Writes ``label``, ``distance`` and optionally ``soft`` (k) and ``embedding`` (d) per row,
    after the input columns named in ``kept`` (ids to join the results back by), when given.

    Use as a context manager: leaving the block normally commits, an exception aborts.
    """

    def __init__(self, path: str | os.PathLike, *, k: int, latent_dim: int, soft: bool = False,
                 embeddings: bool = False, overwrite: bool = False, temp_path: str | os.PathLike | None = None,
                 kept: Sequence[str] = ()):
        self.path = Path(path)
        kept = tuple(kept)
        suffix = self.check_target(self.path, overwrite=overwrite, kept=kept)
        self.k, self.latent_dim, self.soft, self.embeddings, self.kept = k, latent_dim, soft, embeddings, kept
        # The temporary file must be on the output's file system, for the final rename.
        self.tmp = Path(temp_path) if temp_path else self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self.rows = 0
        self._impl = {".parquet": _ParquetSink, ".npy": _NpySink, ".csv": _CsvSink}[suffix](self)

    @staticmethod
    def check_target(path: Path, *, overwrite: bool = False, kept: Sequence[str] = ()) -> str:
        """Refuse an output that cannot be written; return its format (the suffix)."""
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise InputError(f"{path}: unknown output format {suffix or '(none)'} (use .parquet, .npy or .csv)")
        if kept and suffix == ".npy":
            raise InputError(f"{path}: a kept column needs a .parquet or .csv output (a .npy record's fields have "
                             "one width for the whole file)")
        check_kept_names(kept, flat=suffix == ".csv")
        if path.is_dir():
            raise InputError(f"{path}: is a folder; the output is one {suffix} file")
        if path.exists() and not overwrite:
            raise InputError(f"{path}: already exists (pass --overwrite to replace it)")
        if not path.parent.exists():
            raise InputError(f"{path.parent}: output folder does not exist")
        return suffix

    def write(self, labels: np.ndarray, distances: np.ndarray, soft: np.ndarray | None = None,
              embeddings: np.ndarray | None = None, kept: Sequence[np.ndarray] = ()) -> None:
        self._impl.write(labels.astype(np.int32, copy=False), distances.astype(np.float32, copy=False),
                         soft, embeddings, kept)
        self.rows += len(labels)

    def commit(self) -> Path:
        self._impl.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._impl.close()
        except Exception:
            pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def check_kept_names(kept: Sequence[str], *, flat: bool = True) -> None:
    """Refuse kept columns that would clash in the output: with each other, or with a result
    column (``flat``: also the CSV's ``soft_j`` and ``z_j``)."""
    for name in kept:
        if name in RESULT_COLUMNS or (flat and name.startswith(("soft_", "z_"))):
            raise InputError(f"kept column {name!r}: the output has a column of that name; rename it in the input")
    repeated = sorted({name for name in kept if list(kept).count(name) > 1})
    if repeated:
        raise InputError(f"kept column {repeated[0]!r} given more than once")


def _columns(w: ResultWriter, labels, distances, soft, embeddings, kept=(), *, flat: bool) -> dict:
    cols = dict(zip(w.kept, kept))
    cols.update({"label": labels, "distance": distances})
    if w.soft:
        if flat:
            cols.update({f"soft_{j}": soft[:, j] for j in range(w.k)})
        else:
            cols["soft"] = soft
    if w.embeddings:
        if flat:
            cols.update({f"z_{j}": embeddings[:, j] for j in range(w.latent_dim)})
        else:
            cols["embedding"] = embeddings
    return cols


class _ParquetSink:
    def __init__(self, w: ResultWriter):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.w, self.pa, self.pq = w, pa, pq
        fields = [pa.field("label", pa.int32()), pa.field("distance", pa.float32())]
        if w.soft:
            fields.append(pa.field("soft", pa.list_(pa.float32(), w.k)))
        if w.embeddings:
            fields.append(pa.field("embedding", pa.list_(pa.float32(), w.latent_dim)))
        self.fields, self.schema = fields, None
        self.writer = None
        if not w.kept:
            self._open(pa.schema(fields))

    def _open(self, schema):
        self.schema, self.writer = schema, self.pq.ParquetWriter(self.w.tmp, schema)

    def write(self, labels, distances, soft, embeddings, kept=()):
        pa = self.pa
        ids = [k if isinstance(k, pa.Array) else pa.array(k) for k in kept]
        arrays = [*ids, pa.array(labels), pa.array(distances)]
        if self.writer is None:  # the kept columns' types are the input's, known from the first rows
            self._open(pa.schema([*(pa.field(name, a.type) for name, a in zip(self.w.kept, ids)), *self.fields]))
        for flag, m in ((self.w.soft, soft), (self.w.embeddings, embeddings)):
            if flag:
                m = np.ascontiguousarray(m, dtype=np.float32)
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1]))
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self):
        if self.writer is None and self.schema is None:  # no rows: still a valid, empty file
            self._open(self.pa.schema([*(self.pa.field(name, self.pa.string()) for name in self.w.kept),
                                       *self.fields]))
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _CsvSink:
    def __init__(self, w: ResultWriter):
        self.w = w
        self.writer = None

    def write(self, labels, distances, soft, embeddings, kept=()):
        import pyarrow as pa
        import pyarrow.csv as pcsv

        kept = [_as_text(name, values) for name, values in zip(self.w.kept, kept)]
        table = pa.table(_columns(self.w, labels, distances, soft, embeddings, kept, flat=True))
        if self.writer is None:
            self.writer = pcsv.CSVWriter(self.w.tmp, table.schema)
        self.writer.write_table(table)

    def close(self):
        if self.writer is None:  # no rows: still leave a valid, empty file with a header
            import pyarrow as pa
            import pyarrow.csv as pcsv

            empty = np.empty((0, max(self.w.k, self.w.latent_dim)), np.float32)
            table = pa.table(_columns(self.w, np.empty(0, np.int32), np.empty(0, np.float32), empty, empty,
                                      tuple(np.empty(0, str) for _ in self.w.kept), flat=True))
            pcsv.write_csv(table, self.w.tmp)
        else:
            self.writer.close()
            self.writer = None


def _as_text(name: str, values):
    """A kept column as a CSV can hold it: a categorical's values, and bytes only if they are
    text (a raw UUID is not: a .parquet output keeps it as it is)."""
    import pyarrow as pa

    if not isinstance(values, pa.Array):
        return values
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type) \
            or pa.types.is_fixed_size_binary(values.type):
        try:
            values = values.cast(pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"kept column {name!r} holds bytes that are not text, which a CSV cannot hold: "
                             "write a .parquet output") from None
    return values


class _NpySink:
    """A structured .npy (fields label, distance[, soft, embedding]) whose header is rewritten
    with the final row count on close; the header is padded so its length never changes."""

    def __init__(self, w: ResultWriter):
        fields = [("label", "<i4"), ("distance", "<f4")]
        if w.soft:
            fields.append(("soft", "<f4", (w.k,)))
        if w.embeddings:
            fields.append(("embedding", "<f4", (w.latent_dim,)))
        self.dtype = np.dtype(fields)
        self.w = w
        self.f = open(w.tmp, "wb")
        self.header_len = len(self._header(10**15))
        self.f.write(self._header(0, self.header_len))
        self.rows = 0

    def _header(self, n: int, length: int | None = None) -> bytes:
        body = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                     "shape": (n,)}).encode("latin1")
        pad = (-(10 + len(body) + 1)) % 64 if length is None else length - (10 + len(body) + 1)
        body += b" " * pad + b"\n"
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body

    def write(self, labels, distances, soft, embeddings, kept=()):
        rec = np.empty(len(labels), dtype=self.dtype)
        rec["label"], rec["distance"] = labels, distances
        if self.w.soft:
            rec["soft"] = soft
        if self.w.embeddings:
            rec["embedding"] = embeddings
        self.f.write(rec.tobytes())
        self.rows += len(labels)

    def close(self):
        if self.f.closed:
            return
        self.f.seek(0)
        self.f.write(self._header(self.rows, self.header_len))
        self.f.close()
