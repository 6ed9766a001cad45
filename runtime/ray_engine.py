"""Score with Ray Data: the local engine's reading, conversion and output columns, on a cluster.

Two entry points:

- :func:`assign_dataset` maps a ``ray.data.Dataset`` you already have to a dataset of
  results (lazy, like any Ray Data transform);
- :func:`score_parquet_with_ray` is the batch job behind ``deepclust assign --engine ray``:
  Parquet files in, a folder of Parquet files out, which appears only when complete.

Each Ray actor loads the bundle once and scores batches with the local engine's code (its
Parquet reader or :func:`deepclust.runtime.readers.table_to_matrix`, then ``Assigner``), so both engines give
the same labels, distances, soft assignments and embeddings for the same rows. The bundle is
read and verified on the driver and shipped to the actors: worker nodes need no copy of it.
Input and output paths of :func:`score_parquet_with_ray` must be on storage every node sees.

Ray is imported inside the functions that need it: ``import deepclust.runtime`` stays light.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .assigner import DEFAULT_BATCH_SIZE as CALL_ROWS
from .assigner import Assigner, choose_precision
from .bundle import MANIFEST, Bundle, load_bundle
from .errors import DeepclustError, InputError
from .graph_check import check_graphs
from .readers import ParquetReader, _select_columns, open_inputs, table_to_matrix
from .scoring import (DEFAULT_CHUNK_ROWS, ScoringReport, _KeptRows, aligned_chunk_rows, lock_work_dir, scoring_calls,
                      work_dir_for)
from .writers import check_kept_names

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import ray.data

RAY_MISSING = "Ray is not installed: pip install 'deepclust[ray]'"
DEFAULT_BATCH_SIZE = 4096
DEFAULT_ROWS_PER_FILE = 1_000_000  # about 8 MB of labels and distances per output file
# Ray logs this on every start of a local instance; there is nothing for a deepclust user to do.
_TOKEN_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


# --- public API -----------------------------------------------------------------------------

def assign_dataset(ds: "ray.data.Dataset", bundle_path: str | os.PathLike, *, soft: bool = False,
                   embeddings: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                   concurrency: int | tuple[int, int] | None = None, device: str = "cpu",
                   precision: str = "auto", threads_per_actor: int = 1,
                   preserve_order: bool = True, keep_columns: Sequence[str] = ()) -> "ray.data.Dataset":
    """Cluster assignments for every row of a Ray Dataset, as a new (lazy) Dataset.

    Parameters
    ----------
    ds : ray.data.Dataset
        Rows to score, in one of two layouts: numeric columns (for a tabular bundle its
        ``feature_names`` are selected by name and other columns are ignored; otherwise every
        column is a feature, in order), or a single list or tensor column holding whole rows,
        such as the ``data`` column of ``ray.data.from_numpy(x)``.
    bundle_path : path
        The model bundle. It is read and verified here, on the driver, and shipped to the
        actors: worker nodes need no copy of it.
    soft, embeddings : bool, default False
        Add a ``soft`` column (k probabilities per row) and an ``embedding`` column
        (latent_dim values per row).
    batch_size : int, default 4096
        Rows per call of an actor.
    concurrency : int or (min, max), optional
        Actor pool size: a fixed number of actors or an autoscaling range. Default: Ray's
        autoscaling pool (from 1 to as many actors as the cluster has room for).
    device : {"cpu", "cuda", "auto"}, default "cpu"
        Where each actor runs the encoder; "cuda" also reserves one GPU per actor.
    precision : {"auto", "fp32", "int8"}, default "auto"
        As for :class:`~deepclust.runtime.Assigner`; checked here, on the driver.
    threads_per_actor : int, default 1
        onnxruntime threads per actor, and the CPUs Ray reserves for each.
    preserve_order : bool, default True
        Keep the rows in ``ds``'s order (Ray Data otherwise emits blocks as they finish).
        This sets ``execution_options.preserve_order`` on the DataContext that ``ds`` and the
        returned dataset share: every Ray Dataset holds its own copy of the global context,
        taken when it was created, so the global default and unrelated datasets are untouched.
    keep_columns : sequence of str, default ()
        Columns of ``ds`` (ids, keys) copied unchanged, first and in this order, into the
        result, to join it back by. They are not features, unless the bundle's
        ``feature_names`` name them.

    Returns
    -------
    ray.data.Dataset
        The ``keep_columns``, then the result columns, with the local engine's names and types:
        ``label`` int32, ``distance`` float32 and, when asked, ``soft`` and ``embedding`` as
        fixed-size float32 lists. With ``preserve_order`` row i of the result belongs to row i
        of ``ds``. Bad data (NaN, wrong width, non-numeric columns, a kept column missing)
        raises :class:`~deepclust.runtime.InputError` inside Ray when the dataset runs.

    Examples
    --------
    >>> ds = ray.data.read_parquet("s3://bucket/rows/")                    # doctest: +SKIP
    >>> out = assign_dataset(ds, "models/seg", soft=True, concurrency=8)   # doctest: +SKIP
    >>> out.write_parquet("s3://bucket/labels/")                           # doctest: +SKIP
    """
    _import_ray()
    keep_columns = _checked_keep_columns(keep_columns)
    return _assign(ds, load_bundle(bundle_path), _RowsScorer, source="dataset", soft=soft,
                   embeddings=embeddings, batch_size=batch_size, concurrency=concurrency, device=device,
                   precision=precision, threads_per_actor=threads_per_actor, preserve_order=preserve_order,
                   keep_columns=keep_columns)


def _checked_keep_columns(keep_columns) -> tuple[str, ...]:
    """Kept column names as a tuple, refused where they would clash in the output."""
    names = (keep_columns,) if isinstance(keep_columns, str) else tuple(keep_columns)
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"keep_columns: {name!r} is not a column name")
    check_kept_names(names, flat=False)
    return names


def score_parquet_with_ray(bundle_path: str | os.PathLike,
                           inputs: str | os.PathLike | Sequence[str | os.PathLike],
                           output_dir: str | os.PathLike, *, soft: bool = False, embeddings: bool = False,
                           overwrite: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                           concurrency: int | tuple[int, int] | None = None, device: str = "cpu",
                           precision: str = "auto", threads_per_actor: int = 1,
                           chunk_rows: int = DEFAULT_CHUNK_ROWS, rows_per_file: int = DEFAULT_ROWS_PER_FILE,
                           num_cpus: int | None = None, keep_columns: Sequence[str] = ()) -> ScoringReport:
    """Score Parquet inputs with Ray into a folder of Parquet files that appears when complete.

    ``inputs`` are Parquet files and folders of them, taken as the local engine takes them
    (:func:`deepclust.runtime.open_inputs`: a folder's files in name order), and checked
    the same way, on the driver, from the files' footers. Each actor call then reads and scores
    one chunk of ``chunk_rows`` rows as the local engine does (same readers, same encoder
    calls), so the output is bit-identical to ``deepclust assign``'s and error messages name
    the file and row; only results pass through Ray's object store.

    The results (the columns of :func:`assign_dataset`) go to the output's hidden work folder
    (the local engine's, locked: one job writes an output at a time, on either engine), one
    file per Ray write task named ``part-NNNNNNNN.parquet`` in row order, so
    ``pyarrow.parquet.read_table(output_dir)`` or any reader taking the files in name order
    gets row i of the output for row i of the input. Each write task gets at least
    ``rows_per_file`` rows (Ray may give it more). The folder is renamed to ``output_dir``
    only when every row is written; on any error it is removed. An existing ``output_dir``
    (file or folder) is refused unless ``overwrite``.

    Ray is started if this process is not connected yet (:func:`init_ray`; ``num_cpus``
    limits a local instance) and left running for later calls.

    Returns
    -------
    ScoringReport
        ``rows`` scored, ``seconds`` the Ray job took (reading to renaming; not starting Ray),
        and ``output``.
    """
    output_dir = Path(output_dir)
    bundle = load_bundle(bundle_path)
    chunk_rows = aligned_chunk_rows(int(chunk_rows), CALL_ROWS)  # the actors' Assigners call in CALL_ROWS
    keep_columns = _checked_keep_columns(keep_columns)
    chunks, total_rows, kept_types = _plan_chunks(inputs, bundle, chunk_rows, keep_columns)
    if not output_dir.parent.exists():
        raise InputError(f"{output_dir.parent}: output folder does not exist")
    work = work_dir_for(output_dir)
    lock = lock_work_dir(work)  # a second job on this output, on either engine, is refused from here on
    try:
        _check_output(output_dir, chunks, overwrite)
        ray = _import_ray()
        init_ray(num_cpus=num_cpus)
        tmp = work / "partial"
        shutil.rmtree(tmp, ignore_errors=True)  # a killed job's
        t0 = time.perf_counter()
        tmp.mkdir()
        with _quiet_ray_data():
            items = ray.data.from_items(chunks, override_num_blocks=len(chunks))
            items.context.enable_progress_bars = False
            items.context.print_on_execution_start = False
            out = _assign(items, bundle, _ChunkScorer, source=str(output_dir), soft=soft, embeddings=embeddings,
                          batch_size=1, read_rows=batch_size, concurrency=concurrency, device=device,
                          precision=precision, threads_per_actor=threads_per_actor, preserve_order=True,
                          chunk_rows=chunk_rows, keep_columns=keep_columns, kept_types=kept_types)
            try:
                out.write_datasink(_ordered_parquet_sink(tmp, int(rows_per_file)))
            except Exception as e:
                raise _one_line(e) from e
        written = sum(_parquet_rows(f) for f in tmp.glob("part-*.parquet"))
        if written != total_rows:
            raise DeepclustError(f"{output_dir}: wrote {written} of {total_rows} rows")
        _replace(tmp, output_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        lock.close()
    return ScoringReport(rows=written, seconds=time.perf_counter() - t0, output=output_dir)


def _check_output(output_dir: Path, chunks: list[dict], overwrite: bool) -> None:
    """Refuse an output folder that would replace the inputs, the user's data, or a file of
    another format (checked under the output's lock, so a job that finished meanwhile counts)."""
    if output_dir.suffix.lower() in (".csv", ".npy"):
        raise InputError(f"{output_dir}: the Ray engine writes a folder of Parquet files; give the output a name "
                         f"without {output_dir.suffix}")
    if output_dir.exists() or output_dir.is_symlink():
        out = output_dir.resolve()
        if any(f == out or out in f.parents for f in (Path(p).resolve() for c in chunks for p in c["paths"])):
            raise InputError(f"{output_dir}: holds the inputs; write the results elsewhere")
        if not overwrite:
            raise InputError(f"{output_dir}: already exists (pass --overwrite to replace it)")
        if not _is_replaceable_output(output_dir):
            raise InputError(f"{output_dir}: not an output of this engine; --overwrite replaces only a folder of "
                             "part-*.parquet files or an empty folder: remove it yourself or write elsewhere")


def init_ray(num_cpus: int | None = None) -> bool:
    """Connect this process to Ray unless it already is; True when this call did.

    With ``RAY_ADDRESS`` set, connects to that cluster. Otherwise, without ``num_cpus``,
    Ray's own rule applies: join the cluster last started on this machine with ``ray start``,
    else start a local instance on every CPU; with ``num_cpus``, always start a local instance
    of that size. The dashboard is off, and workers' output is not copied to this terminal
    (their exceptions still reach the caller).
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if num_cpus is not None and not os.environ.get("RAY_ADDRESS"):
        kwargs.update(address="local", num_cpus=int(num_cpus))
    notice = _DropRecords(_TOKEN_AUTH_NOTICE)
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    auth_log.addFilter(notice)
    try:
        ray.init(**kwargs)
    finally:
        auth_log.removeFilter(notice)
    return True


def result_schema(k: int, latent_dim: int, *, soft: bool = False, embeddings: bool = False) -> "pa.Schema":
    """``label`` int32, ``distance`` float32, then ``soft`` (k) and ``embedding`` (latent_dim)
    as fixed-size float32 lists when asked for: the columns of ResultWriter's Parquet output."""
    import pyarrow as pa

    fields = [pa.field("label", pa.int32()), pa.field("distance", pa.float32())]
    if soft:
        fields.append(pa.field("soft", pa.list_(pa.float32(), k)))
    if embeddings:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), latent_dim)))
    return pa.schema(fields)


