"""Nearest-centroid search with FAISS: an exact flat L2 index, on the GPU when there is one."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("deepclust")


def gpu_count() -> int:
    import faiss

    try:
        return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except RuntimeError:
        return 0


class CentroidIndex:
    """Built once per bundle; ``search`` returns (squared L2 distances, centroid ids)."""

    def __init__(self, centroids: np.ndarray, *, device: str = "auto"):
        import faiss

        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.k, self.dim = self.centroids.shape
        index = faiss.IndexFlatL2(self.dim)
        index.add(self.centroids)
        self.on_gpu = False
        if device in ("auto", "cuda") and gpu_count() > 0:
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, 0, index)
            self.on_gpu = True
        elif device == "cuda":
            log.warning("no FAISS GPU available; nearest-centroid search runs on CPU")
        if not self.on_gpu:
            # FAISS's OpenMP threads and onnxruntime's threads fight over the cores, which
            # costs more than the search itself: a flat search over k centroids is tiny.
            faiss.omp_set_num_threads(1)
        self.index = index

    def search(self, z: np.ndarray, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
        d, i = self.index.search(np.ascontiguousarray(z, dtype=np.float32), n)
        return d, i

    def all_distances(self, z: np.ndarray) -> np.ndarray:
        """Squared distances to every centroid, (n, k), in centroid order."""
        d, i = self.search(z, self.k)
        out = np.empty_like(d)
        np.put_along_axis(out, i, d, axis=1)
        return out
