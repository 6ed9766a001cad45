"""Pieces shared by the fine-tuning methods (DEC/IDEC, DCN, DKM): their starting centroids,
an endless stream of shuffled mini-batch indices, and the embedding of all rows in inference mode."""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .heads import HEADS, HeadResult

log = logging.getLogger("deepclust")

EMBED_CHUNK = 8192


def starting_partition(z: np.ndarray, k: int, *, init: str, normalize: bool, n_init: int, seed: int) -> HeadResult:
    """The ``init`` head's partition of ``z`` (n, d), found on directions when ``normalize``
    (the better partition on MNIST), with its centroids at the clusters' raw-space means."""
    z_seed = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12) if normalize else z
    start = HEADS[init](z_seed, k, n_init=n_init, seed=seed)
    labels = np.asarray(start.labels).copy()
    centroids = np.zeros((k, z.shape[1]), dtype=z.dtype)
    for j in np.unique(labels):
        centroids[j] = z[labels == j].mean(axis=0)
    _fill_empty_clusters(z, labels, centroids, init)
    return HeadResult(centroids, labels)


def _fill_empty_clusters(z: np.ndarray, labels: np.ndarray, centroids: np.ndarray, init: str) -> None:
    """Start each cluster no row fell in (a Gaussian mixture can leave components empty; its
    mean of no rows would be NaN) at the row farthest from its own centroid, taken from a
    cluster of more than one row, as k-means relocates an empty cluster. In place."""
    counts = np.bincount(labels, minlength=len(centroids))
    empty = np.flatnonzero(counts == 0)
    if not len(empty):
        return
    log.warning("--init %s left %d of %d clusters empty; each starts at the row farthest from its cluster's centre",
                init, len(empty), len(centroids))
    far_first = np.argsort(-((z - centroids[labels]) ** 2).sum(axis=1), kind="stable")
    rows = iter(far_first)
    for j in empty:
        row = next(r for r in rows if counts[labels[r]] > 1)
        counts[labels[row]] -= 1
        labels[row], counts[j] = j, 1
        centroids[j] = z[row]


def batch_indices(n: int, batch_size: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Full batches drawn from successive random permutations, forever."""
    while True:
        order = torch.randperm(n, generator=generator, device=device)
        for s in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[s:s + batch_size]


@torch.no_grad()
def embed(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``encoder``'s output for all rows, in chunks and in inference mode (its mode is restored)."""
    was_training = encoder.training
    encoder.eval()
    z = torch.cat([encoder(x[s:s + EMBED_CHUNK]) for s in range(0, len(x), EMBED_CHUNK)])
    encoder.train(was_training)
    return z


@torch.no_grad()
def embed_all(autoencoder: nn.Module, project: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The embedding the fine-tuning methods cluster: ``project`` (row-wise) of the encoder's output."""
    return project(embed(autoencoder.encoder, x))


def nearest(z: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return torch.cdist(z, centroids).argmin(dim=1)