# --- planning: one work item per Parquet row group ------------------------------------------

def _plan_chunks(inputs, bundle: Bundle, chunk_rows: int, keep_columns: Sequence[str] = ()
                 ) -> tuple[list[dict], int, tuple]:
    """One work item per ``chunk_rows`` rows of the inputs taken as one sequence (the local
    engine's chunks), naming only the files it overlaps; the total row count; and the kept
    columns' types over all the files, which each item's reader must use. The inputs are
    opened and checked as the local engine opens them; only Parquet is accepted."""
    spec = bundle.manifest.input
    reader = open_inputs(inputs, feature_names=spec.feature_names, kept=keep_columns)
    readers = getattr(reader, "readers", [reader])
    for r in readers:
        if not isinstance(r, ParquetReader):
            raise InputError(f"{r.path}: not a Parquet file (the Ray engine reads .parquet and .pq files "
                             "and folders of them)")
        if r.n_values != spec.n_features:
            raise InputError(f"{r.path}: rows have {r.n_values} values, the model expects {spec.n_features} "
                             f"(sample shape {'x'.join(str(s) for s in spec.sample_shape)})")
    starts = np.cumsum([0] + [r.n_rows for r in readers])
    total = int(starts[-1])
    if total == 0:
        raise InputError(f"{reader.path}: empty input (no rows)")
    items = []
    for first in range(0, total, chunk_rows):
        last = min(first + chunk_rows, total)
        files = [i for i, r in enumerate(readers) if starts[i] < last and starts[i + 1] > first and r.n_rows]
        items.append({"paths": [str(readers[i].path) for i in files], "skip": first - int(starts[files[0]]),
                      "first_row": first, "rows": last - first})
    return items, total, reader.kept_types


