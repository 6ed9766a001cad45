"""Clustering heads fitted on the embedding: k-means and a Gaussian mixture.

Both run scikit-learn (k-means++ seeding, several inits, best inertia / likelihood kept);
at the sizes deep clustering works in (tens of dimensions) it is fast and exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class HeadResult:
    centroids: np.ndarray                         # (k, latent_dim) float32
    labels: np.ndarray                            # (n,) int
    arrays: dict = field(default_factory=dict)    # extra bundle arrays (GMM parameters)


def fit_kmeans(z: np.ndarray, k: int, *, n_init: int, seed: int) -> HeadResult:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z)
    return HeadResult(km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64))


def fit_gmm(z: np.ndarray, k: int, *, n_init: int, seed: int) -> HeadResult:
    """Full-covariance GMM initialised from k-means; labels are the posterior's argmax."""
    from sklearn.mixture import GaussianMixture

    from deepclust.runtime.bundle import GMM_PRECISIONS_CHOLESKY, GMM_WEIGHTS

    km = fit_kmeans(z, k, n_init=n_init, seed=seed)
    gmm = GaussianMixture(n_components=k, covariance_type="full", means_init=km.centroids, reg_covar=1e-5,
                          max_iter=200, random_state=seed).fit(z)
    return HeadResult(
        centroids=gmm.means_.astype(np.float32),
        labels=gmm.predict(z).astype(np.int64),
        arrays={GMM_WEIGHTS: gmm.weights_.astype(np.float64),
                GMM_PRECISIONS_CHOLESKY: gmm.precisions_cholesky_.astype(np.float64)},
    )


HEADS = {"kmeans": fit_kmeans, "gmm": fit_gmm}
