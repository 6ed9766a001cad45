"""How flat rows are images: the layout that maps (n, n_features) to (n, C, H, W) and back.

The runtime feeds encoders flat rows, in the order the data was stored. Image layers
(convolutions, affine warps) need them as (n, C, H, W); ``ImageLayout`` reads that from the
sample shape the trainer was given:

- ``(H, W)``: one channel (IDX files, scikit-learn's digits, grey-scale image folders);
- a 3-D shape: channels on the shorter of its two outer axes, channels-last on a tie:
  ``(H, W, C)`` as image folders (Pillow) and most arrays store colour images, e.g.
  ``(32, 32, 3)``, and ``(C, H, W)`` as torch stores them, e.g. ``(3, 32, 32)`` or ``(1, 28, 28)``.

Anything else (a 1-D table row, 4-D samples) is not an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from deepclust.runtime.errors import DeepclustError


@dataclass(frozen=True)
class ImageLayout:
    """The shape of one image and where its channel axis is in the flat row.

    Parameters
    ----------
    channels, height, width : int
    channels_last : bool
        True when rows store ``(H, W, C)``, False for ``(C, H, W)`` (always False for C = 1,
        where the two orders are the same).
    """

    channels: int
    height: int
    width: int
    channels_last: bool = False

    @classmethod
    def from_sample_shape(cls, sample_shape: Sequence[int], *, needed_by: str = "image layers") -> "ImageLayout":
        """The layout of samples of shape ``sample_shape``; DeepclustError if they are not images.

        ``needed_by`` names what asks (e.g. ``"architecture='conv'"``) in the error message.
        """
        shape = tuple(int(s) for s in sample_shape)
        if len(shape) == 2 and min(shape) >= 1:
            return cls(1, *shape)
        if len(shape) == 3 and min(shape) >= 1:
            if shape[2] <= shape[0]:
                return cls(shape[2], shape[0], shape[1], channels_last=shape[2] > 1)
            return cls(*shape)
        raise DeepclustError(
            f"{needed_by} needs image samples of shape (H, W), (H, W, C) or (C, H, W); got sample shape {shape} "
            "(load images as an IDX file, an image folder, or an array of shape (n, H, W[, C]))")

    @property
    def n_features(self) -> int:
        return self.channels * self.height * self.width

    def to_images(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, n_features) -> (n, C, H, W). A view when channels come first; exports to ONNX
        with a dynamic batch axis (the batch size is never written into the graph)."""
        if self.channels_last:
            return rows.reshape(-1, self.height, self.width, self.channels).permute(0, 3, 1, 2)
        return rows.reshape(-1, self.channels, self.height, self.width)

    def to_rows(self, images: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) -> (n, n_features), in the order the rows store values."""
        if self.channels_last:
            images = images.permute(0, 2, 3, 1)
        return images.reshape(len(images), self.n_features)
