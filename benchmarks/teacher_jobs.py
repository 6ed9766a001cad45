"""What sharing selflabel's teacher runs out over processes saves, and that it changes nothing.

    .venv/bin/python benchmarks/teacher_jobs.py --data fashion-mnist --data-dir ../shared/data \
        --pretrained benchmarks/work/pretrained/fashion-mnist-seed1-*.npz \
                     benchmarks/work/pretrained/fashion-mnist-seed1189033389-*.npz

Embeds the data set with each pretrained network (files `deepclust train --save-pretrained`
wrote; a `--pretrain-runs` fit's networks), then runs the teacher's UMAP + GMM runs
(``--runs`` on each network, ``--inits`` GMM fits each) once in this process and once shared
out over ``--jobs`` processes, and checks that every run's labels and posteriors are the same
bit for bit. UMAP with a seed is single-threaded, so one process leaves the other cores idle.
Prints a table and writes results/teacher_jobs.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from machine import describe  # this folder is on sys.path when the script runs

HERE = Path(__file__).resolve().parent
ESTIMATOR_OPTIONS = ("pretraining", "hflip", "augment", "acai", "architecture", "latent_dim", "epochs",
                     "batch_size", "lr", "seed")


def main() -> None:
    import joblib

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--pretrained", nargs="+", required=True, help="pretrained network files (--save-pretrained)")
    parser.add_argument("--runs", type=int, default=1, help="teacher runs on each network")
    parser.add_argument("--inits", type=int, default=30, help="GMM fits per run (30: the contrastive default)")
    parser.add_argument("--jobs", type=int, default=joblib.cpu_count(), help="processes (default: the cores)")
    parser.add_argument("--results", default=str(HERE / "results" / "teacher_jobs.json"))
    args = parser.parse_args()

    from deepclust.trainer.checkpoint import load_pretrained
    from deepclust.trainer.datasets import load_dataset
    from deepclust.trainer.estimator import DeepClustering
    from deepclust.trainer.metrics import cluster_accuracy
    from deepclust.trainer.selflabel import SelfLabelConfig, _run_all, seeded_runs

    ds = load_dataset(args.data, data_dir=args.data_dir)
    embeddings, seed = [], None
    for path in args.pretrained:
        options = load_pretrained(path).options
        seed = options["seed"] if seed is None else seed
        if "widths" in options:
            options["filters" if options["architecture"] == "conv" else "hidden"] = options["widths"]
        # A one-init k-means head on the raw embedding, only to get a fitted model to embed with.
        model = DeepClustering(10, method="kmeans", normalize=False, n_init=1,
                               **{k: v for k, v in options.items() if k in ESTIMATOR_OPTIONS + ("filters", "hidden")})
        model.fit(ds.x, preprocessing=ds.preprocessing, pretrained=path)
        embeddings.append(model.transform(ds.x))
    jobs = seeded_runs(embeddings, args.runs, seed)

    timings, teachers = {}, {}
    for n_jobs in (1, args.jobs):
        t0 = time.perf_counter()
        teachers[n_jobs] = list(_run_all(jobs, 10, SelfLabelConfig(gmm_inits=args.inits, jobs=n_jobs)))
        timings[n_jobs] = time.perf_counter() - t0
    identical = all(np.array_equal(a.labels, b.labels) and np.array_equal(a.confidence, b.confidence)
                    for a, b in zip(teachers[1], teachers[args.jobs]))
    accs = [round(cluster_accuracy(ds.y, t.labels), 4) for t in teachers[1]] if ds.y is not None else None

    print(f"{len(jobs)} teacher runs (UMAP + GMM, {args.inits} fits each), {len(ds.x):,} rows, {args.data}")
    print("| processes | seconds | speed-up |\n| --- | --- | --- |")
    for n_jobs, seconds in timings.items():
        print(f"| {n_jobs} | {seconds:.0f} | {timings[1] / seconds:.2f}x |")
    print(f"every run identical: {identical}; run ACCs {accs}")
    record = {"data": args.data, "n": len(ds.x), "pretrained": [Path(p).name for p in args.pretrained],
              "runs": len(jobs), "gmm_inits": args.inits, "seconds": {str(k): v for k, v in timings.items()},
              "speedup": timings[1] / timings[args.jobs], "identical": identical, "run_acc": accs,
              "machine": describe()}
    Path(args.results).write_text(json.dumps(record, indent=1) + "\n")
    if not identical:
        raise SystemExit("the runs differ between one process and several")


if __name__ == "__main__":
    main()
