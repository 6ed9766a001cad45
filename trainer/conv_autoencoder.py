"""Convolutional autoencoder (DEC-DA's ConvAE, Guo et al. 2018) for images of any size.

Encoder: Conv(32, 5x5, stride 2) - Conv(64, 5x5, stride 2) - Conv(128, 3x3, stride 2) -
flatten - Linear(latent), ReLU between the layers and none after the last. The decoder
mirrors it: Linear - ReLU - reshape - transposed convolutions back to the input size.

Like the dense autoencoder, the encoder takes the flat rows the runtime feeds it,
(n, n_features), and reshapes them itself (see ``images.ImageLayout``), so a conv bundle is
scored by the same runtime and the same fused pipeline.

Sizes are computed per axis, for any H x W: 5x5 layers pad by 2 (an axis of s becomes
ceil(s / 2)); the 3x3 layer pads by 1 on even axes (s / 2) and not at all on odd ones
((s - 1) / 2, which covers every pixel exactly). For 28 x 28 that is 14, 7, then 3 — Keras's
"same", "same", "valid" in DEC-DA — and for 8 x 8 digits 4, 2, 1. Each transposed
convolution gets the output padding that lands exactly on its encoder layer's input size.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .autoencoder import Autoencoder
from .images import ImageLayout


def _padding(size: int, kernel: int) -> int:
    if kernel == 3 and size % 2 == 1 and size >= 3:
        return 0
    return kernel // 2


def _out_size(size: int, kernel: int, padding: int, stride: int = 2) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvEncoder(nn.Module):
    """Flat rows (n, n_features) -> embeddings (n, latent_dim), through convolutions.

    Parameters
    ----------
    layout : ImageLayout
        How the rows are images.
    filters : sequence of int, default (32, 64, 128)
        Channels of the stride-2 convolutions; kernels are 5x5 except the last, 3x3.
    latent_dim : int, default 10
    """

    def __init__(self, layout: ImageLayout, filters: Sequence[int] = (32, 64, 128), latent_dim: int = 10):
        super().__init__()
        self.layout = layout
        kernels = [5] * (len(filters) - 1) + [3]
        channels = [layout.channels, *filters]
        layers: list[nn.Module] = []
        # (kernel, padding, input size) per layer and axis, for the decoder to mirror.
        self.plan: list[tuple[int, tuple[int, int], tuple[int, int]]] = []
        size = (layout.height, layout.width)
        for c_in, c_out, k in zip(channels[:-1], channels[1:], kernels):
            pad = (_padding(size[0], k), _padding(size[1], k))
            layers += [nn.Conv2d(c_in, c_out, k, stride=2, padding=pad), nn.ReLU()]
            self.plan.append((k, pad, size))
            size = (_out_size(size[0], k, pad[0]), _out_size(size[1], k, pad[1]))
        self.feature_shape = (channels[-1], *size)  # what the convolutions leave, per image
        self.conv = nn.Sequential(*layers)
        self.linear = nn.Linear(channels[-1] * size[0] * size[1], latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.conv(self.layout.to_images(x)), 1))


class ConvDecoder(nn.Module):
    """Embeddings (n, latent_dim) -> flat rows (n, n_features): the encoder's mirror."""

    def __init__(self, encoder: ConvEncoder):
        super().__init__()
        self.layout = encoder.layout
        self.feature_shape = encoder.feature_shape
        c, h, w = encoder.feature_shape
        self.linear = nn.Linear(encoder.linear.out_features, c * h * w)
        convs = [m for m in encoder.conv if isinstance(m, nn.Conv2d)]
        layers: list[nn.Module] = [nn.ReLU()]
        size = (h, w)
        for conv, (k, pad, target) in zip(reversed(convs), reversed(encoder.plan)):
            out_pad = tuple(t - ((s - 1) * 2 - 2 * p + k) for t, s, p in zip(target, size, pad))
            layers += [nn.ConvTranspose2d(conv.out_channels, conv.in_channels, k, stride=2, padding=pad,
                                          output_padding=out_pad), nn.ReLU()]
            size = target
        self.deconv = nn.Sequential(*layers[:-1])  # no ReLU after the last: an unbounded output

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).reshape(-1, *self.feature_shape)
        return self.layout.to_rows(self.deconv(h))


class ConvAutoencoder(Autoencoder):
    """``encoder``: (n, n_features) -> (n, latent_dim) through convolutions; ``decoder`` mirrors it.

    Parameters
    ----------
    layout : ImageLayout
        How the flat rows are images (``ImageLayout.from_sample_shape(sample_shape)``).
    filters : sequence of int, default (32, 64, 128)
        Channels of the encoder's stride-2 convolutions (DEC-DA's).
    latent_dim : int, default 10

    Examples
    --------
    >>> ae = ConvAutoencoder(ImageLayout(1, 28, 28))
    >>> z, x_hat = ae(torch.zeros(4, 784))
    >>> tuple(z.shape), tuple(x_hat.shape)
    ((4, 10), (4, 784))
    """

    def __init__(self, layout: ImageLayout, filters: Sequence[int] = (32, 64, 128), latent_dim: int = 10):
        super().__init__()
        self.encoder = ConvEncoder(layout, filters, latent_dim)
        self.decoder = ConvDecoder(self.encoder)
