"""Score data with a bundle: preprocessing, the ONNX encoder, then the assignment rule.

``Assigner`` loads a bundle once and is safe to share between threads (onnxruntime's
``run`` and a FAISS flat search are both thread-safe; nothing here mutates shared state).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .bundle import (GAUSSIAN_MIXTURE, GMM_PRECISIONS_CHOLESKY, GMM_WEIGHTS, Bundle, Manifest,
                     load_bundle)
from .errors import InputError
from .gaussian_mixture import GaussianMixtureRule
from .readers import check_finite
from .search import CentroidIndex
from .session import create_session

DEFAULT_BATCH_SIZE = 4096


@dataclass
class Assignment:
    """Per-row results: ``labels`` (n,) int32 and ``distances`` (n,) float32 — squared L2 to the
    nearest centroid, or squared Mahalanobis distance for GMM bundles; ``soft`` (n, k) and
    ``embeddings`` (n, latent_dim) when asked for."""

    labels: np.ndarray
    distances: np.ndarray
    soft: np.ndarray | None = None
    embeddings: np.ndarray | None = None


class Assigner:
    """Assign rows to clusters with a verified bundle.

    Parameters
    ----------
    bundle : Bundle
        From :func:`deepclust.runtime.load_bundle`; or use :meth:`Assigner.load`.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where the encoder and the search run; "auto" uses CUDA when it is really there.
    batch_size : int, default 4096
        Rows per encoder call; bounds memory, whatever the size of ``x``.

    Examples
    --------
    >>> a = Assigner.load("models/digits")            # doctest: +SKIP
    >>> result = a.assign(x, soft=True)                # doctest: +SKIP
    >>> result.labels, result.distances, result.soft   # doctest: +SKIP
    """

    def __init__(self, bundle: Bundle, *, device: str = "auto", threads: int | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        self.bundle = bundle
        self.batch_size = int(batch_size)
        self.session = create_session(bundle.encoder_path, device=device, threads=threads)
        self._input_name = self.session.get_inputs()[0].name
        m = bundle.manifest
        self._gmm = None
        if m.assignment == GAUSSIAN_MIXTURE:
            self._gmm = GaussianMixtureRule(bundle.centroids, bundle.arrays[GMM_WEIGHTS],
                                            bundle.arrays[GMM_PRECISIONS_CHOLESKY])
        self.index = CentroidIndex(bundle.centroids, device=device)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs) -> "Assigner":
        """Load and verify the bundle at ``path`` (checksums, format version) and build the session."""
        return cls(load_bundle(path), **kwargs)

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def embed(self, x) -> np.ndarray:
        """Encoder output for raw rows ``x`` of shape (n, *sample_shape) or (n, n_features)."""
        x = self._validated_copy(x)
        return self._embed_prepared(x)

    def assign(self, x, *, soft: bool = False, embeddings: bool = False) -> Assignment:
        """Labels and distances for raw rows ``x``; ``soft`` adds (n, k) cluster probabilities
        (Student-t kernel as in DEC, or the GMM posterior), ``embeddings`` the latent vectors."""
        return self._assign_prepared(self._validated_copy(x), soft, embeddings)

    def assign_batches(self, batches: Iterable[np.ndarray], *, soft: bool = False,
                       embeddings: bool = False) -> Iterator[Assignment]:
        """Streaming form: one Assignment per input batch, for inputs larger than memory."""
        for x in batches:
            yield self.assign(x, soft=soft, embeddings=embeddings)

    # -- hot path: inputs are owned float32 (n, n_features) arrays, already checked ----------

    def _assign_prepared(self, x: np.ndarray, soft: bool, embeddings: bool) -> Assignment:
        z = self._embed_prepared(x)
        if self._gmm is not None:
            maha = self._gmm.mahalanobis(z)
            log_joint = self._gmm.log_joint(maha)
            labels = log_joint.argmax(axis=1)
            distances = np.take_along_axis(maha, labels[:, None], axis=1)[:, 0]
            probs = self._gmm.posterior(log_joint) if soft else None
        elif soft:
            d2 = self.index.all_distances(z)
            labels = d2.argmin(axis=1)
            distances = np.take_along_axis(d2, labels[:, None], axis=1)[:, 0]
            q = 1.0 / (1.0 + d2)  # Student-t kernel with one degree of freedom (DEC)
            probs = (q / q.sum(axis=1, keepdims=True)).astype(np.float32)
        else:
            d, i = self.index.search(z, 1)
            labels, distances, probs = i[:, 0], d[:, 0], None
        return Assignment(labels=labels.astype(np.int32), distances=distances.astype(np.float32),
                          soft=probs, embeddings=z if embeddings else None)

    def _embed_prepared(self, x: np.ndarray) -> np.ndarray:
        self.manifest.preprocessing.apply_(x)
        if len(x) <= self.batch_size:
            return self.session.run(None, {self._input_name: x})[0]
        out = np.empty((len(x), self.manifest.latent_dim), dtype=np.float32)
        for s in range(0, len(x), self.batch_size):
            out[s:s + self.batch_size] = self.session.run(None, {self._input_name: x[s:s + self.batch_size]})[0]
        return out

    def _validated_copy(self, x, source: str = "input", start: int = 0) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise InputError(f"{source}: dtype {x.dtype} is not numeric")
        n_features = self.manifest.input.n_features
        if x.ndim == 1 and x.size == n_features and n_features > 1:
            x = x[None, :]
        if x.ndim == 0:
            raise InputError(f"{source}: a scalar is not a row")
        if len(x) == 0:
            raise InputError(f"{source}: empty input (no rows)")
        if int(np.prod(x.shape[1:])) != n_features:
            raise InputError(self.shape_error(source, x.shape[1:]))
        out = np.array(x.reshape(len(x), n_features), dtype=np.float32, copy=True, order="C")
        check_finite(out, source, start)
        return out

    def shape_error(self, source, row_shape) -> str:
        spec = self.manifest.input
        got = int(np.prod(row_shape)) if len(row_shape) else 1
        shape = "x".join(str(s) for s in spec.sample_shape)
        return f"{source}: rows have {got} values, the model expects {spec.n_features} (sample shape {shape})"
