"""Training steps of CT-SGAN and of the 3D-GAN baseline on :class:`ctsynth.engines.GenerativeTrainer`.

CT-SGAN (Sec. 2, Eq. 1-2 of the paper): alternating updates; ``n_critic`` updates of D_slice and D_slab with R_v and
G_slice fixed, then one update of R_v + G_slice with the critics fixed. Per step only the sampled slab region is
decoded: the ``T`` steps of the batch's slab (R_v still runs over every step), and D_slice sees ``N`` of those
3D slices at their positions. Objectives (``loss``): ``"wgan"`` (the paper's preferred Wasserstein loss, default) or
``"js"`` (Eq. 2, with the non-saturating generator loss); penalties (``penalty``): ``"wgan_gp"`` (default),
``"r1"`` (Mescheder et al. 2018, the paper's reference [15]) or ``"none"``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from ctsynth.engines import (
    GenerativeTrainer,
    bce_discriminator_loss,
    bce_generator_loss,
    gradient_penalty,
    r1_penalty,
    unwrap,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)

from .data import real_slab, real_slices

__all__ = ["LOSSES", "PENALTIES", "CTSGANTrainer", "Baseline3DGANTrainer", "critic_loss", "generator_loss"]

LOSSES = ("wgan", "js")
PENALTIES = ("wgan_gp", "r1", "none")


def critic_loss(loss: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Wasserstein critic loss or Eq. 2's ``-log D(real) - log(1 - D(fake))`` on logits."""
    return wasserstein_critic_loss(real, fake) if loss == "wgan" else bce_discriminator_loss(real, fake)


def generator_loss(loss: str, fake: torch.Tensor) -> torch.Tensor:
    """Wasserstein generator loss or the non-saturating ``-log D(fake)``."""
    return wasserstein_generator_loss(fake) if loss == "wgan" else bce_generator_loss(fake)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


class _AdversarialMixin:
    """The critic update with the configured penalty, shared by the CT-SGAN and baseline steps."""

    loss: str
    penalty: str
    penalty_weight: float

    def set_adversarial_options(self, loss: str, penalty: str, penalty_weight: float) -> None:
        """Check and keep the loss and penalty options (names from :data:`LOSSES` and :data:`PENALTIES`).

        Raises:
            ValueError: for an unknown loss or penalty.
        """
        self.loss = _check_choice("loss", loss, LOSSES)
        self.penalty = _check_choice("penalty", penalty, PENALTIES)
        self.penalty_weight = float(penalty_weight)

    def critic_update(
        self, optimizer: str, critic: Any, real: torch.Tensor, fake: torch.Tensor, weight: float = 1.0
    ) -> float:
        """One update of a critic on ``weight * (critic loss + penalty)`` (``critic`` is any callable of one tensor).

        The penalty and the adversarial term are back-propagated one after the other (``GenerativeTrainer.update``
        with loss terms), so the penalty's double-backward graph is freed before the critic's graphs on real and fake
        data are built: same gradients as their sum, lower peak memory. The adversarial term comes last because it
        reaches every critic parameter (under DDP its backward pass all-reduces the sum).

        Returns:
            The penalised loss.
        """
        autocast = self.autocast  # type: ignore[attr-defined]

        def adversarial() -> torch.Tensor:
            with autocast():
                return weight * critic_loss(self.loss, critic(real), critic(fake))

        terms = [adversarial]
        if self.penalty == "wgan_gp":
            terms.insert(0, lambda: weight * self.penalty_weight * gradient_penalty(critic, real, fake))
        elif self.penalty == "r1":
            terms.insert(0, lambda: weight * 0.5 * self.penalty_weight * r1_penalty(critic, real))
        return float(self.update(optimizer, terms).item())  # type: ignore[attr-defined]


