"""DCN (Yang et al., 2017): alternate network updates with mini-batch k-means.

Each batch: (1) a gradient step on reconstruction + ``lam / 2 * ||z_i - m_{s_i}||²`` with
assignments and centroids fixed; (2) reassign the batch to its nearest centroids; (3) move
each centroid towards its new points with a per-cluster step ``1 / count`` — the paper's
sequential rule, which amounts to keeping every centroid the running mean of the points it
has been given (``centroid_update`` applies it in closed form, one cluster at a time).
With ``augment`` (as DEC-DA does for its methods) the assignments and the centroid update
use the clean batch, and the network step's losses the augmented one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .finetune import batch_indices, embed_all, nearest
from .pretrain import make_adam


@dataclass
class DCNConfig:
    # Weight of the compression loss against the per-pixel mean reconstruction error. 1.0
    # pulled MNIST below its k-means start (10,000 rows, seed 0: 0.832 -> 0.817); 0.01 gave
    # 0.849 (benchmarks/lambda_sweep.py).
    lam: float = 0.01
    update_interval: int = 140    # batches between checks of the label change
    tol: float = 0.001
    max_batches: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3


def centroid_update(centroids: torch.Tensor, counts: torch.Tensor, z: torch.Tensor, s: torch.Tensor) -> None:
    """In place: for each point i (in order) ``counts[s_i] += 1; m -= (m - z_i) / counts[s_i]``.

    That sequence ends where the running mean does: ``m' = (c m + sum z) / (c + n)``.
    """
    k = len(centroids)
    n_new = torch.bincount(s, minlength=k).to(counts.dtype)
    sums = torch.zeros_like(centroids).index_add_(0, s, z)
    hit = n_new > 0
    centroids[hit] = (counts[hit, None] * centroids[hit] + sums[hit]) / (counts[hit] + n_new[hit])[:, None]
    counts += n_new


def fine_tune(autoencoder: nn.Module, project: nn.Module, x: torch.Tensor, centroids: np.ndarray,
              config: DCNConfig, *, generator: torch.Generator, progress=None,
              augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Returns (centroids (k, d) float32, labels (n,) of the final model, run statistics).

    ``augment`` (rows -> rows): the network step trains on augmented batches towards the
    centroids their clean rows are assigned to."""
    m = torch.as_tensor(centroids, dtype=torch.float32, device=x.device).clone()
    z_all = embed_all(autoencoder, project, x)
    labels_prev = nearest(z_all, m)
    # Start the counts from the initial k-means partition, as the paper does.
    counts = torch.bincount(labels_prev, minlength=len(m)).to(torch.float32)
    opt = make_adam(autoencoder.parameters(), config.lr)
    task = progress.add_task("fine-tune (DCN)", total=config.max_batches, info="") if progress else None
    batches = batch_indices(len(x), config.batch_size, generator, x.device)
    change, batch = 1.0, 0
    autoencoder.train()
    while batch < config.max_batches:
        idx = next(batches)
        xb = x[idx]
        xa = xb if augment is None else augment(xb)
        z_raw = autoencoder.encoder(xa)
        z = project(z_raw)
        if augment is None:
            s = nearest(z.detach(), m)
        else:
            with torch.no_grad():
                s = nearest(project(autoencoder.encoder(xb)), m)
        loss = (nn.functional.mse_loss(autoencoder.decoder(z_raw), xa)
                + config.lam / 2 * ((z - m[s]) ** 2).sum(dim=1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            z_new = project(autoencoder.encoder(xb))
            centroid_update(m, counts, z_new, nearest(z_new, m))
        batch += 1
        if task is not None:
            progress.advance(task)
        if batch % config.update_interval == 0:
            labels = nearest(embed_all(autoencoder, project, x), m)
            change = float((labels != labels_prev).float().mean())
            labels_prev = labels
            if task is not None:
                progress.update(task, info=f"labels changed {change:.4f}")
            if change < config.tol:
                break
    labels = nearest(embed_all(autoencoder, project, x), m)
    autoencoder.eval()
    return m.cpu().numpy().astype(np.float32), labels.cpu().numpy(), {"batches": batch, "last_change": change}
