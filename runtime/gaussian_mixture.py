"""Assignment by a Gaussian mixture's posterior, for bundles trained with the GMM head.

Nearest mean is not the GMM's decision rule when covariances differ, so the bundle stores
the weights and Cholesky factors of the precisions, and the runtime evaluates the same
log-densities scikit-learn's ``GaussianMixture.predict`` does (full covariances).
"""

from __future__ import annotations

import numpy as np


class GaussianMixtureRule:
    def __init__(self, means: np.ndarray, weights: np.ndarray, precisions_cholesky: np.ndarray):
        self.means = np.asarray(means, dtype=np.float64)
        self.log_weights = np.log(np.asarray(weights, dtype=np.float64))
        self.prec_chol = np.asarray(precisions_cholesky, dtype=np.float64)
        k, d = self.means.shape
        if self.prec_chol.shape != (k, d, d) or self.log_weights.shape != (k,):
            raise ValueError(f"GMM parameters do not match means of shape {(k, d)}")
        self.log_det = np.log(np.diagonal(self.prec_chol, axis1=1, axis2=2)).sum(axis=1)
        self.mean_proj = np.einsum("kd,kde->ke", self.means, self.prec_chol)

    def mahalanobis(self, z: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row to each component, (n, k)."""
        y = np.einsum("nd,kde->nke", z.astype(np.float64), self.prec_chol) - self.mean_proj[None]
        return np.einsum("nke,nke->nk", y, y)

    def log_joint(self, maha: np.ndarray) -> np.ndarray:
        d = self.means.shape[1]
        return -0.5 * (d * np.log(2 * np.pi) + maha) + self.log_det + self.log_weights

    @staticmethod
    def posterior(log_joint: np.ndarray) -> np.ndarray:
        p = np.exp(log_joint - log_joint.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
