"""ACAI: the critic's targets and the autoencoder's term against hand-computed values, and a
pretraining run whose critic learns."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from deepclust.runtime.bundle import load_bundle  # noqa: E402
from deepclust.trainer.acai import (ACAIConfig, ACAIRegularizer, Critic, adversarial_loss, critic_loss,  # noqa: E402
                                    mix_latents)
from deepclust.trainer.autoencoder import DenseAutoencoder  # noqa: E402
from deepclust.trainer.estimator import DeepClustering  # noqa: E402
from deepclust.trainer.pretrain import pretrain_autoencoder  # noqa: E402


def first_column(x):
    """A stub critic: its answer for a row is the row's first value."""
    return x[:, 0]


def test_mix_latents_pairs_each_row_with_the_reversed_batch():
    z = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    alpha = torch.tensor([0.25, 0.5])
    # row 0: 0.25 * (0, 0) + 0.75 * (2, 4); row 1: 0.5 * (2, 4) + 0.5 * (0, 0)
    torch.testing.assert_close(mix_latents(z, alpha), torch.tensor([[1.5, 3.0], [1.0, 2.0]]))


def test_critic_regresses_alpha_on_interpolations_and_zero_on_the_gamma_mix():
    alpha = torch.tensor([0.1, 0.4])
    x_mix = torch.tensor([[0.1, 5.0], [0.4, -3.0]])      # the critic answers exactly alpha
    x = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    x_hat = torch.tensor([[0.0, 7.0], [0.0, 9.0]])       # gamma-mix: first column 0, the critic answers 0
    assert float(critic_loss(first_column, x, x_hat, x_mix, alpha, gamma=0.2)) == pytest.approx(0.0, abs=1e-12)
    # Off by 0.1 on both interpolations: first term (0.01 + 0.01) / 2. Real rows x = (1, .), x_hat = (0, .):
    # the mix's first column is 0.2 * 1 + 0.8 * 0 = 0.2 and 0.2 * 1 + 0.8 * 0.5 = 0.6, so (0.04 + 0.36) / 2.
    x_mix_off = x_mix + torch.tensor([[0.1, 0.0], [-0.1, 0.0]])
    x, x_hat = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    expected = (0.01 + 0.01) / 2 + (0.04 + 0.36) / 2
    assert float(critic_loss(first_column, x, x_hat, x_mix_off, alpha, gamma=0.2)) == pytest.approx(expected)


def test_adversarial_term_is_the_critic_answer_squared():
    assert float(adversarial_loss(first_column, torch.tensor([[1.0, 9.0], [-2.0, 9.0]]))) == pytest.approx(2.5)


def test_critic_copies_the_encoder_architecture_with_fresh_weights():
    torch.manual_seed(0)
    encoder = DenseAutoencoder(12, (8,), 3).encoder
    critic = Critic(encoder)
    assert [p.shape for p in critic.parameters()] == [p.shape for p in encoder.parameters()]
    assert not torch.equal(next(critic.parameters()), next(encoder.parameters()))
    x = torch.rand(5, 12)
    torch.testing.assert_close(critic(x), critic.net(x).mean(dim=1))


def test_the_autoencoder_term_drives_the_critic_answer_to_zero_and_leaves_the_critic_alone():
    torch.manual_seed(0)
    ae = DenseAutoencoder(12, (), 3)  # linear encoder and decoder: the critic is one linear layer too
    acai = ACAIRegularizer(ae, ACAIConfig(), lr=1e-3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        acai.critic.net[-1].bias.fill_(1.0)  # a critic that starts far from 0 on anything decoded
    critic_before = [p.detach().clone() for p in acai.critic.parameters()]
    opt = torch.optim.Adam(ae.decoder.parameters(), lr=0.05)
    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    answers = []
    for _ in range(50):
        term, (x_mix, alpha) = acai.autoencoder_term(ae.decoder, z)
        with torch.no_grad():
            answers.append(float(acai.critic(x_mix).abs().mean()))
            assert float(term) == pytest.approx(0.5 * float((acai.critic(x_mix) ** 2).mean()), rel=1e-5)
        assert ((alpha >= 0) & (alpha <= 0.5)).all()
        opt.zero_grad()
        term.backward()
        opt.step()
    assert answers[-1] < 0.2 * answers[0]
    assert all(p.grad is None for p in acai.critic.parameters())
    assert all(torch.equal(a, b) for a, b in zip(critic_before, acai.critic.parameters()))


def test_pretraining_with_acai_trains_the_critic():
    torch.manual_seed(0)
    x = torch.rand(256, 16, generator=torch.Generator().manual_seed(0))
    ae = DenseAutoencoder(16, (32,), 4)
    acai = ACAIRegularizer(ae, ACAIConfig(), lr=1e-3, generator=torch.Generator().manual_seed(0))
    critic_before = [p.detach().clone() for p in acai.critic.parameters()]
    history = pretrain_autoencoder(ae, x, epochs=6, batch_size=32, lr=1e-3, generator=torch.Generator().manual_seed(0),
                                   acai=acai)
    critic_losses = [h["critic_loss"] for h in history]
    assert critic_losses[-1] < critic_losses[0]
    assert not any(torch.equal(a, b) for a, b in zip(critic_before, acai.critic.parameters()))
    assert history[-1]["loss"] < history[0]["loss"]


def test_fit_with_acai_exports_with_parity(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (3, 20))
    y = np.repeat(np.arange(3), 100)
    x = (centers[y] + rng.normal(0, 1, (300, 20))).astype(np.float32)
    m = DeepClustering(3, hidden=(32, 32), latent_dim=3, epochs=10, batch_size=32, n_init=5, device="cpu",
                       acai=True).fit(x, y)
    assert {"critic_loss", "loss"} <= set(m.history_[0])
    assert m.metrics_["acc"] > 0.9
    manifest = load_bundle(m.save(tmp_path / "b")).manifest
    assert manifest.checks["label_agreement"] >= 0.999 and manifest.method["params"]["acai"] is True
    assert manifest.files.keys() == load_bundle(DeepClustering(3, hidden=(32, 32), latent_dim=3, epochs=1, n_init=1,
                                                               device="cpu").fit(x).save(tmp_path / "plain")
                                                ).manifest.files.keys()  # no critic in the bundle
