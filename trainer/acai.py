"""ACAI (Berthelot et al., 2018): an adversarial regulariser that makes interpolations realistic.

"Understanding and Improving Interpolation in Autoencoders via an Adversarial Regularizer".
A critic, with the encoder's architecture and a scalar output (the mean of its latent
output), learns to predict the mixing coefficient alpha of decoded latent interpolations
``x_alpha = dec(alpha z1 + (1 - alpha) z2)``, alpha ~ U[0, 0.5]; the autoencoder learns to
make the critic answer 0, i.e. to decode interpolations that look like data:

- critic loss: ``||critic(x_alpha) - alpha||² + ||critic(gamma x + (1 - gamma) x_hat)||²``
  (the second term, gamma = 0.2, keeps the critic answering 0 on real-looking images, so it
  cannot tell interpolations by how much they differ from reconstructions);
- autoencoder loss: ``reconstruction + lam ||critic(x_alpha)||²``, lam = 0.5.

The two are trained alternately on each batch with separate Adam optimisers, as in the
paper's code (which pairs each row with the batch reversed). The critic is not exported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .pretrain import make_adam


@dataclass(frozen=True)
class ACAIConfig:
    """ACAI's weights (the paper's values as defaults).

    Parameters
    ----------
    lam : float, default 0.5
        Weight of the adversarial term in the autoencoder's loss.
    gamma : float, default 0.2
        Weight of the real data in the critic's second input, ``gamma x + (1 - gamma) x_hat``.
    max_alpha : float, default 0.5
        Interpolation coefficients are drawn from U[0, max_alpha].
    """

    lam: float = 0.5
    gamma: float = 0.2
    max_alpha: float = 0.5


class Critic(nn.Module):
    """A freshly initialised copy of ``encoder``'s architecture; scores a row by the mean of its
    output: (n, n_features) -> (n,)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.net = copy.deepcopy(encoder)
        for module in self.net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=1)


def mix_latents(z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``alpha_i z_i + (1 - alpha_i) z_{n-1-i}``: each row mixed with its partner in the reversed batch."""
    a = alpha[:, None]
    return a * z + (1 - a) * z.flip(0)


def critic_loss(critic: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, x_mix: torch.Tensor,
                alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """The critic's regression loss: alpha for interpolations, 0 for the gamma-mix of x and x_hat."""
    real = gamma * x + (1 - gamma) * x_hat
    return ((critic(x_mix) - alpha) ** 2).mean() + (critic(real) ** 2).mean()


def adversarial_loss(critic: nn.Module, x_mix: torch.Tensor) -> torch.Tensor:
    """The autoencoder's adversarial term (before the weight ``lam``): the critic's answer, squared."""
    return (critic(x_mix) ** 2).mean()


class ACAIRegularizer:
    """The critic, its optimiser, and the two halves of an ACAI training step.

    Parameters
    ----------
    autoencoder : nn.Module
        With ``encoder`` (the critic copies its architecture) and ``decoder``.
    config : ACAIConfig
    lr : float
        The critic's Adam learning rate.
    generator : torch.Generator
        Draws the interpolation coefficients, on the autoencoder's device.

    Each step: ``term, mix = acai.autoencoder_term(decoder, z)`` is added to the autoencoder's
    loss before its update; then ``acai.critic_step(x, x_hat, *mix)`` updates the critic on the
    same batch.
    """

    def __init__(self, autoencoder: nn.Module, config: ACAIConfig, *, lr: float, generator: torch.Generator):
        device = next(autoencoder.parameters()).device
        self.config = config
        self.generator = generator
        self.critic = Critic(autoencoder.encoder).to(device)
        self.critic.train()
        self.opt = make_adam(self.critic.parameters(), lr)

    def autoencoder_term(self, decoder: nn.Module, z: torch.Tensor
                         ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``lam * ||critic(x_alpha)||²`` for the batch's embeddings ``z``, and (x_alpha, alpha)."""
        alpha = torch.rand(len(z), generator=self.generator, device=z.device) * self.config.max_alpha
        x_mix = decoder(mix_latents(z, alpha))
        # The autoencoder's update must not spend time on gradients for the critic's weights.
        self.critic.requires_grad_(False)
        term = self.config.lam * adversarial_loss(self.critic, x_mix)
        self.critic.requires_grad_(True)
        return term, (x_mix, alpha)

    def critic_step(self, x: torch.Tensor, x_hat: torch.Tensor, x_mix: torch.Tensor,
                    alpha: torch.Tensor) -> torch.Tensor:
        """One Adam step of the critic on this batch's rows, reconstructions and interpolations
        (taken as constants); returns its loss (a 0-d tensor, not synchronised)."""
        loss = critic_loss(self.critic, x, x_hat.detach(), x_mix.detach(), alpha, self.config.gamma)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()