# --- scoring: one bundle per actor ----------------------------------------------------------

class _BundleScorer:
    """Ray Data callable class: one instance per actor, so the bundle loads once per actor.

    ``bundle_files`` maps file names to bytes the driver has verified (Ray Data puts the
    constructor arguments in the object store once, for all actors). They are written to a
    private temporary folder, loaded (which verifies the checksums again) and deleted:
    onnxruntime holds the model in memory.
    """

    def __init__(self, bundle_files: dict, *, soft: bool, embeddings: bool, device: str, precision: str,
                 threads: int, source: str, read_rows: int, chunk_rows: int, keep_columns: tuple[str, ...] = (),
                 kept_types: tuple = ()):
        tmp = Path(tempfile.mkdtemp(prefix="deepclust-bundle-"))
        try:
            for name, data in bundle_files.items():
                (tmp / name).write_bytes(data)
            self.assigner = Assigner.load(tmp, device=device, threads=threads, precision=precision)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        m = self.assigner.manifest
        self.soft, self.embeddings, self.source = soft, embeddings, source
        self.read_rows, self.chunk_rows, self.keep_columns = read_rows, chunk_rows, keep_columns
        self.kept_types = kept_types
        self.schema = result_schema(m.k, m.latent_dim, soft=soft, embeddings=embeddings)

    def _score(self, x: np.ndarray) -> "pa.Table":
        """Results for checked, owned float32 rows (``x`` is preprocessed in place)."""
        return _result_table(self.assigner._assign_prepared(x, self.soft, self.embeddings), self.schema)


