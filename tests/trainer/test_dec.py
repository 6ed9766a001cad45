"""DEC/IDEC: the kernel, the target and the loss against hand-computed values."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from deepclust.trainer.dec import DECConfig, kl_divergence, objective, soft_assignment, target_distribution  # noqa: E402


def test_soft_assignment_hand_computed():
    z = torch.tensor([[0.0, 0.0]])
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # squared distances 1 and 4
    expected = np.array([1 / 2, 1 / 5]) / (1 / 2 + 1 / 5)
    np.testing.assert_allclose(soft_assignment(z, mu)[0].numpy(), expected, rtol=1e-6)
    # alpha = 2: (1 + d2 / 2) ** -1.5
    k2 = np.array([1.5 ** -1.5, 3.0 ** -1.5])
    np.testing.assert_allclose(soft_assignment(z, mu, alpha=2.0)[0].numpy(), k2 / k2.sum(), rtol=1e-6)


def test_target_distribution_hand_computed():
    q = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    # f = (0.9, 1.1); q^2 / f = [[0.4, 0.16/1.1], [0.1, 0.49/1.1]]; then rows renormalised
    w = np.array([[0.4, 0.16 / 1.1], [0.1, 0.49 / 1.1]])
    np.testing.assert_allclose(target_distribution(q).numpy(), w / w.sum(1, keepdims=True), rtol=1e-6)


def test_target_is_sharper_than_q():
    q = torch.softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    p = target_distribution(q)
    entropy = lambda a: -(a * a.log()).sum(1).mean()  # noqa: E731
    assert entropy(p) < entropy(q)


def test_kl_divergence_hand_computed():
    assert float(kl_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]]))) == pytest.approx(math.log(2))
    q = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    assert float(kl_divergence(q, q)) == pytest.approx(0.0, abs=1e-7)



def test_idec_objective_is_reconstruction_plus_gamma_times_kl():
    # Guo 2017 eq. 2: L = Lr + gamma * Lc with gamma 0.1; DEC is Lc alone.
    kl, mse = torch.tensor(2.0), torch.tensor(0.5)
    assert float(objective(kl, mse, DECConfig(reconstruct=True))) == pytest.approx(0.5 + 0.1 * 2.0)
    assert float(objective(kl, mse, DECConfig(reconstruct=True, gamma=0.5))) == pytest.approx(1.5)
    assert float(objective(kl, None, DECConfig())) == pytest.approx(2.0)
