"""The 3DGAUnet training step on :class:`ctsynth.engines.GenerativeTrainer`.

The paper trains with the standard minimax GAN objective and "the cross-entropy of the binary classifier of the
discriminator" (Eq. 1-4). The generator minimises the non-saturating form ``-log D(G(z))`` (Goodfellow et al. 2014),
the usual practice since ``log(1 - D(G(z)))`` has vanishing gradients early in training.

Optional, from the 3DGAUnet repository (and 3D-GAN, Wu et al. 2016): D is stepped only while its batch accuracy is
below a threshold (0.7 there). The accuracy is averaged over DDP ranks first, so every rank takes the same decision.

``adversarial_loss="mse"`` is the objective of the 3D-GAN baseline as the 3DGAUnet authors ran it (their repository's
``src/trainer.py``: ``nn.MSELoss`` between the sigmoid D output and 1 / 0 labels, least-squares style; the G loss is
MSE(D(G(z)), 1)); ``configs/baseline_3dgan.json`` selects it with that repository's other settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ctsynth.engines import GenerativeTrainer, bce_discriminator_loss, bce_generator_loss, unwrap

__all__ = [
    "ADVERSARIAL_LOSSES",
    "discriminator_accuracy",
    "GaUNetTrainer",
    "mse_discriminator_loss",
    "mse_generator_loss",
]

ADVERSARIAL_LOSSES = ("bce", "mse")


def mse_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """MSE(sigmoid(D(x)), 1) + MSE(sigmoid(D(G(z))), 0): the baseline 3D-GAN's D loss in the 3DGAUnet repository."""
    real, fake = torch.sigmoid(real_logits.float()), torch.sigmoid(fake_logits.float())
    return F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake))


def mse_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """MSE(sigmoid(D(G(z))), 1): the baseline 3D-GAN's G loss in the 3DGAUnet repository."""
    fake = torch.sigmoid(fake_logits.float())
    return F.mse_loss(fake, torch.ones_like(fake))


def discriminator_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """Fraction of reals scored real (logit > 0) and fakes scored fake (logit <= 0), over both batches.

    Args:
        real_logits: D logits of real samples.
        fake_logits: D logits of generated samples.

    Returns:
        Accuracy in [0, 1].
    """
    correct = (real_logits > 0).sum() + (fake_logits <= 0).sum()
    return float(correct.item()) / float(real_logits.numel() + fake_logits.numel())


class GaUNetTrainer(GenerativeTrainer):
    """3DGAUnet GAN training: D step(s) on reals and detached fakes, then one G step with D frozen.

    Networks ``generator`` and ``discriminator``, optimisers of the same names (see ``configs/train.json``).

    Args:
        latent_std: standard deviation of the latents (1.0 for noise volumes, 0.33 for the baseline's vectors);
            the latent shape is the generator's ``latent_shape``.
        d_train_steps: D updates per G update.
        d_accuracy_threshold: step D only while its batch accuracy (mean over ranks) is below this; None: always.
        fresh_latents_for_g: draw new latents for the G step (as MONAI's ``GanTrainer`` with
            ``g_update_latents=True``) instead of reusing the D step's fakes.
        adversarial_loss: ``"bce"`` (default: the paper's cross-entropy, non-saturating G loss) or ``"mse"`` (the
            baseline 3D-GAN as run in the 3DGAUnet repository).
        args, kwargs: :class:`~ctsynth.engines.GenerativeTrainer` arguments.

    Raises:
        ValueError: for a threshold outside (0, 1] or ``d_train_steps < 1``.
    """

    LOSS_KEYS = ("g_loss", "d_loss", "d_accuracy", "d_updated")

    def __init__(
        self,
        *args: Any,
        latent_std: float = 1.0,
        d_train_steps: int = 1,
        d_accuracy_threshold: float | None = None,
        fresh_latents_for_g: bool = True,
        adversarial_loss: str = "bce",
        **kwargs: Any,
    ) -> None:
        if adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {adversarial_loss!r}")
        if d_accuracy_threshold is not None and not 0.0 < float(d_accuracy_threshold) <= 1.0:
            raise ValueError(f"d_accuracy_threshold must be in (0, 1] or None, got {d_accuracy_threshold}")
        if int(d_train_steps) < 1:
            raise ValueError(f"d_train_steps must be >= 1, got {d_train_steps}")
        super().__init__(*args, **kwargs)
        self.latent_shape: Sequence[int] = tuple(unwrap(self.networks["generator"]).latent_shape)
        self.latent_std = float(latent_std)
        self.d_train_steps = int(d_train_steps)
        self.d_accuracy_threshold = None if d_accuracy_threshold is None else float(d_accuracy_threshold)
        self.fresh_latents_for_g = bool(fresh_latents_for_g)
        self.adversarial_loss = adversarial_loss
        if adversarial_loss == "mse":
            self.d_loss_fn, self.g_loss_fn = mse_discriminator_loss, mse_generator_loss
        else:
            self.d_loss_fn, self.g_loss_fn = bce_discriminator_loss, bce_generator_loss

    def latents(self, n: int) -> torch.Tensor:
        """``n`` Gaussian latents of the generator's shape."""
        return torch.randn((n, *self.latent_shape), device=self.state.device) * self.latent_std

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        G, D = self.networks["generator"], self.networks["discriminator"]
        reals = batch["image"]
        n = int(reals.shape[0])

        with torch.set_grad_enabled(not self.fresh_latents_for_g), self.autocast():
            fakes = G(self.latents(n))  # with a graph only when the G step reuses these fakes

        d_loss_sum, accuracy, updated = 0.0, 0.0, 0.0
        for _ in range(self.d_train_steps):
            with self.autocast():
                real_logits, fake_logits = D(reals), D(fakes.detach())
                d_loss = self.d_loss_fn(real_logits, fake_logits)
            accuracy = self.mean_over_ranks(discriminator_accuracy(real_logits.detach(), fake_logits.detach()))
            d_loss_sum += float(d_loss.item())
            if self.d_accuracy_threshold is None or accuracy < self.d_accuracy_threshold:
                self.update("discriminator", d_loss)
                updated = 1.0

        with self.frozen("discriminator"):
            with self.autocast():
                if self.fresh_latents_for_g:
                    fakes = G(self.latents(n))
                g_loss = self.g_loss_fn(D(fakes))
            self.update("generator", g_loss)

        return {"g_loss": float(g_loss.item()), "d_loss": d_loss_sum, "d_accuracy": accuracy, "d_updated": updated}
