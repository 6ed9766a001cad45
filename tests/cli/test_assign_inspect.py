"""`deepclust assign` and `inspect` with the reference bundle, and every bad input:
one line naming the file and the problem, a non-zero exit, and no output file left."""

import hashlib
import json
import os
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from deepclust.cli.main import app, group_flags_first
from deepclust.runtime import Assigner

from ..conftest import write_manifest

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, *fragments):
    assert result.exit_code != 0, result.output
    msg = result.output.strip()
    assert msg.startswith("error:"), msg
    assert "Traceback" not in msg
    flat = " ".join(msg.split())  # rich may wrap long lines on narrow terminals
    for f in fragments:
        assert f in flat, (f, flat)


@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".csv"])
def test_assign_writes_labels_equal_to_the_runtime(tmp_path, reference_bundle, digits_rows, suffix):
    np.save(tmp_path / "in.npy", digits_rows)
    out = tmp_path / f"out{suffix}"
    r = run("assign", reference_bundle, tmp_path / "in.npy", "-o", out, "--batch-size", "50", "-q")
    assert r.exit_code == 0, r.output
    assert "scored 300 rows" in r.output
    expected = Assigner.load(reference_bundle).assign(digits_rows).labels
    if suffix == ".parquet":
        got = pq.read_table(out)["label"].to_numpy()
    elif suffix == ".npy":
        got = np.load(out)["label"]
    else:
        import pyarrow.csv as pcsv

        got = pcsv.read_csv(out)["label"].to_numpy()
    np.testing.assert_array_equal(got, expected)


def test_assign_soft_and_embeddings_columns(tmp_path, reference_bundle, digits_rows):
    np.save(tmp_path / "in.npy", digits_rows)
    r = run("assign", reference_bundle, tmp_path / "in.npy", "-o", tmp_path / "o.parquet", "--soft", "--embeddings")
    assert r.exit_code == 0, r.output
    t = pq.read_table(tmp_path / "o.parquet")
    assert t.column_names == ["label", "distance", "soft", "embedding"]
    soft = np.stack(t["soft"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-5)


def test_assign_reads_parquet_and_idx(tmp_path, reference_bundle, digits_rows):
    from ..conftest import write_idx

    expected = Assigner.load(reference_bundle).assign(digits_rows).labels
    pq.write_table(pa.table({f"c{j}": digits_rows[:, j] for j in range(64)}), tmp_path / "in.parquet")
    write_idx(tmp_path / "in-idx3-ubyte.gz", digits_rows.reshape(-1, 8, 8).astype(np.uint8), gz=True)
    for src in ("in.parquet", "in-idx3-ubyte.gz"):
        r = run("assign", reference_bundle, tmp_path / src, "-o", tmp_path / f"{src}.npy")
        assert r.exit_code == 0, r.output
        np.testing.assert_array_equal(np.load(tmp_path / f"{src}.npy")["label"], expected)


# --- bad inputs ---------------------------------------------------------------------------------

def _assign_fails(tmp_path, bundle, src, *fragments, out_name="out.parquet", args=()):
    out = tmp_path / out_name
    r = run("assign", bundle, src, "-o", out, *args)
    _one_line_error(r, *fragments)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_wrong_feature_count(tmp_path, reference_bundle):
    np.save(tmp_path / "in.npy", np.zeros((10, 784), np.float32))
    _assign_fails(tmp_path, reference_bundle, tmp_path / "in.npy", "in.npy", "rows have 784 values",
                  "the model expects 64")


def test_wrong_image_shape(tmp_path, reference_bundle):
    np.save(tmp_path / "in.npy", np.zeros((10, 28, 28), np.uint8))
    _assign_fails(tmp_path, reference_bundle, tmp_path / "in.npy", "in.npy", "sample shape 8x8")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_a_later_batch(tmp_path, reference_bundle, digits_rows, bad):
    x = np.tile(digits_rows, (30, 1))  # 9,000 rows: the bad row is in the third batch
    x[8500, 3] = bad
    np.save(tmp_path / "in.npy", x)
    _assign_fails(tmp_path, reference_bundle, tmp_path / "in.npy", "in.npy", "row 8500 holds NaN")


def test_non_numeric_column(tmp_path, reference_bundle, digits_rows):
    cols = {f"c{j}": digits_rows[:, j] for j in range(63)}
    cols["c63"] = ["x"] * len(digits_rows)
    pq.write_table(pa.table(cols), tmp_path / "in.parquet")
    _assign_fails(tmp_path, reference_bundle, tmp_path / "in.parquet", "in.parquet", "column 'c63' is string")


def test_empty_input(tmp_path, reference_bundle):
    np.save(tmp_path / "in.npy", np.zeros((0, 64), np.float32))
    _assign_fails(tmp_path, reference_bundle, tmp_path / "in.npy", "in.npy", "empty input")
    (tmp_path / "in.csv").write_text("")
    _assign_fails(tmp_path, reference_bundle, tmp_path / "in.csv", "in.csv", "not a readable CSV")


def test_truncated_and_unreadable_files(tmp_path, reference_bundle, digits_rows):
    np.save(tmp_path / "in.npy", digits_rows)
    data = (tmp_path / "in.npy").read_bytes()
    (tmp_path / "in.npy").write_bytes(data[: len(data) - 1000])
    _assign_fails(tmp_path, reference_bundle, tmp_path / "in.npy", "in.npy", "truncated")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 definitely not parquet")
    _assign_fails(tmp_path, reference_bundle, tmp_path / "junk.parquet", "junk.parquet", "not a readable Parquet")
    _assign_fails(tmp_path, reference_bundle, tmp_path / "missing.npy", "missing.npy", "no such file")


def test_truncated_gzipped_idx(tmp_path, reference_bundle, digits_rows):
    from ..conftest import write_idx

    p = write_idx(tmp_path / "in-idx3-ubyte.gz", np.tile(digits_rows, (40, 1)).reshape(-1, 8, 8), gz=True)
    p.write_bytes(p.read_bytes()[:4000])
    _assign_fails(tmp_path, reference_bundle, p, "in-idx3-ubyte.gz", "truncated")


def test_existing_output_is_refused_unless_overwrite(tmp_path, reference_bundle, digits_rows):
    np.save(tmp_path / "in.npy", digits_rows)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"keep me")
    r = run("assign", reference_bundle, tmp_path / "in.npy", "-o", out)
    _one_line_error(r, "out.parquet", "already exists", "--overwrite")
    assert out.read_bytes() == b"keep me"
    r = run("assign", reference_bundle, tmp_path / "in.npy", "-o", out, "--overwrite")
    assert r.exit_code == 0 and pq.read_table(out).num_rows == len(digits_rows)


