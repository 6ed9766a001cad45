"""A resumable batch scoring job: stream inputs through an Assigner into one atomic output file.

The job cuts the input into chunks of ``chunk_rows`` rows. Each finished chunk's results are
saved (atomically) in a hidden work folder beside the output, ``.OUTPUT.deepclust-job/``,
together with a fingerprint of the job (inputs' sizes, mtimes and sampled bytes, bundle,
options). When every chunk is done the output is assembled from the chunks, in order, into a
temporary file that is renamed into place. So:

- the output appears only when complete;
- an interrupted run (Ctrl-C, kill, crash) restarted with the same arguments skips the chunks
  it has and writes a file byte-identical to an uninterrupted run's (both are assembled the
  same way from the same chunks);
- bad input stops the job with an error naming the file and row, and removes the work folder;
- a second run writing the same output at the same time is refused, whatever its options.

Chunks are whole numbers of encoder calls (``chunk_rows`` is rounded up to a multiple of the
call size), so the calls, and with them the results to the last bit, do not depend on
``chunk_rows`` or on the read batch size.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .assigner import Assigner
from .errors import InputError
from .readers import DEFAULT_BATCH_ROWS, open_inputs
from .writers import ResultWriter

log = logging.getLogger("deepclust")

DEFAULT_CHUNK_ROWS = 65_536
JOB_VERSION = 2  # 2: kept columns saved as Arrow, not numpy
_FIELDS = ("labels", "distances", "soft", "embeddings")  # then kept_0, kept_1, ...: the kept columns
_KEPT = "kept"  # a chunk's kept columns: one Arrow IPC stream, stored as bytes


@dataclass
class ScoringReport:
    rows: int
    seconds: float
    output: Path
    resumed_rows: int = 0

    @property
    def rows_per_second(self) -> float:
        scored = self.rows - self.resumed_rows
        return scored / self.seconds if self.seconds > 0 else float("inf")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job; the finished chunks are kept for a rerun to resume from."""

    def __init__(self, output: Path, rows_done: int, total: int | None):
        self.output, self.rows_done, self.total = output, rows_done, total
        of = f" of {total}" if total is not None else ""
        super().__init__(f"interrupted after {rows_done}{of} rows; run the same command again to resume")


