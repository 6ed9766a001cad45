"""DEC and IDEC: fine-tune the encoder and the centroids until the soft assignments sharpen.

DEC (Xie et al., 2016): the soft assignment is a Student-t kernel
``q_ij ∝ (1 + ||z_i - mu_j||² / alpha) ^ (-(alpha + 1) / 2)``; the target sharpens it,
``p_ij ∝ q_ij² / f_j`` with cluster frequencies ``f_j = sum_i q_ij``; the loss is KL(P || Q).
IDEC (Guo et al., 2017) keeps the decoder: its loss is ``reconstruction + gamma * KL`` (gamma
0.1 in the paper's eq. 2 and code), so the reconstruction leads and the embedding keeps its
local structure. The target is recomputed on all data every ``update_interval`` batches, and
training stops once fewer than ``tol`` of the labels change between two updates. With
``augment`` (DEC-DA, Guo et al. 2018) the target still comes from clean data while q (and
IDEC's reconstruction, of the augmented batch itself) comes from augmented batches.

The exported model is unchanged in form: labels are the argmax of q, which is the nearest
centroid, so the runtime scores a DEC bundle with its plain nearest-centroid search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .finetune import batch_indices, embed_all, nearest
from .pretrain import make_adam


def soft_assignment(z: torch.Tensor, centroids: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Student-t similarity of each row of ``z`` (n, d) to each centroid (k, d), rows summing to 1."""
    d2 = ((z[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    q = (1.0 + d2 / alpha) ** (-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """DEC's auxiliary target: square q, divide by cluster frequency, renormalise rows."""
    w = q ** 2 / q.sum(dim=0)
    return w / w.sum(dim=1, keepdim=True)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) averaged over rows (0 log 0 = 0)."""
    return (torch.special.xlogy(p, p) - p * torch.log(q)).sum(dim=1).mean()


@dataclass
class DECConfig:
    reconstruct: bool = False     # IDEC: loss = reconstruction + gamma * KL; DEC: KL alone
    gamma: float = 0.1            # IDEC's weight of the clustering loss (Guo 2017: 0.1)
    alpha: float = 1.0
    update_interval: int = 140    # batches between target updates (IDEC's MNIST setting)
    tol: float = 0.001            # stop when fewer than this fraction of labels change
    max_batches: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3


def objective(kl: torch.Tensor, reconstruction: torch.Tensor | None, config: DECConfig) -> torch.Tensor:
    """DEC minimises KL(P || Q); IDEC the per-pixel mean squared error plus gamma times it."""
    return kl if not config.reconstruct else reconstruction + config.gamma * kl


def fine_tune(autoencoder: nn.Module, project: nn.Module, x: torch.Tensor, centroids: np.ndarray,
              config: DECConfig, *, generator: torch.Generator, progress=None,
              augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Jointly train the encoder (and the decoder for IDEC) and the centroids.

    The embedding clustered is ``project(autoencoder.encoder(x))`` (``project`` is the
    identity or the L2 normalisation). ``augment`` (rows -> rows): the loss sees augmented
    batches, the targets clean data. Returns (centroids (k, d) float32, labels (n,) of the
    final model, {"batches", "updates", "last_change"}).
    """
    mu = nn.Parameter(torch.as_tensor(centroids, dtype=torch.float32, device=x.device).clone())
    opt = make_adam(list(autoencoder.parameters()) + [mu], config.lr)
    task = progress.add_task("fine-tune", total=config.max_batches, info="") if progress else None
    batches = batch_indices(len(x), config.batch_size, generator, x.device)
    labels_prev, change, updates, batch = None, 1.0, 0, 0
    autoencoder.train()
    while batch < config.max_batches:
        if batch % config.update_interval == 0:
            with torch.no_grad():  # the target is a constant for the steps until the next update
                q_all = soft_assignment(embed_all(autoencoder, project, x), mu, config.alpha)
                p_all = target_distribution(q_all)
            labels = q_all.argmax(dim=1)
            updates += 1
            if labels_prev is not None:
                change = float((labels != labels_prev).float().mean())
                if task is not None:
                    progress.update(task, info=f"labels changed {change:.4f}")
                if change < config.tol:
                    break
            labels_prev = labels
        idx = next(batches)
        xb = x[idx] if augment is None else augment(x[idx])
        z_raw = autoencoder.encoder(xb)
        kl = kl_divergence(p_all[idx], soft_assignment(project(z_raw), mu, config.alpha))
        mse = nn.functional.mse_loss(autoencoder.decoder(z_raw), xb) if config.reconstruct else None
        loss = objective(kl, mse, config)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        batch += 1
        if task is not None:
            progress.advance(task)
    # Labels of the final weights: exactly what the exported bundle assigns.
    labels = nearest(embed_all(autoencoder, project, x), mu.detach())  # argmax q is the nearest centroid
    autoencoder.eval()
    return mu.detach().cpu().numpy().astype(np.float32), labels.cpu().numpy(), {
        "batches": batch, "updates": updates, "last_change": change}