@pytest.mark.parametrize("damage", ["missing", "altered", "corrupt_manifest"])
def test_damaged_bundle(tmp_path, bundle_copy, digits_rows, damage):
    np.save(tmp_path / "in.npy", digits_rows)
    if damage == "missing":
        (bundle_copy / "encoder.onnx").unlink()
        expect = ("encoder.onnx", "missing")
    elif damage == "altered":
        c = np.load(bundle_copy / "centroids.npy")
        np.save(bundle_copy / "centroids.npy", c + 1)
        expect = ("centroids.npy", "checksum mismatch")
    else:
        (bundle_copy / "manifest.json").write_text("{")
        expect = ("manifest.json", "unreadable manifest")
    _assign_fails(tmp_path, bundle_copy, tmp_path / "in.npy", *expect)


def test_debug_shows_the_traceback(tmp_path, reference_bundle):
    r = runner.invoke(app, ["--debug", "assign", str(reference_bundle), str(tmp_path / "no.npy"), "-o",
                            str(tmp_path / "o.parquet")])
    assert r.exit_code != 0 and r.exception is not None and "no such file" in str(r.exception)


def test_debug_and_verbose_may_follow_the_command(tmp_path, reference_bundle):
    base = [sys.executable, "-m", "deepclust.cli", "assign", str(reference_bundle), str(tmp_path / "no.npy"),
            "-o", str(tmp_path / "o.parquet")]
    plain = subprocess.run(base, capture_output=True, text=True)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    late = subprocess.run(base + ["--debug"], capture_output=True, text=True)
    assert late.returncode == 1 and "Traceback" in late.stderr and "no such file" in late.stderr
    np.save(tmp_path / "rows.npy", np.zeros((3, 64), np.float32))
    verbose = subprocess.run(base[:5] + [str(tmp_path / "rows.npy"), "-o", str(tmp_path / "o.npy"), "-q", "-v"],
                             capture_output=True, text=True)
    assert verbose.returncode == 0 and "encoder runs on CPUExecutionProvider" in verbose.stderr, verbose.stderr
    # after "--" nothing is an option: a file named --debug stays an input
    kept = group_flags_first(["assign", "m", "-o", "x", "--", "--debug", "-v"])
    assert kept == ["assign", "m", "-o", "x", "--", "--debug", "-v"]
    assert group_flags_first(["assign", "m", "-v", "--debug"]) == ["-v", "--debug", "assign", "m"]


