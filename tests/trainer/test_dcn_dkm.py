"""DCN's centroid update and DKM's loss against their definitions."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from deepclust.trainer.dcn import centroid_update  # noqa: E402
from deepclust.trainer.dkm import dkm_loss, next_alpha  # noqa: E402


def test_dcn_centroid_update_equals_the_papers_sequential_rule():
    rng = np.random.default_rng(0)
    m0 = rng.normal(size=(3, 2))
    counts0 = np.array([4.0, 1.0, 7.0])
    z = rng.normal(size=(10, 2))
    s = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 1])  # cluster 2 gets no points
    m_seq, c_seq = m0.copy(), counts0.copy()
    for zi, si in zip(z, s):  # Yang et al. 2017, Algorithm 1: c_k += 1; m_k -= (m_k - z_i) / c_k
        c_seq[si] += 1
        m_seq[si] -= (m_seq[si] - zi) / c_seq[si]
    m, counts = torch.tensor(m0, dtype=torch.float64), torch.tensor(counts0, dtype=torch.float64)
    centroid_update(m, counts, torch.tensor(z), torch.tensor(s))
    np.testing.assert_allclose(m.numpy(), m_seq, rtol=1e-12)
    np.testing.assert_array_equal(counts.numpy(), c_seq)
    np.testing.assert_array_equal(m[2].numpy(), m0[2])


def test_dkm_loss_tends_to_the_kmeans_loss_as_alpha_grows():
    g = torch.Generator().manual_seed(0)
    z, r = torch.randn(40, 3, generator=g), torch.randn(4, 3, generator=g)
    kmeans = ((z[:, None] - r[None]) ** 2).sum(-1).min(dim=1).values.mean()
    gaps = [abs(float(dkm_loss(z, r, a) - kmeans)) for a in (0.1, 1.0, 10.0, 1e4)]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-6
    # alpha -> 0: uniform weights, the mean distance to all centroids
    mean_all = ((z[:, None] - r[None]) ** 2).sum(-1).mean()
    assert float(dkm_loss(z, r, 1e-9)) == pytest.approx(float(mean_all), rel=1e-6)


def test_dkm_annealing_grows_alpha():
    alphas = [0.1]
    for t in range(5):
        alphas.append(next_alpha(alphas[-1], t))
    assert all(b > a for a, b in zip(alphas, alphas[1:]))
    assert alphas[1] == pytest.approx(0.1 * 2 ** (1 / np.log(2) ** 2))

