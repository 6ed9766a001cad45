"""benchmarks/quality.py: one record per run, pretraining shared between heads, and the table."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
TINY = ["--hidden", "32,32", "--latent-dim", "4", "--epochs", "2", "--n-init", "2", "--max-iter", "30",
        "--update-interval", "10", "--no-int8", "-q"]


def test_heads_share_one_pretraining_and_records_reproduce_without_it(tmp_path):
    results = tmp_path / "quality.jsonl"
    proc = subprocess.run([sys.executable, str(SCRIPT), "run", "--configs", "ae+kmeans", "dec", "--data", "digits",
                           "--seeds", "0", "--results", str(results), "--work", str(tmp_path / "work"), "--", *TINY],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    first, second = [json.loads(line) for line in results.read_text().splitlines()]
    assert (first["config"], second["config"]) == ("ae+kmeans", "dec")
    assert (first["pretraining_shared"], second["pretraining_shared"]) == (False, True)
    assert second["timings"]["pretrain_seconds"] == first["timings"]["pretrain_seconds"]
    assert len(list((tmp_path / "work" / "pretrained").iterdir())) == 1
    for record in (first, second):  # the stored command stands alone: no cache file in it
        assert "pretrained" not in record["command"] and "--seed 0" in record["command"]
        assert set(record["metrics"]) >= {"acc", "nmi", "ari"}
    table = results.with_suffix(".md").read_text()
    assert "| digits | dec | --method dec " in table and "| digits | ae+kmeans |" in table


def _quality_module():
    if str(SCRIPT.parent) not in sys.path:  # as when the script runs: its folder's modules import
        sys.path.append(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_configuration_pins_what_its_name_says():
    """A configuration that leaves --method to the default measures whatever the default is
    that day: `--acai` alone once ran ACAI + augmentation + selflabel under the name acai+kmeans."""
    for name, (options, _, _) in _quality_module().CONFIGS.items():
        assert "--method" in options, name
        method = options[options.index("--method") + 1]
        assert method in name, name
        assert ("acai" in name) == ("--acai" in options), name
        assert name.endswith("-da") == ("--augment" in options), name
        pretraining = options[options.index("--pretrain") + 1] if "--pretrain" in options else "autoencoder"
        assert name.startswith("contrastive") == (pretraining == "contrastive"), name
        assert ("hflip" in name) == ("--hflip" in options), name
        views = options[options.index("--views") + 1] if "--views" in options else "strong"
        assert ("mild" in name) == (views == "mild"), name
        networks = options[options.index("--pretrain-runs") + 1] if "--pretrain-runs" in options else "1"
        assert name.startswith(f"contrastive{networks}-") == (pretraining == "contrastive" and networks != "1"), name
        runs = options[options.index("--teacher-runs") + 1] if "--teacher-runs" in options else "1"
        assert (f"selflabel{runs}-" in name) == (runs != "1"), name
        student = options[options.index("--student") + 1] if "--student" in options else "auto"
        assert name.endswith("-head") == (student == "head"), name


def test_pretraining_is_shared_only_between_runs_that_pretrain_alike():
    key = _quality_module()._pretraining_key
    assert key("mnist", 0, ["--method", "dec"]) == key("mnist", 0, ["--method", "dkm", "--tol", "0"])
    assert key("mnist", 0, ["--method", "dec"]) != key("mnist", 1, ["--method", "dec"])
    assert key("mnist", 0, ["--method", "selflabel"]) == key("mnist", 0, ["--method", "selflabel", "--student", "conv"])
    assert key("mnist", 0, ["--method", "dec"]) != key("mnist", 0, ["--augment", "--method", "dec"])
    # --augment warps a contrastive run's student only: its network is the same either way
    contrastive = ["--pretrain", "contrastive", "--method", "selflabel"]
    assert key("mnist", 0, contrastive) == key("mnist", 0, [*contrastive, "--augment"])
    # auto (explicit or by default) augments images, so it pretrains differently from kmeans
    for auto in (["--acai"], ["--acai", "--method", "auto"]):
        assert key("mnist", 0, auto) != key("mnist", 0, ["--acai", "--method", "kmeans"])


def test_a_pretrain_runs_fit_shares_its_first_network_and_pretrains_the_others_alone(tmp_path):
    quality = _quality_module()
    results, work = tmp_path / "quality.jsonl", tmp_path / "work" / "pretrained"
    proc = subprocess.run([sys.executable, str(SCRIPT), "run", "--configs", "selflabel-da", "--data", "digits",
                           "--seeds", "0", "--results", str(results), "--work", str(tmp_path / "work"), "--", *TINY,
                           "--pretrain-runs", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(results.read_text())
    assert record["pretraining_shared"] and record["fine_tune"]["pretrain_runs"] == 2
    assert "pretrained" not in record["command"] and "--pretrain-runs 2" in record["command"]
    # one file per network, each named as a one-network fit with its seed names its own
    options = quality.CONFIGS["selflabel-da"][0] + TINY
    expected = {f"{quality._pretraining_key('digits', seed, options)}.npz" for seed in (0, quality.run_seed(0, 1))}
    assert {p.name for p in work.iterdir()} == expected


def test_pretrain_runs_are_read_off_the_options():
    runs = _quality_module()._pretrain_runs
    assert runs(["--method", "selflabel"]) == (1, ["--method", "selflabel"])
    assert runs(["--pretrain-runs", "3", "--method", "selflabel"]) == (3, ["--method", "selflabel"])


def test_consensus_runs_from_before_100_starts_are_not_pooled_with_later_ones(tmp_path):
    def record(seed, acc, **fine_tune):
        return {"data": "fashion-mnist", "config": "contrastive3-hflip-selflabel2-da", "method": "selflabel",
                "device": "cpu", "seed": seed, "options": ["--method", "selflabel", "--student", "conv",
                                                           "--teacher-inits", "30"],
                "machine": {"processor": "cpu", "cpus": 2}, "metrics": {"acc": acc, "nmi": acc, "ari": acc},
                "timings": {"pretrain_seconds": 1, "cluster_seconds": 1},
                "fine_tune": {"student": "conv", "teacher_inits": 30, "teacher_runs": 2, **fine_tune}}

    results = tmp_path / "quality.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in (
        record(0, 0.5), record(1, 0.7), record(0, 0.6, consensus_inits=100), record(1, 0.8, consensus_inits=100))))
    _quality_module().table(type("Args", (), {"results": str(results)}))
    rows = [line for line in results.with_suffix(".md").read_text().splitlines() if "fashion-mnist" in line]
    assert len(rows) == 2
    old, = (row for row in rows if "(consensus of 10 k-means starts)" in row)
    new, = (row for row in rows if row is not old)
    assert "| 0.6000 ± 0.1414 |" in old and "| 0.7000 ± 0.1414 |" in new


def test_train_help_recommends_the_benchmarked_fashion_configuration():
    """`train --help`, the README's at-a-glance table and the benchmark row that measures them
    name the same options, so the number the README quotes is for what --help recommends."""
    from typer.testing import CliRunner

    from deepclust.cli.main import FASHION_OPTIONS, app

    options = FASHION_OPTIONS.split()
    assert options == _quality_module().CONFIGS["contrastive3-hflip-selflabel2-head"][0]
    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0 and FASHION_OPTIONS in " ".join(r.output.split())
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    assert f"| Fashion-MNIST | `{FASHION_OPTIONS}` |" in readme