def test_inspect_shows_and_verifies(reference_bundle, bundle_copy):
    r = run("inspect", reference_bundle, "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    assert m["k"] == 10 and m["input"]["n_features"] == 64 and "encoder.onnx" in m["files"]
    r = run("inspect", reference_bundle)
    assert r.exit_code == 0 and "checksums and graphs verified" in " ".join(r.output.split())
    (bundle_copy / "encoder.onnx").write_bytes(b"x")
    _one_line_error(run("inspect", bundle_copy), "encoder.onnx", "checksum mismatch")


def test_inspect_checks_each_graph_against_the_manifest(bundle_copy):
    # centroids and manifest say k=5, the fused pipelines still hold 10: checksums all match
    np.save(bundle_copy / "centroids.npy", np.load(bundle_copy / "centroids.npy")[:5])
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["files"] = {name: hashlib.sha256((bundle_copy / name).read_bytes()).hexdigest() for name in m["files"]}
    m["k"] = 5
    write_manifest(bundle_copy, m)
    _one_line_error(run("inspect", bundle_copy), "pipeline.onnx: output 'distances' has shape (n, 10); the manifest "
                                                 "says (n, 5)")


def test_inspect_runs_the_fused_pipelines_beside_the_manifest(bundle_copy):
    # Same shapes, other centroids: only running the pipeline shows it is not this bundle's.
    np.save(bundle_copy / "centroids.npy", np.load(bundle_copy / "centroids.npy")[::-1].copy())
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["files"] = {name: hashlib.sha256((bundle_copy / name).read_bytes()).hexdigest() for name in m["files"]}
    write_manifest(bundle_copy, m)
    _one_line_error(run("inspect", bundle_copy), "pipeline.onnx: its distances are not to the centroids in "
                                                 "centroids.npy")


def test_help_reads_for_every_command():
    for cmd in ("train", "assign", "evaluate", "inspect", "demo"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


@pytest.mark.parametrize("name", ["pipeline.onnx", "pipeline.int8.onnx"])
def test_corrupt_model_with_a_matching_checksum(tmp_path, bundle_copy, digits_rows, name):
    # A bundle re-stamped after damage passes the checksums but still must not load silently.
    import hashlib

    (bundle_copy / name).write_bytes(b"\x08\x07garbage, not a protobuf model")
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["files"][name] = hashlib.sha256((bundle_copy / name).read_bytes()).hexdigest()
    write_manifest(bundle_copy, m)
    np.save(tmp_path / "in.npy", digits_rows)
    _assign_fails(tmp_path, bundle_copy, tmp_path / "in.npy", name, "onnxruntime cannot load the model",
                  args=("--precision", "int8" if "int8" in name else "fp32"))


def test_brackets_in_paths_and_names_print_as_given(tmp_path, reference_bundle, bundle_copy, digits_rows):
    """Printed paths, column names and messages are data: "[raw]" is not a style to drop,
    and "[/x]" is not a closing tag to fail on."""
    folder = tmp_path / "runs[raw]"
    folder.mkdir()
    np.save(folder / "in.npy", digits_rows)
    r = runner.invoke(app, ["assign", str(reference_bundle), str(folder / "in.npy"), "-o", str(folder / "out.parquet"),
                            "-q"], env={"COLUMNS": "400"})  # no wrapping inside the path
    assert r.exit_code == 0 and f"-> {folder / 'out.parquet'}" in r.output, r.output
    _one_line_error(run("inspect", tmp_path / "missing[/x]"), f"{tmp_path / 'missing[/x]'}: not a model bundle")
    _one_line_error(run("inspect", tmp_path / "data[raw]"), f"{tmp_path / 'data[raw]'}: not a model bundle")
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["input"]["feature_names"] = [f"pixel[r{i // 8}]" for i in range(64)]
    write_manifest(bundle_copy, m)
    r = runner.invoke(app, ["inspect", str(bundle_copy)], env={"COLUMNS": "400"})
    assert r.exit_code == 0 and "columns pixel[r0], pixel[r0]" in r.output, r.output


def test_help_names_the_extras_to_install():
    r = runner.invoke(app, ["assign", "--help"], env={"COLUMNS": "400"})
    assert "needs pip install 'deepclust[ray]'" in r.output
    r = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "400"})
    assert "pip install 'deepclust[train]'" in r.output


@pytest.mark.parametrize("json_output", [True, False])
def test_a_closed_output_pipe_stops_quietly(reference_bundle, json_output):
    # `deepclust inspect M --json | head -c 100`: the reader may leave before the output is written
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = [sys.executable, "-m", "deepclust.cli", "inspect", str(reference_bundle)] + ["--json"] * json_output
    proc = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    assert proc.returncode == 1 and proc.stderr == b""


