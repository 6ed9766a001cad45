"""The Ray Data engine on a local 2-CPU Ray: same results as the local engine, row for row,
and the local engine's errors, with no output left behind."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra (pip install 'deepclust[ray]')")

from deepclust.cli.main import app  # noqa: E402
from deepclust.runtime import Assigner, InputError, score_file  # noqa: E402
from deepclust.runtime.ray_engine import assign_dataset, init_ray, score_parquet_with_ray  # noqa: E402

from ..conftest import write_manifest  # noqa: E402

COLUMNS = [f"f{j}" for j in range(64)]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    started = init_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def rows():
    # 1,000 rows: enough for several row groups, files and actor batches
    return np.random.default_rng(1).integers(0, 17, size=(1000, 64)).astype(np.float32)


def _write_parts(folder, x, *, files=3, row_group_size=90):
    folder.mkdir()
    for i, part in enumerate(np.array_split(x, files)):
        pq.write_table(pa.table({c: part[:, j] for j, c in enumerate(COLUMNS)}), folder / f"part-{i}.parquet",
                       row_group_size=row_group_size)
    return folder


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_ray_job_equals_the_local_engine_row_for_row(tmp_path, reference_bundle, rows, precision):
    x = np.concatenate([rows] * 3)
    src = _write_parts(tmp_path / "in", x)
    local, remote = tmp_path / "local.parquet", tmp_path / "ray_out"
    assigner = Assigner.load(reference_bundle, device="cpu", precision=precision)
    # chunks (1,000 rows, rounded up to whole encoder calls: 1,024) cross row groups and files;
    # a different read batch size on each side
    score_file(assigner, src, local, soft=True, embeddings=True, chunk_rows=1000, batch_rows=64)
    report = score_parquet_with_ray(reference_bundle, src, remote, soft=True, embeddings=True, batch_size=128,
                                    concurrency=2, precision=precision, chunk_rows=1000, rows_per_file=200)
    assert report.rows == len(x) and remote.is_dir()
    assert len(list(remote.glob("part-*.parquet"))) > 1  # really split across tasks
    expected, got = pq.read_table(local), pq.read_table(remote)
    assert got.schema.equals(expected.schema)
    assert got.equals(expected)  # same rows, same order, same bits


def test_assign_dataset_scores_an_existing_ray_dataset(reference_bundle, rows):
    expected = Assigner.load(reference_bundle, device="cpu").assign(rows, soft=True)
    as_tensor = assign_dataset(ray.data.from_numpy(rows), reference_bundle, soft=True, batch_size=100)
    as_columns = assign_dataset(ray.data.from_arrow(pa.table({c: rows[:, j] for j, c in enumerate(COLUMNS)})),
                                reference_bundle, batch_size=100)
    for ds in (as_tensor, as_columns):
        table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
        np.testing.assert_array_equal(table["label"].to_numpy(), expected.labels)
        np.testing.assert_array_equal(table["distance"].to_numpy(), expected.distances)
    soft = np.stack(pa.concat_tables(ray.get(as_tensor.to_arrow_refs()))["soft"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(soft, expected.soft)


def test_bad_row_in_a_later_row_group_names_file_and_row_and_leaves_nothing(tmp_path, reference_bundle, rows):
    x = rows.copy()
    x[777, 5] = np.nan  # part-2 holds rows 667-999: its row 110
    src = _write_parts(tmp_path / "in", x)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"part-2\.parquet.*row 110"):
        score_parquet_with_ray(reference_bundle, src, out, concurrency=1)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no hidden partial folder either


def test_existing_output_and_non_parquet_inputs_are_refused_before_any_work(tmp_path, reference_bundle, rows):
    src = _write_parts(tmp_path / "in", rows)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        score_parquet_with_ray(reference_bundle, src, tmp_path / "out")
    # --overwrite replaces an earlier output, not the user's data or the job's own input
    with pytest.raises(InputError, match="not an output of this engine"):
        score_parquet_with_ray(reference_bundle, src, tmp_path / "out", overwrite=True)
    with pytest.raises(InputError, match="holds the inputs"):
        score_parquet_with_ray(reference_bundle, src, src, overwrite=True)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in src.iterdir()) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    np.save(tmp_path / "x.npy", rows)
    with pytest.raises(InputError, match="not a Parquet file"):
        score_parquet_with_ray(reference_bundle, tmp_path / "x.npy", tmp_path / "out2")
    with pytest.raises(InputError, match="rows have 32 values"):
        pq.write_table(pa.table({c: rows[:, j] for j, c in enumerate(COLUMNS[:32])}), tmp_path / "narrow.parquet")
        score_parquet_with_ray(reference_bundle, tmp_path / "narrow.parquet", tmp_path / "out3")


def test_one_job_writes_an_output_at_a_time_and_a_killed_ones_leftovers_go(tmp_path, reference_bundle, rows):
    from deepclust.runtime.scoring import lock_work_dir, work_dir_for

    src = _write_parts(tmp_path / "in", rows)
    out = tmp_path / "out.parquet"  # a folder on the Ray engine, a file on the local one
    held = lock_work_dir(work_dir_for(out))  # a job on either engine, writing this output now
    with pytest.raises(InputError, match="another deepclust assign is writing this output now"):
        score_parquet_with_ray(reference_bundle, src, out)
    with pytest.raises(InputError, match="another deepclust assign is writing this output now"):
        score_file(Assigner.load(reference_bundle), src, out, keep_columns=())
    held.close()  # as if it was killed: its lock is released, its partial results stay
    (work_dir_for(out) / "partial").mkdir()
    (work_dir_for(out) / "partial" / "part-00000000.parquet").write_bytes(b"half")
    score_parquet_with_ray(reference_bundle, src, out)
    assert pq.read_table(out).num_rows == len(rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.parquet"]  # no hidden work folder left
    with pytest.raises(InputError, match="out.csv: the Ray engine writes a folder of Parquet files"):
        score_parquet_with_ray(reference_bundle, src, tmp_path / "out.csv")
    with pytest.raises(InputError, match="nowhere: output folder does not exist"):
        score_parquet_with_ray(reference_bundle, src, tmp_path / "nowhere" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.parquet"]


def test_an_error_a_ray_task_raises_is_one_line():
    from ray.exceptions import RayTaskError

    from deepclust.runtime.errors import DeepclustError
    from deepclust.runtime.ray_engine import _one_line

    try:
        raise ValueError("setting an array element with a sequence.\nmore detail")
    except ValueError as e:
        wrapped = RayTaskError("MapBatches(_ChunkScorer)", "Traceback ...\n  lots of lines", e).as_instanceof_cause()
    err = _one_line(wrapped)
    assert isinstance(err, DeepclustError)
    assert str(err) == "ValueError in a Ray task: setting an array element with a sequence."
    bad_row = InputError("part-2.parquet: row 110 holds NaN\n(traceback)")
    assert str(_one_line(RayTaskError("f", "tb", bad_row).as_instanceof_cause())) == "part-2.parquet: row 110 holds NaN"


def test_cli_engine_ray_writes_what_the_local_engine_writes(tmp_path, reference_bundle, rows):
    src = _write_parts(tmp_path / "in", rows, files=2)
    runner = CliRunner()
    local = runner.invoke(app, ["assign", str(reference_bundle), str(src), "-o", str(tmp_path / "l.parquet"), "-q"])
    remote = runner.invoke(app, ["assign", str(reference_bundle), str(src), "-o", str(tmp_path / "r"), "-q",
                                 "--engine", "ray", "--batch-size", "200", "--actors", "2"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert f"scored {len(rows)} rows" in remote.output
    assert pq.read_table(tmp_path / "r").equals(pq.read_table(tmp_path / "l.parquet"))


def test_a_bad_row_on_the_cli_is_one_line_not_ray_stack_traces(tmp_path, reference_bundle, rows):
    x = rows.copy()
    x[333, 3] = np.nan
    src = _write_parts(tmp_path / "in", x)
    proc = subprocess.run([sys.executable, "-m", "deepclust.cli", "assign", str(reference_bundle), str(src), "-o",
                           str(tmp_path / "out"), "--engine", "ray", "-q"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (f"error: {src / 'part-0.parquet'}: row 333, column {COLUMNS[3]!r}, "
                                            "holds NaN, Inf or a missing value")
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr


def test_a_kept_column_crosses_chunks_and_files_as_on_the_local_engine(tmp_path, reference_bundle, rows):
    x = np.concatenate([rows] * 3)
    src = tmp_path / "in"
    src.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(x)), 3)):
        pq.write_table(pa.table({"id": [f"r{r}" for r in part], **{c: x[part, j] for j, c in enumerate(COLUMNS)}}),
                       src / f"part-{i}.parquet", row_group_size=90)
    local, remote = tmp_path / "local.parquet", tmp_path / "ray_out"
    score_file(Assigner.load(reference_bundle, device="cpu"), src, local, chunk_rows=1000, keep_columns=["id"])
    score_parquet_with_ray(reference_bundle, src, remote, concurrency=2, chunk_rows=1000, rows_per_file=500,
                           keep_columns=["id"])
    expected, got = pq.read_table(local), pq.read_table(remote)
    assert got.equals(expected) and got["id"].to_pylist() == [f"r{r}" for r in range(len(x))]


def test_kept_ids_of_parts_at_other_widths_and_with_nul_bytes_match_the_local_engine(tmp_path, reference_bundle,
                                                                                       rows):
    src = tmp_path / "in"
    src.mkdir()
    for i, (t, part) in enumerate(zip((pa.int32(), pa.int64()), np.array_split(np.arange(len(rows)), 2))):
        pq.write_table(pa.table({"id": pa.array(part, t), "key": pa.array([b"k" + b"\0" * (r % 3) for r in part]),
                                 **{c: rows[part, j] for j, c in enumerate(COLUMNS)}}), src / f"part-{i}.parquet")
    local, remote = tmp_path / "local.parquet", tmp_path / "ray_out"
    score_file(Assigner.load(reference_bundle, device="cpu"), src, local, chunk_rows=256, keep_columns=["id", "key"])
    score_parquet_with_ray(reference_bundle, src, remote, concurrency=1, chunk_rows=256, keep_columns=["id", "key"])
    expected, got = pq.read_table(local), pq.read_table(remote)
    assert got.equals(expected) and got.schema.field("id").type == pa.int64()
    assert got["key"].to_pylist() == [b"k" + b"\0" * (r % 3) for r in range(len(rows))]


def test_assign_dataset_passes_kept_columns_through_first_and_scores_only_the_rest(reference_bundle, rows):
    # the reference bundle reads every column as a feature: the ids must not become features
    expected = Assigner.load(reference_bundle, device="cpu").assign(rows)
    ids = [f"r{i}" for i in range(len(rows))]
    shard = np.arange(len(rows)) % 7
    table = pa.table({"shard": shard, **{c: rows[:, j] for j, c in enumerate(COLUMNS)}, "id": ids})
    ds = assign_dataset(ray.data.from_arrow(table), reference_bundle, batch_size=100, keep_columns=["id", "shard"])
    got = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    assert got.schema.names == ["id", "shard", "label", "distance"]
    assert got["id"].to_pylist() == ids and got.schema.field("shard").type == pa.int64()
    np.testing.assert_array_equal(got["shard"].to_numpy(), shard)
    np.testing.assert_array_equal(got["label"].to_numpy(), expected.labels)
    # beside one column of whole rows, as ray.data.from_numpy makes, and kept as given: nulls too
    with_rows = ray.data.from_numpy(rows).add_column("key", lambda b: pa.array([None] * len(b), pa.string()),
                                                     batch_format="pyarrow")
    got = pa.concat_tables(ray.get(assign_dataset(with_rows, reference_bundle, keep_columns=["key"]).to_arrow_refs()))
    assert got.schema.names == ["key", "label", "distance"] and got["key"].null_count == len(rows)
    np.testing.assert_array_equal(got["label"].to_numpy(), expected.labels)


def test_assign_dataset_refuses_kept_columns_it_cannot_keep(reference_bundle, rows):
    with pytest.raises(InputError, match="'label': the output has a column of that name"):
        assign_dataset(ray.data.from_numpy(rows), reference_bundle, keep_columns=["label"])
    with pytest.raises(InputError, match="'id' given more than once"):
        assign_dataset(ray.data.from_numpy(rows), reference_bundle, keep_columns=["id", "id"])
    ds = assign_dataset(ray.data.from_numpy(rows), reference_bundle, keep_columns="id")
    with pytest.raises(Exception, match="no column named 'id' to keep"):
        ds.materialize()


def test_a_graph_that_does_not_fit_the_manifest_is_refused_before_ray_runs(tmp_path, bundle_copy, rows):
    import hashlib
    import json

    from deepclust.runtime.errors import BundleError

    from ..conftest import write_manifest

    np.save(bundle_copy / "centroids.npy", np.load(bundle_copy / "centroids.npy")[:5])  # the pipelines hold 10
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["files"] = {name: hashlib.sha256((bundle_copy / name).read_bytes()).hexdigest() for name in m["files"]}
    m["k"] = 5
    write_manifest(bundle_copy, m)
    with pytest.raises(BundleError, match=r"pipeline.onnx: output 'distances' has shape \(n, 10\)"):
        assign_dataset(ray.data.from_numpy(rows), bundle_copy)  # lazy: without the check, only materialising fails
    with pytest.raises(BundleError, match=r"pipeline.onnx: output 'distances'"):
        score_parquet_with_ray(bundle_copy, _write_parts(tmp_path / "in", rows), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "in"]  # no output, no work folder


def test_a_vector_column_scores_on_ray_as_on_the_local_engine(tmp_path, bundle_copy, rows):
    # Embeddings in one fixed-size-list column, read by a bundle whose features are its elements
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m.pop("manifest_sha256")
    m["input"]["feature_names"] = [f"emb[{j}]" for j in range(64)]
    write_manifest(bundle_copy, m)
    src = tmp_path / "in"
    src.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(rows)), 2)):
        emb = pa.FixedSizeListArray.from_arrays(pa.array(rows[part].ravel()), 64)
        pq.write_table(pa.table({"id": [f"r{r}" for r in part], "emb": emb}), src / f"part-{i}.parquet",
                       row_group_size=90)
    local, remote = tmp_path / "local.parquet", tmp_path / "ray_out"
    score_file(Assigner.load(bundle_copy, device="cpu"), src, local, keep_columns=["id"])
    score_parquet_with_ray(bundle_copy, src, remote, concurrency=1, keep_columns=["id"])  # 1,000 rows: one chunk
    expected = Assigner.load(bundle_copy, device="cpu").assign(rows).labels
    assert pq.read_table(remote).equals(pq.read_table(local))
    np.testing.assert_array_equal(pq.read_table(local)["label"].to_numpy(), expected)
