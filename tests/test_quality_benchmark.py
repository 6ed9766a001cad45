"""benchmarks/quality.py: one record per run, pretraining shared between heads, and the table."""

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
