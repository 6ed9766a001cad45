"""What the encoder architecture costs at scoring time: dense (DEC's 784-500-500-2000-10) against
conv (DEC-DA's 32-64-128, the default `selflabel` student for images since it ships one) and
head (`--student head`: three frozen 16-32-64 contrastive networks and a head on their features,
as `contrastive3-hflip-selflabel2-head` ships).

In one run, on the same MNIST rows, interleaved over --repeats rounds (medians reported):
rows/s of the fp32 and int8 fused pipelines as `deepclust assign` runs them (read batches of
1,024 rows), and the encoder's multiply-adds per row. The two bundles are trained briefly here
(k-means on the raw embedding, so the exported encoder is exactly the architecture, as a
selflabel student's is; the head student from one epoch of pretraining and a one-fit teacher);
scoring speed does not depend on how well they were trained, int8
agreement does, so it is not reported here (the quality records hold it for real models).

    .venv/bin/python benchmarks/encoder_speed.py [--rows 131072] [--repeats 3]

Writes benchmarks/results/encoder_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from machine import describe  # this folder is on sys.path when the script runs

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
WORK = HERE / "work"
BATCH = 1024
# The estimator options of each encoder's brief training.
ENCODERS = {
    "dense": {"architecture": "dense", "normalize": False, "epochs": 2},
    "conv": {"architecture": "conv", "normalize": False, "epochs": 2},
    "head": {"method": "selflabel", "student": "head", "pretraining": "contrastive", "pretrain_runs": 3,
             "teacher_inits": 1, "epochs": 1},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=131_072, help="rows scored per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "encoder_speed.json")
    args = ap.parse_args()

    from deepclust.runtime import Assigner, load_bundle
    from deepclust.trainer.datasets import load_dataset
    from deepclust.trainer.estimator import DeepClustering
    from throughput import encoder_macs

    ds = load_dataset("mnist", data_dir=args.data_dir, download=False)
    x = np.resize(ds.x, (args.rows, *ds.x.shape[1:]))  # MNIST rows, tiled, as stored (uint8)
    WORK.mkdir(exist_ok=True)
    assigners, macs = {}, {}
    for arch, options in ENCODERS.items():
        path = WORK / f"encoder_speed_{arch}"
        print(f"training a {arch} bundle briefly (10,000 rows)...", flush=True)
        DeepClustering(10, device="cpu", seed=0, **options).fit(
            ds.x[:10_000], preprocessing=ds.preprocessing).save(path, overwrite=True)
        bundle = load_bundle(path)
        macs[arch] = encoder_macs(bundle)
        for precision in ("fp32", "int8"):
            assigners[(arch, precision)] = Assigner(bundle, device="cpu", precision=precision)
    samples: dict = {key: [] for key in assigners}
    for rep in range(args.repeats):
        print(f"round {rep + 1}/{args.repeats}", flush=True)
        for key, assigner in assigners.items():
            t = time.perf_counter()
            for _ in assigner.assign_batches(x[s:s + BATCH] for s in range(0, len(x), BATCH)):
                pass
            samples[key].append(len(x) / (time.perf_counter() - t))
    med = {key: statistics.median(v) for key, v in samples.items()}
    lines = ["| encoder | multiply-adds / row | fp32 rows/s | int8 rows/s | fp32 / dense | int8 / dense |",
             "| --- | --- | --- | --- | --- | --- |"]
    ratio = {arch: {p: med[(arch, p)] / med[("dense", p)] for p in ("fp32", "int8")} for arch in ENCODERS}
    for arch in ENCODERS:
        fp32, int8 = med[(arch, "fp32")], med[(arch, "int8")]
        lines.append(f"| {arch} | {macs[arch] / 1e6:.2f} M | {fp32:,.0f} | {int8:,.0f} | "
                     f"{ratio[arch]['fp32']:.2f}x | {ratio[arch]['int8']:.2f}x |")
    print("\n".join(lines))
    args.out.write_text(json.dumps({
        "rows": args.rows, "read_batch": BATCH, "repeats": args.repeats,
        "machine": describe(),
        "encoders": {arch: {"options": ENCODERS[arch], "macs_per_row": macs[arch],
                            "fp32_rows_per_s": med[(arch, "fp32")], "int8_rows_per_s": med[(arch, "int8")]}
                     for arch in ENCODERS},
        "over_dense": ratio, "samples": {f"{a}/{p}": v for (a, p), v in samples.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