def test_version_and_a_missing_training_extra_are_named(monkeypatch, reference_bundle):
    from importlib.metadata import version

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"deepclust {version('deepclust')}"
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):  # a scoring-only install
        if name.split(".")[0] == "sklearn":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    for name in [m for m in sys.modules if m.split(".")[0] == "sklearn" or m == "deepclust.trainer.metrics"]:
        monkeypatch.delitem(sys.modules, name)
    r = runner.invoke(app, ["evaluate", str(reference_bundle), "digits"])
    assert r.exit_code == 1 and "pip install 'deepclust[train]'" in r.output, r.output


def test_assign_keeps_id_columns_on_either_engine(tmp_path, reference_bundle, digits_rows):
    ids = [f"c-{i}" for i in range(len(digits_rows))]
    pq.write_table(pa.table({"id": ids, **{f"f{j}": digits_rows[:, j] for j in range(64)}, "shard": [7] * len(ids)}),
                   tmp_path / "in.parquet")
    keep = ["--keep-column", "shard", "--keep-column", "id"]
    r = runner.invoke(app, ["assign", str(reference_bundle), str(tmp_path / "in.parquet"), "-o",
                            str(tmp_path / "out.parquet"), *keep, "-q"])
    assert r.exit_code == 0, r.output
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names[:3] == ["shard", "id", "label"] and table["id"].to_pylist() == ids
    np.testing.assert_array_equal(table["label"].to_numpy(), Assigner.load(reference_bundle).assign(digits_rows).labels)
    pytest.importorskip("ray", reason="the Ray engine needs the ray extra")
    r = runner.invoke(app, ["assign", str(reference_bundle), str(tmp_path / "in.parquet"), "-o",
                            str(tmp_path / "ray_out"), *keep, "--engine", "ray", "-q"])
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "ray_out").equals(table)  # the same columns, rows and bits


def test_a_bundle_from_a_newer_deepclust_draws_a_one_line_warning(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["versions"]["deepclust"] = "999.0"
    write_manifest(bundle_copy, manifest)
    r = run("inspect", bundle_copy)
    assert r.exit_code == 0, r.output
    warning = [line for line in r.output.splitlines() if "written by" in line]
    assert warning == ["warning: bundle written by deepclust 999.0, newer than this " + version("deepclust")]
    assert "UserWarning" not in r.output and "warnings.warn" not in r.output


def test_ctrl_c_while_assembling_keeps_the_chunks_and_the_rerun_says_it_only_assembled(tmp_path, reference_bundle,
                                                                                      digits_rows, monkeypatch):
    import re

    from deepclust.runtime.writers import ResultWriter

    np.save(tmp_path / "in.npy", digits_rows)
    target = tmp_path / ("a_long_folder_name_" * 4) / "labels_2026_12_01.parquet"  # over 80 columns
    target.parent.mkdir()
    args = ("assign", reference_bundle, tmp_path / "in.npy", "-o", target, "-q")
    real_write = ResultWriter.write

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultWriter, "write", ctrl_c)
    r = run(*args)
    n = len(digits_rows)
    assert r.exit_code == 130 and f"interrupted after {n} of {n} rows; run the same command again to resume" in r.output
    monkeypatch.setattr(ResultWriter, "write", real_write)
    r = run(*args)
    assert r.exit_code == 0, r.output
    # one line, however long the path (stdout is a pipe here, where rich would wrap at 80 columns)
    assert re.fullmatch(rf"scored {n} rows in [\d.]+s \(all resumed\) -> {re.escape(str(target))}", r.output.strip())
    np.testing.assert_array_equal(pq.read_table(target)["label"].to_numpy(),
                                  Assigner.load(reference_bundle).assign(digits_rows).labels)


def test_a_folder_where_the_output_file_goes_is_named_as_a_folder(tmp_path, reference_bundle, digits_rows):
    np.save(tmp_path / "in.npy", digits_rows)
    (tmp_path / "out.parquet").mkdir()  # not "pass --overwrite", which would then fail for the same folder
    _one_line_error(run("assign", reference_bundle, tmp_path / "in.npy", "-o", tmp_path / "out.parquet", "-q"),
                    "out.parquet: is a folder; the output is one .parquet file")


@pytest.mark.parametrize("module", ["joblib", "threadpoolctl", "torch.nn"])
def test_a_missing_module_of_the_train_extra_names_the_extra(module):
    from deepclust.cli.main import _install_hint

    assert "pip install 'deepclust[train]'" in _install_hint(ImportError("no module", name=module))
