"""ACC with Hungarian matching, and the sklearn-backed scores, on hand-checked examples."""

import numpy as np
import pytest

pytest.importorskip("scipy")
from deepclust.trainer.metrics import cluster_accuracy, clustering_scores  # noqa: E402


def test_acc_ignores_cluster_names():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0


def test_acc_hand_computed():
    # Best mapping: cluster 5 -> class 0 (2 right), cluster 7 -> class 1 (2 right); one row wrong.
    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([5, 5, 7, 7, 5])
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(4 / 5)


def test_acc_with_more_clusters_than_classes():
    # Four clusters, two classes: only two clusters can be matched.
    y_true = np.array([0, 0, 0, 1, 1, 1])
    y_pred = np.array([0, 0, 1, 2, 2, 3])
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_scores_perfect_and_random():
    y = np.repeat(np.arange(4), 50)
    perfect = clustering_scores(y, (y + 1) % 4)
    assert all(perfect[k] == pytest.approx(1.0) for k in ("acc", "nmi", "ari", "v_measure"))
    rnd = clustering_scores(y, np.random.default_rng(0).integers(0, 4, len(y)))
    assert rnd["ari"] < 0.1 and rnd["nmi"] < 0.1
