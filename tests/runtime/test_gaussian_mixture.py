"""The runtime's GMM rule reproduces scikit-learn's GaussianMixture without scikit-learn."""

import numpy as np
import pytest

from deepclust.runtime.gaussian_mixture import GaussianMixtureRule

sklearn_mixture = pytest.importorskip("sklearn.mixture")


def test_matches_sklearn_predict_and_posterior():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 1, (200, 3)), rng.normal(3, 0.3, (200, 3)) * [1, 4, 1]])
    gmm = sklearn_mixture.GaussianMixture(3, covariance_type="full", random_state=0).fit(z)
    rule = GaussianMixtureRule(gmm.means_, gmm.weights_, gmm.precisions_cholesky_)
    log_joint = rule.log_joint(rule.mahalanobis(z))
    np.testing.assert_array_equal(log_joint.argmax(1), gmm.predict(z))
    np.testing.assert_allclose(rule.posterior(log_joint), gmm.predict_proba(z), atol=1e-5)
    # Where covariances differ, nearest-mean labels are not the GMM's: the rule is needed.
    nearest = ((z[:, None] - gmm.means_[None]) ** 2).sum(-1).argmin(1)
    assert (nearest != gmm.predict(z)).any()