class _RowsScorer(_BundleScorer):
    """Scores batches of a user's Dataset: numeric columns, or one column of whole rows."""

    def __call__(self, table: "pa.Table") -> "pa.Table":
        missing = [c for c in self.keep_columns if c not in table.schema.names]
        if missing:
            raise InputError(f"{self.source}: no column named {missing[0]!r} to keep "
                             f"(columns: {', '.join(table.schema.names[:20])})")
        if table.num_rows == 0:
            result = self.schema.empty_table()
        else:
            x, features = self._matrix(table)
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                raise InputError(_non_finite_message(self.source, x, finite, features))
            result = self._score(x)
        for i, name in enumerate(self.keep_columns):  # first, in the order asked, as the input has them
            result = result.add_column(i, table.schema.field(name), table.column(name))
        return result

    def _matrix(self, table: "pa.Table") -> tuple[np.ndarray, list[str] | None]:
        """The batch as an owned, writable float32 (rows, n_features) array, and its columns."""
        spec = self.assigner.manifest.input
        if self.keep_columns:  # kept columns are no features, unless the model names them
            table = table.drop_columns([c for c in self.keep_columns if c not in (spec.feature_names or ())])
        names, types = table.schema.names, table.schema.types
        if len(names) == 1 and _is_list_like(types[0]) and (spec.feature_names is None
                                                            or names[0] not in spec.feature_names):
            # One column holding whole rows: from_numpy's "data", images.
            x, features = _rows_from_list_column(names[0], table.column(0), self.source), None
        else:
            features = _select_columns(self.source, names, types, spec.feature_names, None, ())
            x = table_to_matrix(table, features)
        if x.shape[1] != spec.n_features:
            raise InputError(self.assigner.shape_error(self.source, x.shape[1:]))
        return x, features