def work_dir_for(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(f".{output.name}.deepclust-job")


def lock_work_dir(path: Path):
    """Create an output's work folder (:func:`work_dir_for`) and lock it: one job writes an
    output at a time, on either engine, and what a killed job left there is the next one's to
    remove. Returns the open lock file; closing it releases the lock."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: a file is where this output's work folder goes; remove it")
    path.mkdir(exist_ok=True)
    lock = open(path / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        lock.close()
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise InputError(f"{path}: another deepclust assign is writing this output now") from None
        raise
    return lock


def score_file(assigner: Assigner, inputs: str | os.PathLike | Sequence[str | os.PathLike],
               output_path: str | os.PathLike, *, soft: bool = False, embeddings: bool = False,
               overwrite: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
               chunk_rows: int = DEFAULT_CHUNK_ROWS, resume: bool = True, keep_columns: Sequence[str] = (),
               on_progress: Callable[[int, int | None], None] | None = None) -> ScoringReport:
    """Score every row of ``inputs`` (a file, a folder, or a list of them) into ``output_path``
    (.parquet, .npy or .csv), resuming a previous interrupted run of the same job unless
    ``resume`` is False. Memory stays at a few batches whatever the input size.
    ``keep_columns``: columns of table inputs (ids) copied into the output before the results.
    ``on_progress(rows_done, total_rows_or_None)`` is called after each batch."""
    output = Path(output_path)
    manifest = assigner.manifest
    chunk_rows = aligned_chunk_rows(chunk_rows, assigner.batch_size)
    keep_columns = tuple(keep_columns)
    sink = ResultWriter.check_target(output, overwrite=overwrite, kept=keep_columns)
    reader = open_inputs(inputs, feature_names=manifest.input.feature_names, kept=keep_columns)
    if output.exists() and any(output.resolve() == f.resolve() for f in reader.files):
        raise InputError(f"{output}: is also an input; write the results elsewhere")
    if reader.n_values != manifest.input.n_features:
        raise InputError(assigner.shape_error(reader.path, reader.sample_shape))
    work = work_dir_for(output)
    job = {"version": JOB_VERSION, "inputs": reader.fingerprint(), "bundle": _bundle_id(assigner),
           "precision": assigner.precision, "soft": soft, "embeddings": embeddings,
           "batch_rows": batch_rows, "chunk_rows": chunk_rows, "format": sink}
    if keep_columns:  # absent otherwise, so that jobs from before them still resume
        job["keep_columns"] = list(keep_columns)
    t0 = time.perf_counter()
    fields = _FIELDS + tuple(f"kept_{i}" for i in range(len(keep_columns)))
    with _JobFolder(work, job, resume, fields) as folder:
        done_chunks = folder.completed_chunks()
        start = min(done_chunks * chunk_rows, reader.n_rows if reader.n_rows is not None else 1 << 62)
        if start:
            log.info("resuming %s: %d rows already scored", output, start)
        row = start
        parts: list = []
        kept = _KeptRows(keep_columns)
        try:
            values = (kept.push(b) for b in reader.batches(batch_rows, start_row=start))
            for x in scoring_calls(values, start, assigner.batch_size, chunk_rows):
                if row == start:
                    assigner.check_scale(x, reader.path)
                result = assigner._assign_prepared(x, soft, embeddings)
                arrays = (result.labels, result.distances, result.soft, result.embeddings, *kept.take(len(x)))
                offset = 0
                while offset < len(x):  # a batch may cross a chunk boundary
                    take = min(len(x) - offset, chunk_rows - (row % chunk_rows))
                    parts.append([a[offset:offset + take] if a is not None else None for a in arrays])
                    offset, row = offset + take, row + take
                    if row % chunk_rows == 0:
                        folder.save_chunk(row // chunk_rows - 1, parts)
                        parts = []
                if on_progress is not None:
                    on_progress(row, reader.n_rows)
            if parts:
                folder.save_chunk(row // chunk_rows, parts)
        except InputError:
            folder.discard()  # the reader's message names the file and the row
            raise
        except KeyboardInterrupt:
            raise Interrupted(output, row - row % chunk_rows, reader.n_rows) from None
        writer = ResultWriter(output, k=manifest.k, latent_dim=manifest.latent_dim, soft=soft,
                              embeddings=embeddings, overwrite=overwrite, temp_path=work / f"output{output.suffix}",
                              kept=keep_columns)
        try:
            with writer:
                for arrays in folder.chunks():
                    writer.write(*arrays[:len(_FIELDS)], kept=arrays[len(_FIELDS):])
        except KeyboardInterrupt:  # every chunk is kept: a rerun only assembles
            raise Interrupted(output, row, reader.n_rows) from None
        folder.discard()
    return ScoringReport(rows=writer.rows, seconds=time.perf_counter() - t0, output=output, resumed_rows=start)


class _KeptRows:
    """The kept columns' values (pyarrow arrays) of rows read but not yet scored: reading runs
    ahead of the encoder calls, which take rows in order."""

    def __init__(self, columns: Sequence[str]):
        self.columns, self.parts, self.first = tuple(columns), [], 0

    def push(self, batch) -> np.ndarray:
        if self.columns:
            for name, values in zip(self.columns, batch.kept):
                if values.null_count:
                    row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
                    raise InputError(f"kept column {name!r}: row {batch.start + row} has no value")
            self.parts.append(batch.kept)
        return batch.values

    def take(self, n: int) -> tuple:
        """The next ``n`` rows' values, one pyarrow array per kept column."""
        import pyarrow as pa

        if not self.columns:
            return ()
        taken = []
        while n:
            part = [values[self.first:self.first + n] for values in self.parts[0]]
            taken.append(part)
            n -= len(part[0])
            self.first += len(part[0])
            if self.first == len(self.parts[0][0]):
                self.parts.pop(0)
                self.first = 0
        return tuple(pa.concat_arrays(column) for column in zip(*taken))


def aligned_chunk_rows(chunk_rows: int, call_rows: int) -> int:
    """``chunk_rows`` rounded up to a whole number of encoder calls of ``call_rows`` rows."""
    if chunk_rows < 1 or call_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} and call_rows={call_rows} should be >= 1")
    return -(-int(chunk_rows) // int(call_rows)) * int(call_rows)


def scoring_calls(values: Iterable[np.ndarray], start_row: int, call_rows: int,
                  chunk_rows: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of row batches that starts at ``start_row`` (a chunk boundary) into the
    arrays scored in one encoder call each: ``call_rows`` rows, restarting at every chunk
    boundary. So every job over the same rows makes the same calls, whatever the read batch
    size, wherever it resumed, and on either engine. That matters because onnxruntime's float
    results depend, in the last bit, on the size of the call a row is in (measured: 1- and
    7-row calls vs one large call); labels did not change, but resumed outputs must be
    byte-identical. Yields writable arrays (scoring preprocesses in place): a slice of the
    batch when a whole call lies inside it, else a gathered copy, so readers may reuse their
    buffers."""
    row, buf, fill, size = start_row, None, 0, 0
    for x in values:
        off = 0
        while off < len(x):
            if fill == 0:
                size = min(call_rows, chunk_rows - row % chunk_rows)
                if len(x) - off >= size:  # a whole call inside this batch: no gathering needed
                    part = x[off:off + size]
                    yield part if part.flags.writeable else part.copy()
                    off, row = off + size, row + size
                    continue
                buf = np.empty((size, x.shape[1]), dtype=np.float32)
            take = min(size - fill, len(x) - off)
            buf[fill:fill + take] = x[off:off + take]
            fill, off, row = fill + take, off + take, row + take
            if fill == size:
                yield buf
                fill = 0
    if fill:
        yield buf[:fill]


def _bundle_id(assigner: Assigner) -> str:
    """The manifest lists every file's sha256, so its own hash identifies the whole bundle."""
    return hashlib.sha256(assigner.manifest.to_json().encode()).hexdigest()


class _JobFolder:
    """The work folder: the job's fingerprint, finished chunks, and a lock against a second
    process running the same job at once."""

    def __init__(self, path: Path, job: dict, resume: bool, fields: tuple[str, ...] = _FIELDS):
        self.path, self.job, self.resume, self.fields = path, job, resume, fields
        self._lock = None

    def __enter__(self) -> "_JobFolder":
        # Lock first: what is in the folder may belong to a run still writing it.
        self._lock = lock_work_dir(self.path)
        spec = self.path / "job.json"
        same, left = False, [p for p in self.path.iterdir() if p.name != "lock"]
        try:
            same = json.loads(spec.read_text()) == self.job
        except (OSError, ValueError):
            pass
        if not (same and self.resume):
            if self.resume and left:
                log.warning("%s: left by a run with other arguments or inputs; starting afresh", self.path)
            for p in left:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            _atomic_write(spec, json.dumps(self.job, indent=1).encode())
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.close()

    def _chunk(self, i: int) -> Path:
        return self.path / f"chunk-{i:07d}.npz"

    def completed_chunks(self) -> int:
        n = 0
        while self._chunk(n).exists():
            n += 1
        return n

    def save_chunk(self, i: int, parts: list) -> None:
        n = len(_FIELDS)
        arrays = {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(self.fields[:n])
                  if parts[0][j] is not None}
        if len(self.fields) > n:
            arrays[_KEPT] = _arrow_bytes(self.fields[n:], [[p[j] for p in parts] for j in range(n, len(self.fields))])
        tmp = self.path / f".chunk-{i:07d}.tmp.npz"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._chunk(i))

    def chunks(self):
        n = len(_FIELDS)
        for i in range(self.completed_chunks()):
            with np.load(self._chunk(i), allow_pickle=False) as z:
                kept = _arrow_columns(z[_KEPT]) if len(self.fields) > n else ()
                yield tuple(z[name] if name in z.files else None for name in self.fields[:n]) + kept

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _arrow_bytes(names: Sequence[str], columns: Sequence[Sequence]) -> np.ndarray:
    """Kept columns as an Arrow IPC stream in a uint8 array: saved in a chunk's .npz, the
    values keep their exact types (no pickles, and no numpy strings, which drop NUL bytes)."""
    import pyarrow as pa

    table = pa.table([pa.concat_arrays(list(c)) for c in columns], names=list(names))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return np.frombuffer(sink.getvalue(), dtype=np.uint8)


def _arrow_columns(data: np.ndarray) -> tuple:
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.py_buffer(data.tobytes())).read_all()
    return tuple(c.combine_chunks() for c in table.columns)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
