"""Augmentation invariance (DEC-DA, Guo et al. 2018): random small affine warps of images.

Each image gets its own rotation, shift and scale about its centre, drawn uniformly within
``AffineAugment``'s magnitudes, and is resampled bilinearly (zeros outside the image) with
``affine_grid`` + ``grid_sample`` on whatever device the batch is on. The draws come from a
``torch.Generator``, so a seed gives the same warps. ``RowAugmenter`` applies this to the flat
rows the trainer works on.

Used by pretraining (reconstruct the warped image from itself) and by the fine-tuning
methods (targets from clean data, the loss on warped batches), as DEC-DA does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .images import ImageLayout


@dataclass(frozen=True)
class AffineAugment:
    """Magnitudes of the random warps; each is drawn uniformly within its range.

    Parameters
    ----------
    rotation : float, default 10.0
        Largest rotation, in degrees either way.
    shift : float, default 0.1
        Largest shift, as a fraction of the width (horizontally) and height (vertically),
        either way. DEC-DA's setting: 0.1, and rotation 10.
    scale : tuple of float, default (0.9, 1.1)
        Range of the zoom factor (> 1 enlarges). DEC-DA uses none; (1.0, 1.0) turns it off.
    """

    rotation: float = 10.0
    shift: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)


def affine_warp(images: torch.Tensor, *, angle: torch.Tensor, shift: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """Rotate, scale and shift each image (n, C, H, W) about its centre.

    ``angle`` (n,) in degrees (clockwise as displayed, with rows going down), ``shift``
    (n, 2) in pixels (right, down), ``scale`` (n,). A pixel at ``u`` (relative to the centre)
    moves to ``scale * R(angle) u + shift``; values are sampled bilinearly, zeros outside.
    An integer shift with no rotation or zoom moves pixels exactly.
    """
    n, _, h, w = images.shape
    a = torch.deg2rad(angle.to(images.dtype))
    cos, sin = torch.cos(a), torch.sin(a)
    # grid_sample asks, for each output pixel, where to read: the inverse map
    # u_in = R(-angle) (u_out - shift) / scale, in pixels, converted to the normalised
    # coordinates of align_corners=False (pixel-centred, x_norm = u * 2 / w).
    sx, sy = 2.0 / w, 2.0 / h
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    inv = inv / scale.to(images.dtype)[:, None, None]
    to_norm = torch.tensor([sx, sy], dtype=images.dtype, device=images.device)
    linear = inv * to_norm[None, :, None] / to_norm[None, None, :]  # D R^-1 D^-1 / scale
    offset = -(inv @ shift.to(images.dtype)[:, :, None])[:, :, 0] * to_norm
    theta = torch.cat([linear, offset[:, :, None]], dim=2)
    grid = F.affine_grid(theta, [n, images.shape[1], h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_warp(images: torch.Tensor, config: AffineAugment, generator: torch.Generator) -> torch.Tensor:
    """``affine_warp`` with each image's angle, shift and scale drawn from ``generator``."""
    n, _, h, w = images.shape
    u = torch.rand(n, 4, generator=generator, device=images.device, dtype=images.dtype) * 2 - 1  # U[-1, 1)
    lo, hi = config.scale
    return affine_warp(
        images,
        angle=u[:, 0] * config.rotation,
        shift=u[:, 1:3] * torch.tensor([config.shift * w, config.shift * h], dtype=images.dtype, device=images.device),
        scale=lo + (u[:, 3] + 1) / 2 * (hi - lo))


class RowAugmenter:
    """Randomly warps flat rows (n, n_features) that are images laid out as ``layout``.

    Parameters
    ----------
    layout : ImageLayout
    config : AffineAugment
    generator : torch.Generator
        Source of the random warps; on the device of the rows it will be given.

    Examples
    --------
    >>> augment = RowAugmenter(ImageLayout(1, 8, 8), AffineAugment(), torch.Generator().manual_seed(0))
    >>> augment(torch.rand(5, 64)).shape
    torch.Size([5, 64])
    """

    def __init__(self, layout: ImageLayout, config: AffineAugment, generator: torch.Generator):
        self.layout = layout
        self.config = config
        self.generator = generator

    @torch.no_grad()
    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        images = self.layout.to_images(rows)
        return self.layout.to_rows(random_warp(images, self.config, self.generator)).contiguous()