class _ChunkScorer(_BundleScorer):
    """Reads and scores one chunk of the inputs per call, in the actor, exactly as the local
    engine does: its readers (conversion, NaN check, messages naming file and row) and its
    encoder calls (:func:`~deepclust.runtime.scoring.scoring_calls`), so the results are
    bit-identical; and no raw rows pass through Ray's object store, only results.

    Reading in a separate Ray step was tried: Ray fused it into the actors and bundled its
    input items up to the batch size, which sent a whole job to one actor call; and separate
    read tasks could not get a CPU while the actors held them all.
    """

    def __call__(self, items: "pa.Table"):
        import pyarrow as pa

        feature_names = self.assigner.manifest.input.feature_names
        for item in items.to_pylist():
            reader = open_inputs(item["paths"], feature_names=feature_names, kept=self.keep_columns,
                                 kept_types=self.kept_types)
            kept = _KeptRows(self.keep_columns)
            batches = _first_rows(reader.batches(self.read_rows, start_row=item["skip"]), item["rows"])
            for x in scoring_calls((kept.push(b) for b in batches), item["first_row"], self.assigner.batch_size,
                                   self.chunk_rows):
                table = self._score(x)
                for i, (name, values) in enumerate(zip(self.keep_columns, kept.take(len(x)))):
                    table = table.add_column(i, pa.field(name, values.type), values)  # first, as the local engine
                yield table


def _first_rows(batches, n: int):
    """The first ``n`` rows of a stream of row batches."""
    for b in batches:
        if n <= 0:
            return
        yield b.rows(0, n)
        n -= len(b.values)


def _is_list_like(t) -> bool:
    import pyarrow as pa

    storage = t.storage_type if isinstance(t, pa.ExtensionType) else t
    return pa.types.is_list(storage) or pa.types.is_large_list(storage) or pa.types.is_fixed_size_list(storage)


