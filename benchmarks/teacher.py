"""How much selflabel's teacher (UMAP + GMM, N2D) varies with its seeds, and whether a
higher GMM likelihood picks a better partition.

    .venv/bin/python benchmarks/teacher.py --data fashion-mnist \
        --pretrained benchmarks/work/pretrained/fashion-mnist-seed0-*.npz --umap-seeds 0 1 2 --n-init 1 10

Embeds the data set with a pretrained autoencoder (a file `deepclust train --save-pretrained`
wrote; the benchmark's cache under benchmarks/work/pretrained/ holds them), runs UMAP with
each seed and a full-covariance GMM with each number of initialisations on it, and appends
one record per (UMAP seed, n_init) to benchmarks/results/teacher.jsonl: the teacher's ACC
against the labels, the GMM's mean log-likelihood, the share of rows at posterior >= 0.99.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--pretrained", required=True, help="pretrained autoencoder file (--save-pretrained)")
    parser.add_argument("--umap-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-init", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--n-neighbors", type=int, default=20)
    parser.add_argument("--results", default=str(HERE / "results" / "teacher.jsonl"))
    args = parser.parse_args()

    import umap
    from sklearn.mixture import GaussianMixture

    from deepclust.trainer.checkpoint import load_pretrained
    from deepclust.trainer.datasets import load_dataset
    from deepclust.trainer.estimator import DeepClustering
    from deepclust.trainer.metrics import cluster_accuracy

    ds = load_dataset(args.data, data_dir=args.data_dir)
    options = load_pretrained(args.pretrained).options
    # A one-init k-means head on the raw embedding, only to get a fitted model; selflabel's
    # teacher sees the same raw embedding (no L2 normalisation).
    model = DeepClustering(10, method="kmeans", normalize=False, n_init=1, augment=options["augment"],
                           acai=options["acai"], architecture=options["architecture"],
                           latent_dim=options["latent_dim"],
                           **{"filters" if options["architecture"] == "conv" else "hidden": options["widths"]},
                           epochs=options["epochs"], batch_size=options["batch_size"],
                           lr=options["lr"], seed=options["seed"])
    model.fit(ds.x, preprocessing=ds.preprocessing, pretrained=args.pretrained)
    z = model.transform(ds.x)
    print(f"| UMAP seed | n_init | ACC | mean log-likelihood | posterior >= 0.99 | UMAP s |\n|---|---|---|---|---|---|")
    with Path(args.results).open("a") as out:
        for seed in args.umap_seeds:
            t0 = time.perf_counter()
            u = umap.UMAP(n_neighbors=args.n_neighbors, n_components=10, min_dist=0.0, random_state=seed,
                          n_jobs=1).fit_transform(z)
            umap_seconds = time.perf_counter() - t0
            for n_init in args.n_init:
                gmm = GaussianMixture(10, covariance_type="full", random_state=seed, n_init=n_init).fit(u)
                posterior = gmm.predict_proba(u)
                record = {"data": args.data, "pretraining_seed": options["seed"], "augment": options["augment"],
                          "n_neighbors": args.n_neighbors, "umap_seed": seed, "n_init": n_init,
                          "acc": cluster_accuracy(ds.y, posterior.argmax(axis=1)),
                          "log_likelihood": float(gmm.score(u)),
                          "confident": float((posterior.max(axis=1) >= 0.99).mean()),
                          "umap_seconds": umap_seconds, "machine": platform.processor() or platform.machine()}
                out.write(json.dumps(record) + "\n")
                out.flush()
                print(f"| {seed} | {n_init} | {record['acc']:.4f} | {record['log_likelihood']:.3f} | "
                      f"{record['confident']:.3f} | {umap_seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
