"""How much selflabel's teacher (UMAP + GMM, N2D) varies with its seeds, and whether anything
that needs no labels picks the better partition.

    .venv/bin/python benchmarks/teacher.py --data fashion-mnist \
        --pretrained benchmarks/work/pretrained/fashion-mnist-seed2-*.npz --umap-seeds 0 1 2 3 4 --n-init 1

Embeds the data set with a pretrained autoencoder (a file `deepclust train --save-pretrained`
wrote; the benchmark's cache under benchmarks/work/pretrained/ holds them), runs UMAP with
each seed and a full-covariance GMM with each number of initialisations on it, and appends
one record per (UMAP seed, n_init) to benchmarks/results/teacher.jsonl: the teacher's ACC
against the labels, and label-free scores a selection rule could use: the GMM's mean
log-likelihood, the share of rows at posterior >= 0.99, the mean ARI to the other seeds'
partitions (the "most typical" teacher), and, in the autoencoder's embedding that every
teacher shares, the share of each row's 20 nearest neighbours in its cluster, the
silhouette (10,000 rows) and the Calinski-Harabasz index. A rule is worth building only if
it ranks the teachers as ACC does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from machine import describe  # this folder is on sys.path when the script runs

HERE = Path(__file__).resolve().parent
SCORES = ("acc", "log_likelihood", "confident", "mean_ari_to_others", "knn_consistency", "silhouette",
          "calinski_harabasz")


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
    from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, silhouette_score
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import NearestNeighbors

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
    neighbours = NearestNeighbors(n_neighbors=21).fit(z).kneighbors(z, return_distance=False)[:, 1:]
    sample = np.random.default_rng(0).choice(len(z), size=min(len(z), 10_000), replace=False)

    records, partitions = [], []
    for seed in args.umap_seeds:
        t0 = time.perf_counter()
        u = umap.UMAP(n_neighbors=args.n_neighbors, n_components=10, min_dist=0.0, random_state=seed,
                      n_jobs=1).fit_transform(z)
        umap_seconds = time.perf_counter() - t0
        for n_init in args.n_init:
            gmm = GaussianMixture(10, covariance_type="full", random_state=seed, n_init=n_init).fit(u)
            posterior = gmm.predict_proba(u)
            labels = posterior.argmax(axis=1)
            partitions.append(labels)
            records.append({"data": args.data, "pretraining_seed": options["seed"], "augment": options["augment"],
                            "architecture": options["architecture"], "pretraining_epochs": options["epochs"],
                            "n_neighbors": args.n_neighbors, "umap_seed": seed, "n_init": n_init,
                            "acc": cluster_accuracy(ds.y, labels),
                            "log_likelihood": float(gmm.score(u)),
                            "confident": float((posterior.max(axis=1) >= 0.99).mean()),
                            "knn_consistency": float((labels[neighbours] == labels[:, None]).mean()),
                            "silhouette": float(silhouette_score(z[sample], labels[sample])),
                            "calinski_harabasz": float(calinski_harabasz_score(z, labels)),
                            "umap_seconds": umap_seconds, "machine": describe()})
    for i, record in enumerate(records):
        others = [adjusted_rand_score(partitions[i], partitions[j]) for j, other in enumerate(records)
                  if j != i and other["n_init"] == record["n_init"]]
        record["mean_ari_to_others"] = float(np.mean(others)) if others else None

    print("| UMAP seed | n_init | " + " | ".join(SCORES) + " | UMAP s |\n|" + " --- |" * (len(SCORES) + 3))
    with Path(args.results).open("a") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
            cells = ["—" if record[s] is None else f"{record[s]:.4f}" for s in SCORES]
            print(f"| {record['umap_seed']} | {record['n_init']} | " + " | ".join(cells) +
                  f" | {record['umap_seconds']:.0f} |")


if __name__ == "__main__":
    main()
