"""DCN's and DKM's clustering-loss weight (lambda) on a subset of MNIST: where their defaults come from.

    .venv/bin/python benchmarks/lambda_sweep.py --pretrained benchmarks/work/pretrained/mnist-seed0-<key>.npz \
        --method dcn --lam 1 0.05 0.01 0.00128

Starts from a pretrained autoencoder (a `deepclust train --save-pretrained` file of MNIST,
plain pretraining), takes --rows random MNIST images, starts the centroids as the estimator
does (k-means on the L2-normalised embedding, centroids at the raw means) and fine-tunes
--batches batches with each lambda (tol 0: no early stop). Prints ACC before and after; one
thread per run, so two can share the 2-core machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--method", choices=["dcn", "dkm"], required=True)
    parser.add_argument("--lam", type=float, nargs="+", required=True)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)

    from torch import nn

    from deepclust.trainer import dcn, dkm
    from deepclust.trainer.autoencoder import DenseAutoencoder
    from deepclust.trainer.checkpoint import load_pretrained
    from deepclust.trainer.datasets import load_dataset
    from deepclust.trainer.finetune import starting_partition
    from deepclust.trainer.metrics import cluster_accuracy

    ds = load_dataset("mnist", data_dir=args.data_dir)
    features = ds.preprocessing.apply_(np.array(ds.x.reshape(len(ds.x), -1), dtype=np.float32))
    idx = np.random.default_rng(0).choice(len(features), args.rows, replace=False)
    x, y = torch.from_numpy(features[idx]), ds.y[idx]
    pretrained = load_pretrained(args.pretrained)
    print("| method | lambda | ACC at the k-means start | ACC after | batches | seconds |\n|---|---|---|---|---|---|")
    for lam in args.lam:
        ae = DenseAutoencoder(features.shape[1], pretrained.options["widths"], pretrained.options["latent_dim"])
        ae.load_state_dict(pretrained.state)
        with torch.no_grad():
            z = ae.encoder(x).numpy()
        start = starting_partition(z, 10, init="kmeans", normalize=True, n_init=5, seed=0)
        generator = torch.Generator().manual_seed(0)
        module, config_class = (dcn, dcn.DCNConfig) if args.method == "dcn" else (dkm, dkm.DKMConfig)
        config = config_class(lam=lam, max_batches=args.batches, tol=0.0)
        t0 = time.perf_counter()
        _, labels, info = module.fine_tune(ae, nn.Identity(), x, start.centroids, config, generator=generator)
        print(f"| {args.method} | {lam:g} | {cluster_accuracy(y, start.labels):.4f} | "
              f"{cluster_accuracy(y, labels):.4f} | {info['batches']} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
