"""DKM (Fard et al., 2020): k-means made differentiable with softmax weights.

Loss: reconstruction + ``lam * mean_i sum_k ||z_i - r_k||² G_k(z_i)``, with
``G = softmax(-alpha ||z_i - r_k||²)`` over k; the centroids r are trained by gradient
descent with the network. As alpha grows, G becomes the hard assignment and the loss
becomes the k-means loss. alpha is fixed, or annealed as in the paper:
``alpha_{t+1} = 2 ** (1 / log(t + 2) ** 2) * alpha_t`` once per epoch, from ``alpha`` up to 1000.
DKM has no target computed apart from its loss: with ``augment`` the whole loss is on
augmented batches; label checks stay on clean data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .finetune import batch_indices, embed_all, nearest
from .pretrain import make_adam


@dataclass
class DKMConfig:
    # Weight of the k-means loss against the per-pixel mean reconstruction error. 1.0 pulled
    # MNIST below its k-means start (10,000 rows, seed 0: 0.832 -> 0.812); 0.01 gave 0.849
    # (benchmarks/lambda_sweep.py).
    lam: float = 0.01
    alpha: float = 1000.0         # fixed alpha; with anneal, the starting one
    anneal: bool = False
    alpha_max: float = 1000.0
    update_interval: int = 140
    tol: float = 0.001
    max_batches: int = 20_000
    batch_size: int = 256
    lr: float = 1e-3


def dkm_loss(z: torch.Tensor, centroids: torch.Tensor, alpha: float) -> torch.Tensor:
    """Softmax-weighted k-means loss, averaged over rows."""
    d2 = ((z[:, None, :] - centroids[None]) ** 2).sum(-1)
    return (d2 * torch.softmax(-alpha * d2, dim=1)).sum(dim=1).mean()


def next_alpha(alpha: float, step: int) -> float:
    return 2 ** (1 / math.log(step + 2) ** 2) * alpha


def fine_tune(autoencoder: nn.Module, project: nn.Module, x: torch.Tensor, centroids: np.ndarray,
              config: DKMConfig, *, generator: torch.Generator, progress=None,
              augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Returns (centroids (k, d) float32, labels (n,) of the final model, run statistics).

    ``augment`` (rows -> rows): the loss is computed on augmented batches."""
    r = nn.Parameter(torch.as_tensor(centroids, dtype=torch.float32, device=x.device).clone())
    opt = make_adam(list(autoencoder.parameters()) + [r], config.lr)
    task = progress.add_task("fine-tune (DKM)", total=config.max_batches, info="") if progress else None
    batches = batch_indices(len(x), config.batch_size, generator, x.device)
    steps_per_epoch = max(1, len(x) // config.batch_size)
    alpha, change, batch = config.alpha, 1.0, 0
    labels_prev = nearest(embed_all(autoencoder, project, x), r.detach())
    autoencoder.train()
    while batch < config.max_batches:
        xb = x[next(batches)]
        if augment is not None:
            xb = augment(xb)
        z_raw = autoencoder.encoder(xb)
        loss = (nn.functional.mse_loss(autoencoder.decoder(z_raw), xb)
                + config.lam * dkm_loss(project(z_raw), r, alpha))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        batch += 1
        if task is not None:
            progress.advance(task)
        if config.anneal and batch % steps_per_epoch == 0:
            alpha = min(config.alpha_max, next_alpha(alpha, batch // steps_per_epoch - 1))
        if batch % config.update_interval == 0:
            labels = nearest(embed_all(autoencoder, project, x), r.detach())
            change = float((labels != labels_prev).float().mean())
            labels_prev = labels
            if task is not None:
                progress.update(task, info=f"alpha {alpha:.3g}, labels changed {change:.4f}")
            # Annealing keeps moving the target: stop on the tolerance only at the final alpha.
            if change < config.tol and (not config.anneal or alpha >= config.alpha_max):
                break
    labels = nearest(embed_all(autoencoder, project, x), r.detach())
    autoencoder.eval()
    return r.detach().cpu().numpy().astype(np.float32), labels.cpu().numpy(), {
        "batches": batch, "last_change": change, "final_alpha": alpha}
