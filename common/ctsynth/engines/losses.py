"""Adversarial losses and penalties shared by the GAN bundles (on discriminator/critic outputs).

- BCE-with-logits (minimax / non-saturating) losses: 3DGAUnet, HA-GAN, the CT-SGAN paper's Eq. 2 option.
- Wasserstein losses and the gradient penalty of WGAN-GP (Gulrajani et al. 2017): CT-SGAN's default.
- The R1 penalty (Mescheder et al. 2018): CT-SGAN option.

The penalties receive the critic itself, because they differentiate it at interpolated or real inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "bce_discriminator_loss",
    "bce_generator_loss",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
    "gradient_penalty",
    "r1_penalty",
]


def bce_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``BCE(D(x), 1) + BCE(D(G(z)), 0)`` on logits, i.e. ``-[log D(x) + log(1 - D(G(z)))]`` (Goodfellow et al.).

    Args:
        real_logits: D logits of real samples.
        fake_logits: D logits of generated samples (computed on detached fakes).

    Returns:
        Scalar loss (float32 even under autocast).
    """
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def bce_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``BCE(D(G(z)), 1) = -log D(G(z))`` on logits.

    Args:
        fake_logits: D logits of generated samples.

    Returns:
        Scalar loss.
    """
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def wasserstein_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss ``E[C(G(z))] - E[C(x)]`` (minimised by the critic).

    Args:
        real_scores: critic outputs on real samples.
        fake_scores: critic outputs on generated samples.

    Returns:
        Scalar loss.
    """
    return fake_scores.float().mean() - real_scores.float().mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss ``-E[C(G(z))]``.

    Args:
        fake_scores: critic outputs on generated samples.

    Returns:
        Scalar loss.
    """
    return -fake_scores.float().mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    reals: torch.Tensor,
    fakes: torch.Tensor,
    target_norm: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad_x C(x_hat)||_2 - target_norm)^2]`` at random interpolates of reals and fakes.

    Args:
        critic: the critic (any callable of one tensor, e.g. ``functools.partial(D_slice, position=p)``).
        reals: real batch ``(B, ...)``.
        fakes: generated batch of the same shape (detached or not: it is detached here).
        target_norm: the gradient norm the penalty pulls towards (1 in Gulrajani et al.).
        generator: optional random generator of the interpolation weights.

    Returns:
        Scalar penalty (multiply by the usual weight, 10, in the step).

    Raises:
        ValueError: when reals and fakes differ in shape.
    """
    if reals.shape != fakes.shape:
        raise ValueError(f"reals {tuple(reals.shape)} and fakes {tuple(fakes.shape)} must have the same shape")
    shape = (reals.shape[0],) + (1,) * (reals.ndim - 1)
    alpha = torch.rand(shape, device=reals.device, dtype=torch.float32, generator=generator).to(reals.dtype)
    interp = (alpha * reals.detach() + (1 - alpha) * fakes.detach()).requires_grad_(True)
    scores = critic(interp)
    (grads,) = torch.autograd.grad(scores.float().sum(), interp, create_graph=True)
    norms = grads.float().flatten(1).norm(2, dim=1)
    return ((norms - target_norm) ** 2).mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], reals: torch.Tensor) -> torch.Tensor:
    """R1 penalty ``E[||grad_x D(x)||^2]`` on real samples (Mescheder et al. 2018; multiply by ``gamma / 2``).

    Args:
        critic: the discriminator/critic.
        reals: real batch.

    Returns:
        Scalar penalty.
    """
    x = reals.detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(x).float().sum(), x, create_graph=True)
    return grads.float().flatten(1).pow(2).sum(dim=1).mean()
