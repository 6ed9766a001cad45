"""Clustering quality against ground-truth labels: ACC (Hungarian matching), NMI, ARI, V-measure."""

from __future__ import annotations

import numpy as np


def cluster_accuracy(y_true, y_pred) -> float:
    """Accuracy under the best one-to-one mapping of clusters to classes (Hungarian algorithm).

    Works when the number of clusters differs from the number of classes: unmatched
    clusters count as errors.
    """
    from scipy.optimize import linear_sum_assignment

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape}, y_pred {y_pred.shape}; they should match")
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(counts, (p, t), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(y_true))


def clustering_scores(y_true, y_pred) -> dict:
    """``{"acc", "nmi", "ari", "v_measure"}`` as floats."""
    from sklearn import metrics

    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": float(metrics.normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(metrics.adjusted_rand_score(y_true, y_pred)),
        "v_measure": float(metrics.v_measure_score(y_true, y_pred)),
    }
