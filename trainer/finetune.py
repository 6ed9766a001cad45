"""Pieces shared by the fine-tuning methods (DEC/IDEC, DCN, DKM): their starting centroids,
an endless stream of shuffled mini-batch indices, and the embedding of all rows in inference mode."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from .heads import HEADS, HeadResult

EMBED_CHUNK = 8192


def starting_partition(z: np.ndarray, k: int, *, init: str, normalize: bool, n_init: int, seed: int) -> HeadResult:
    """The ``init`` head's partition of ``z`` (n, d), found on directions when ``normalize``
    (the better partition on MNIST), with its centroids at the clusters' raw-space means."""
    z_seed = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12) if normalize else z
    start = HEADS[init](z_seed, k, n_init=n_init, seed=seed)
    return HeadResult(np.stack([z[start.labels == j].mean(axis=0) for j in range(k)]), start.labels)


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