class CTSGANTrainer(_AdversarialMixin, GenerativeTrainer):
    """The CT-SGAN step: networks ``generator`` (R_v + G_slice, :class:`~scripts.networks.CTSGANGenerator`),
    ``slice_critic`` and ``slab_critic``; optimisers of the same names.

    The batch holds ``image`` crops ``(B, 1, X, Y, T + 2)`` and their ``slab_start`` (from
    :class:`~scripts.data.RandSlabd`).

    Args:
        loss: "wgan" or "js".
        penalty: "wgan_gp", "r1" or "none".
        penalty_weight: lambda of WGAN-GP, or gamma of R1 (applied as ``gamma / 2``).
        n_critic: critic updates per generator update.
        slices_per_slab: N, the 3D slices per slab given to D_slice (drawn without replacement from the T).
        sum_slice_terms: sum the N slice terms as Eq. 2 writes them (True) or average them (False).
        args, kwargs: :class:`~ctsynth.engines.GenerativeTrainer` arguments.

    Raises:
        ValueError: for an unknown loss or penalty, or ``n_critic`` / ``slices_per_slab`` below 1.
    """

    LOSS_KEYS = ("slice_critic", "slab_critic", "g_loss")

    def __init__(
        self,
        *args: Any,
        loss: str = "wgan",
        penalty: str = "wgan_gp",
        penalty_weight: float = 10.0,
        n_critic: int = 5,
        slices_per_slab: int = 4,
        sum_slice_terms: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.set_adversarial_options(loss, penalty, penalty_weight)
        if int(n_critic) < 1 or int(slices_per_slab) < 1:
            raise ValueError(f"n_critic and slices_per_slab must be >= 1, got {n_critic} and {slices_per_slab}")
        self.n_critic = int(n_critic)
        self.slices_per_slab, self.sum_slice_terms = int(slices_per_slab), bool(sum_slice_terms)

    def fake_slab_region(self, start: torch.Tensor, t: int) -> torch.Tensor:
        """Decode the ``T`` 3D slices of steps ``start .. start + T - 1`` of fresh volumes: ``(B, T, 3, X, Y)``."""
        gen = self.networks["generator"]
        inputs = unwrap(gen).random_inputs(start.shape[0], self.state.device)
        steps = start[:, None] + torch.arange(t, device=start.device)
        return gen(*inputs, steps=steps)

    def slice_terms(self, slices: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flatten ``(B, N, 3, X, Y)`` slices and their steps to D_slice's inputs and positions in [-1, 1]."""
        n_steps = unwrap(self.networks["generator"]).steps
        positions = 2.0 * steps.float() / max(n_steps - 1, 1) - 1.0
        return slices.flatten(0, 1), positions.flatten()

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        crop, start = batch["image"], batch["slab_start"].long().view(-1)
        b, t = crop.shape[0], crop.shape[-1] - 2
        n = min(self.slices_per_slab, t)
        weight = float(n) if self.sum_slice_terms else 1.0
        d_slice, d_slab = self.networks["slice_critic"], self.networks["slab_critic"]
        real_sl = real_slab(crop)
        losses: dict[str, float] = {}
        for _ in range(self.n_critic):
            offsets = torch.stack([torch.randperm(t, device=crop.device)[:n] for _ in range(b)])
            with torch.no_grad(), self.autocast():
                fake = self.fake_slab_region(start, t).float()
            gather = torch.arange(b, device=crop.device)[:, None]
            real_x, pos = self.slice_terms(real_slices(crop, offsets), start[:, None] + offsets)
            fake_x, _ = self.slice_terms(fake[gather, offsets], start[:, None] + offsets)
            critic = functools.partial(d_slice, position=pos)
            slice_loss = self.critic_update("slice_critic", critic, real_x, fake_x, weight)
            slab_loss = self.critic_update("slab_critic", d_slab, real_sl, fake[:, :, 1].unsqueeze(1))
            losses = {"slice_critic": slice_loss, "slab_critic": slab_loss}

        with self.frozen("slice_critic", "slab_critic"), self.autocast():
            fake = self.fake_slab_region(start, t)
            offsets = torch.stack([torch.randperm(t, device=crop.device)[:n] for _ in range(b)])
            gather = torch.arange(b, device=crop.device)[:, None]
            fake_x, pos = self.slice_terms(fake[gather, offsets], start[:, None] + offsets)
            g_loss = weight * generator_loss(self.loss, d_slice(fake_x, pos)) + generator_loss(
                self.loss, d_slab(fake[:, :, 1].unsqueeze(1))
            )
        self.update("generator", g_loss)
        return {**losses, "g_loss": float(g_loss.item())}


class Baseline3DGANTrainer(_AdversarialMixin, GenerativeTrainer):
    """The 3D-GAN baseline step (Table 1): one critic on whole ``gen_size^3`` volumes; networks ``generator`` and
    ``critic``, optimisers of the same names; same loss and penalty options as :class:`CTSGANTrainer`.

    Args:
        loss: "wgan" or "js".
        penalty: "wgan_gp", "r1" or "none".
        penalty_weight: lambda of WGAN-GP, or gamma of R1.
        n_critic: critic updates per generator update.
        args, kwargs: :class:`~ctsynth.engines.GenerativeTrainer` arguments.

    Raises:
        ValueError: for an unknown loss or penalty, or ``n_critic`` below 1.
    """

    LOSS_KEYS = ("critic", "g_loss")

    def __init__(
        self,
        *args: Any,
        loss: str = "wgan",
        penalty: str = "wgan_gp",
        penalty_weight: float = 10.0,
        n_critic: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.set_adversarial_options(loss, penalty, penalty_weight)
        if int(n_critic) < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        self.n_critic = int(n_critic)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        real = batch["image"]
        gen, critic = self.networks["generator"], self.networks["critic"]
        c_loss = 0.0
        for _ in range(self.n_critic):
            with torch.no_grad(), self.autocast():
                fake = gen(*unwrap(gen).random_inputs(real.shape[0], self.state.device)).float()
            c_loss = self.critic_update("critic", critic, real, fake)
        with self.frozen("critic"), self.autocast():
            g_loss = generator_loss(
                self.loss, critic(gen(*unwrap(gen).random_inputs(real.shape[0], self.state.device)))
            )
        self.update("generator", g_loss)
        return {"critic": c_loss, "g_loss": float(g_loss.item())}
