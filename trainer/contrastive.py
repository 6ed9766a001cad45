"""Contrastive pretraining (SimCLR, Chen et al. 2020): an image embedding that ignores warps.

An autoencoder spends its embedding on whatever reconstructs pixels best; on Fashion-MNIST
that leaves pullovers, coats and shirts in one blob, and N2D's teacher built on it averages
ACC ~0.60 with a spread of ~0.03 between UMAP seeds. SimCLR instead trains the encoder so
that two random views of one image (zoom, rotation, shift, optional mirror, contrast,
cutout) embed close together and apart from the other images of the batch (the NT-Xent
loss, temperature 0.2, through a small projection head that is thrown away afterwards).
The same teacher on its 128-d features scores 0.65-0.67 on Fashion-MNIST for six UMAP seeds
of one 30-epoch pretraining, 0.57-0.68 (mean 0.63) over five runs on another: better on average,
as unsteady. With the likeliest of 30 GMM fits (``selflabel.mixture``, what the estimator does
after this pretraining) that second encoder teaches at 0.67-0.68 for every UMAP seed tried, but a
third pretraining seed's teacher scores 0.60, and one encoder's teacher moves as far (0.67 /
0.60) when its features change at float precision (computed in other chunk sizes). Encoders
pretrained from different seeds err on different rows, so the consensus of their teachers
(``pretrain_runs``) is the steadier one. The benchmark's rows are in the README.

``ContrastiveNet.encoder`` is what the teacher, or a k-means/GMM head, clusters; it takes
flat rows like every encoder here, so it exports to ONNX the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepclust.runtime.errors import DeepclustError

from .augment import AffineAugment, random_warp
from .images import ImageLayout
from .pretrain import make_adam

TEMPERATURE = 0.2      # Fashion-MNIST teacher: 0.655 at 0.2 against 0.626 at 0.5 (three UMAP seeds each)
FEATURES = 128         # width of the embedding the heads cluster
WEIGHT_DECAY = 1e-6


@dataclass(frozen=True)
class ContrastiveViews:
    """How each of the two views of an image is drawn (every magnitude uniform in its range).

    Parameters
    ----------
    rotation : float, default 15.0
        Largest rotation, in degrees either way.
    shift : float, default 4 / 28
        Largest shift, as a fraction of the width and height, either way.
    zoom : tuple of float, default (1.0, 1.5)
        Zoom factor range (> 1 enlarges: a random crop, resized).
    hflip : float, default 0.0
        Probability of mirroring left-right: right for clothes and most photographs, wrong
        for digits and text, so it is off unless asked for.
    contrast : tuple of float, default (0.6, 1.4)
        Range of the factor that multiplies all intensities.
    cutout : int, default 9
        Side, in pixels, of the square blanked about a random pixel in half of the views
        (clipped at the border).
    """

    rotation: float = 15.0
    shift: float = 4 / 28
    zoom: tuple[float, float] = (1.0, 1.5)
    hflip: float = 0.0
    contrast: tuple[float, float] = (0.6, 1.4)
    cutout: int = 9


# Named view sets (the estimator's ``views``). "mild" warps less and blanks nothing: on
# Fashion-MNIST its features' 20-nearest-neighbour label accuracy is 0.852-0.859 against
# 0.838-0.843 for "strong" (nine networks each), yet three networks' teachers are no better on
# average and far less steady (seeds 0-2: 0.691, 0.721, 0.633 against 0.689, 0.677, 0.672).
# Pooled over six networks its consensus teaches better (0.686-0.722 against 0.672-0.677 for
# strong), though the benchmark's six-network seed 2 reached only 0.669 (FINDINGS.md).
VIEWS = {"strong": ContrastiveViews(),
         "mild": ContrastiveViews(rotation=8.0, zoom=(1.0, 1.2), cutout=0)}


def named_views(name: str, hflip: bool) -> ContrastiveViews:
    """The view set ``name`` (a key of ``VIEWS``), mirroring half of the views if ``hflip``."""
    return replace(VIEWS[name], hflip=0.5 if hflip else 0.0)


def random_view(images: torch.Tensor, views: ContrastiveViews, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image (n, C, H, W), drawn from ``generator``. Values stay within
    the batch's range, except the blanked square: 0, like the outside of a warped image."""
    n, _, h, w = images.shape
    dev, dtype = images.device, images.dtype

    def uniform(*shape):
        return torch.rand(*shape, generator=generator, device=dev, dtype=dtype)

    out = random_warp(images, AffineAugment(views.rotation, views.shift, views.zoom), generator)
    mirror = uniform(n) < views.hflip
    out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    lo, hi = views.contrast
    out = (out * (lo + (hi - lo) * uniform(n))[:, None, None, None]).clamp(float(images.min()), float(images.max()))
    if views.cutout > 0:
        cy = torch.randint(0, h, (n,), generator=generator, device=dev)
        cx = torch.randint(0, w, (n,), generator=generator, device=dev)
        dy = torch.arange(h, device=dev)[None, :] - (cy[:, None] - views.cutout // 2)
        dx = torch.arange(w, device=dev)[None, :] - (cx[:, None] - views.cutout // 2)
        rows, cols = (dy >= 0) & (dy < views.cutout), (dx >= 0) & (dx < views.cutout)
        blank = (uniform(n) < 0.5)[:, None, None] & rows[:, :, None] & cols[:, None, :]
        out = out.masked_fill(blank[:, None], 0.0)
    return out


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's loss for projections ``a``, ``b`` (n, d) of two views of the same n images.

    Each of the 2n projections must pick its partner out of the other 2n - 1 by cosine
    similarity / ``temperature`` (cross-entropy over a softmax); the mean over all 2n.
    """
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = len(a)
    similarity = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, partner)


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]


class ContrastiveEncoder(nn.Module):
    """Flat rows (n, n_features) -> features (n, 128): 3x3 convolutions with batch norm and 2x2
    max pooling (channels ``widths``), then a linear layer."""

    def __init__(self, layout: ImageLayout, widths: Sequence[int] = (16, 32, 64), features: int = FEATURES):
        super().__init__()
        self.layout = layout
        channels = [layout.channels, *widths]
        self.conv = nn.Sequential(*[m for c_in, c_out in zip(channels[:-1], channels[1:]) for m in _block(c_in, c_out)])
        h, w = layout.height, layout.width
        for _ in widths:
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise DeepclustError(f"contrastive pretraining: its {len(widths)} 2x2 poolings leave nothing of a "
                                 f"{layout.height}x{layout.width} image (it needs at least {2 ** len(widths)}x"
                                 f"{2 ** len(widths)})")
        self.linear = nn.Linear(channels[-1] * h * w, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.conv(self.layout.to_images(x)), 1))


class ContrastiveNet(nn.Module):
    """The encoder plus SimCLR's projection head (used by the loss only, never exported)."""

    def __init__(self, layout: ImageLayout, widths: Sequence[int] = (16, 32, 64), features: int = FEATURES):
        super().__init__()
        self.encoder = ContrastiveEncoder(layout, widths, features)
        self.projection = nn.Sequential(nn.BatchNorm1d(features), nn.ReLU(), nn.Linear(features, features),
                                        nn.BatchNorm1d(features), nn.ReLU(), nn.Linear(features, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(x))


def pretrain_contrastive(net: ContrastiveNet, x: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                         generator: torch.Generator, views: ContrastiveViews = ContrastiveViews(),
                         progress=None) -> list[dict]:
    """Train ``net`` on NT-Xent over pairs of random views of the rows ``x`` (n, n_features).

    Adam on a one-cycle schedule peaking at ``2 * lr`` (5% warm-up); each epoch takes
    ``n // batch_size`` full batches (the loss's negatives are the rest of the batch, so a
    tail batch of a few rows would be a different, easier task). Returns one record per
    epoch: ``{"epoch", "loss", "seconds"}``.
    """
    layout = net.encoder.layout
    steps = len(x) // batch_size
    if steps < 1:
        raise DeepclustError(f"contrastive pretraining needs at least batch_size={batch_size} rows (it trains on "
                             f"full batches only), got {len(x)}; lower the batch size")
    opt = make_adam(net.parameters(), lr)
    for group in opt.param_groups:
        group["weight_decay"] = WEIGHT_DECAY
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2 * lr, total_steps=epochs * steps, pct_start=0.05)
    task = progress.add_task("pretrain (contrastive)", total=epochs * steps, info="") if progress else None
    history = []
    net.train()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=generator, device=x.device)
        total = torch.zeros((), device=x.device)
        for s in range(steps):
            images = layout.to_images(x[order[s * batch_size:(s + 1) * batch_size]])
            a = net(layout.to_rows(random_view(images, views, generator)))
            b = net(layout.to_rows(random_view(images, views, generator)))
            loss = nt_xent(a, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.detach()
            if task is not None:
                progress.advance(task)
        epoch_loss = float(total) / steps
        history.append({"epoch": epoch + 1, "loss": epoch_loss, "seconds": time.perf_counter() - t0})
        if task is not None:
            progress.update(task, info=f"epoch {epoch + 1}/{epochs} loss {epoch_loss:.4f}")
    net.eval()
    return history
