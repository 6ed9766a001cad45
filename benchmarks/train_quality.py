"""Train with the CLI defaults on a data set and record the metrics and the time per phase.

    .venv/bin/python benchmarks/train_quality.py --data mnist --data-dir ../shared/data --seeds 0 1 2

Each run is `deepclust train --data DATA --out ... --seed S --json` in its own process; one
JSON record per run is appended to benchmarks/results/train_<data>.jsonl and a table printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("train_args", nargs="*", help="extra `deepclust train` options, after --")
    args = ap.parse_args()
    out_file = HERE / "results" / f"train_{args.data}.jsonl"
    out_file.parent.mkdir(exist_ok=True)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "deepclust.cli", "train", "--data", args.data, "--out", f"{tmp}/b",
                   "--seed", str(seed), "--json", *args.train_args]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr.strip())
            record = json.loads(proc.stdout)
        record.update(seed=seed, command=" ".join(["deepclust", *cmd[3:]]).replace(f"{tmp}/b", "BUNDLE"),
                      machine={"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()})
        with out_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
        rows.append(record)
        m, t = record["metrics"], record["timings"]
        print(f"seed {seed}: ACC {m['acc']:.4f} NMI {m['nmi']:.4f} ARI {m['ari']:.4f} | pretrain "
              f"{t['pretrain_seconds']:.0f}s ({t['seconds_per_epoch']:.2f}s/epoch) cluster {t['cluster_seconds']:.1f}s "
              f"export {t['export_seconds']:.1f}s", flush=True)
    if len(rows) > 1:
        import statistics as st

        for key in ("acc", "nmi", "ari"):
            vals = [r["metrics"][key] for r in rows]
            print(f"{key.upper()}: {st.mean(vals):.4f} ± {st.stdev(vals):.4f} over {len(vals)} seeds")


if __name__ == "__main__":
    main()