def _rows_from_list_column(name: str, column, source: str) -> np.ndarray:
    """A list, fixed-size-list or Ray tensor column of equal-length numeric rows, as a new
    float32 (rows, width) array (Ray stores a tensor row flattened, in C order)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for chunk in column.chunks:
        lists = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
        if len(lists) == 0:
            continue
        if not _is_list_like(lists.type) or not (pa.types.is_integer(lists.type.value_type)
                                                 or pa.types.is_floating(lists.type.value_type)):
            raise InputError(f"{source}: column {name!r} is {column.type}, not a list of numbers")
        if lists.null_count:
            raise InputError(f"{source}: column {name!r} has a missing (null) row")
        if not pa.types.is_fixed_size_list(lists.type):
            lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
            if (lengths != lengths[0]).any():
                raise InputError(f"{source}: column {name!r} holds rows of different lengths")
        parts.append(lists.flatten().to_numpy(zero_copy_only=False).reshape(len(lists), -1))
    # concatenate always allocates, so the result is owned and writable, as _assign_prepared needs
    return np.concatenate(parts).astype(np.float32, copy=False)


def _non_finite_message(source: str, x: np.ndarray, finite: np.ndarray, features) -> str:
    column = ""
    if features is not None:
        row = x[int(np.flatnonzero(~finite)[0])]
        column = f" (column {features[int(np.flatnonzero(~np.isfinite(row))[0])]!r})"
    return f"{source}: a row holds NaN, Inf or a missing value{column}"


def _result_table(result, schema: "pa.Schema") -> "pa.Table":
    import pyarrow as pa

    arrays = [pa.array(result.labels, pa.int32()), pa.array(result.distances, pa.float32())]
    for name, m in (("soft", result.soft), ("embedding", result.embeddings)):
        if name in schema.names:
            m = np.ascontiguousarray(m, dtype=np.float32)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1]))
    return pa.Table.from_arrays(arrays, schema=schema)


def _assign(ds, bundle: Bundle, scorer: type, *, source, soft, embeddings, batch_size, concurrency, device,
            precision, threads_per_actor, preserve_order, read_rows: int = DEFAULT_BATCH_SIZE,
            chunk_rows: int = DEFAULT_CHUNK_ROWS, keep_columns: tuple[str, ...] = (), kept_types: tuple = ()):
    ray = _import_ray()
    choose_precision(bundle.manifest, precision)  # a bad or unavailable precision fails here, not in an actor
    check_graphs(bundle)  # and a graph that does not fit the manifest
    if int(batch_size) < 1:
        raise DeepclustError(f"batch_size={batch_size} should be >= 1")
    if int(threads_per_actor) < 1:
        raise DeepclustError(f"threads_per_actor={threads_per_actor} should be >= 1")
    files = {MANIFEST: (bundle.path / MANIFEST).read_bytes()}
    files.update({name: (bundle.path / name).read_bytes() for name in bundle.manifest.files})
    if preserve_order:
        ds.context.execution_options.preserve_order = True
    if concurrency is None:
        compute = None  # Ray's default for a class: an autoscaling actor pool
    elif isinstance(concurrency, int):
        compute = ray.data.ActorPoolStrategy(size=concurrency)
    else:
        low, high = concurrency
        compute = ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    return ds.map_batches(
        scorer, batch_format="pyarrow", batch_size=int(batch_size), compute=compute,
        fn_constructor_kwargs=dict(bundle_files=files, soft=soft, embeddings=embeddings, device=device,
                                   precision=precision, threads=int(threads_per_actor), source=source,
                                   read_rows=int(read_rows), chunk_rows=int(chunk_rows), keep_columns=keep_columns,
                                   kept_types=kept_types),
        num_cpus=int(threads_per_actor), num_gpus=1 if device == "cuda" else None)


# --- writing: in order, into a folder renamed when complete ---------------------------------

def _ordered_parquet_sink(folder: Path, rows_per_file: int):
    """A Datasink writing each write task's blocks, in order, to ``part-{task:08d}.parquet``.

    Not ``Dataset.write_parquet``: that hands each task's blocks to
    ``pyarrow.dataset.write_dataset(use_threads=True)`` without ``preserve_order``, which may
    reorder rows within a file. Write tasks are numbered in the order of their input, which
    ``preserve_order`` keeps, so the file names sort in row order.
    """
    import pyarrow.parquet as pq
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class OrderedParquetSink(Datasink):
        def __init__(self, folder: str, rows_per_file: int):
            self.folder, self.rows_per_file = folder, rows_per_file

        @property
        def min_rows_per_write(self) -> int:
            return self.rows_per_file

        def write(self, blocks, ctx):
            tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
            if tables:
                with pq.ParquetWriter(os.path.join(self.folder, f"part-{ctx.task_idx:08d}.parquet"),
                                      tables[0].schema) as writer:
                    for t in tables:
                        writer.write_table(t)

        def get_name(self) -> str:
            return "DeepclustParquet"

    return OrderedParquetSink(str(folder), rows_per_file)


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _is_replaceable_output(path: Path) -> bool:
    """An earlier job's output (part-*.parquet files only) or an empty folder: what --overwrite
    may delete. Anything else may be the user's data, or the job's own input."""
    if path.is_symlink() or not path.is_dir():
        return False
    return all(p.is_file() and p.name.startswith("part-") and p.name.endswith(".parquet") for p in path.iterdir())


def _replace(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing a file or folder there."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


# --- Ray plumbing ---------------------------------------------------------------------------

def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise DeepclustError(RAY_MISSING) from e
    return ray


def _one_line(e: BaseException) -> BaseException:
    """A failed Ray job's error as one line: the DeepclustError behind it (a bad row, named by
    file and row), else what the task raised, by its type and first line. Ray's own form is a
    traceback of the worker with terminal colours; ``--debug`` still shows the chain."""
    cause = _find_cause(e)
    if cause is not None:
        return type(cause)(str(cause).strip().splitlines()[0])
    inner = e
    while getattr(inner, "cause", None) is not None:  # RayTaskError and kin keep what the task raised
        inner = inner.cause
    text = (str(inner).strip().splitlines() or [""])[0]
    return DeepclustError(f"{type(inner).__name__} in a Ray task: {text}")


def _find_cause(e: BaseException) -> DeepclustError | None:
    """The DeepclustError behind a failed Ray job: Ray wraps an exception raised in a task or
    an actor (RayTaskError, UserCodeException, ...), keeping it as a cause."""
    seen, stack = set(), [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        # A RayTaskError is made an instance of its cause's class too: take the cause itself.
        if isinstance(x, DeepclustError) and type(x).__module__.startswith("deepclust"):
            return x
        stack += [x.__context__, x.__cause__, getattr(x, "cause", None)]
    return None


class _DropRecords(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


class _quiet_ray_data:
    """For one job, hold Ray Data's console log to CRITICAL: its execution plans and progress
    lines, its warning that progress bars are off (the job turns them off on purpose), and its
    ERROR records, the stack traces of a failed task, whose cause the job raises itself, as
    one line for a bad row (file and row) or whole for anything else."""

    def __enter__(self):
        self.logger = logging.getLogger("ray.data")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)
        self.progress_log = logging.getLogger("ray.data._internal.progress")
        self.notice = _DropRecords("Progress bars disabled")
        self.progress_log.addFilter(self.notice)
        return self

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        self.progress_log.removeFilter(self.notice)
