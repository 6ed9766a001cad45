"""The input transform the encoder was trained behind, applied by the runtime itself.

It is stored in the manifest so a bundle scores raw data exactly as the trainer saw it:
``x' = (x - offset) * scale``, with scalars (images: scale 1/255) or one value per
feature (tabular data: z-scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Preprocessing:
    offset: float | tuple[float, ...] = 0.0
    scale: float | tuple[float, ...] = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        def unpack(v):
            return tuple(float(a) for a in v) if isinstance(v, list) else float(v)

        return cls(offset=unpack(d.get("offset", 0.0)), scale=unpack(d.get("scale", 1.0)))

    def to_dict(self) -> dict:
        def pack(v):
            return list(v) if isinstance(v, tuple) else v

        return {"kind": "affine", "offset": pack(self.offset), "scale": pack(self.scale)}

    def apply_(self, x: np.ndarray) -> np.ndarray:
        """Transform a float32 array of shape (n, n_features) in place and return it."""
        if self.offset != 0.0:
            x -= np.asarray(self.offset, dtype=np.float32)
        if self.scale != 1.0:
            x *= np.asarray(self.scale, dtype=np.float32)
        return x
