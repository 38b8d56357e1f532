"""Stage 1: the KL autoencoder trained with a patch discriminator (the BraTS LDM bundle's recipe, which the thesis
reused pre-trained and names as future work to retrain on CT, Drenth 2024 sections 3.2 and 5).

Written on :class:`ctsynth.engines.GenerativeTrainer` rather than as the BraTS bundle's ``VaeGanTrainer`` subclass of
MONAI's ``GanTrainer``: the whole step (discriminator updates, then one autoencoder update with its four loss terms)
reads on one screen, and bf16, DDP-safe freezing, per-term epoch means and the non-finite stop come from the shared
engine.

Loss (BraTS LDM bundle ``scripts/losses.py`` values): ``L1 + 1e-7 KL + 0.1 perceptual + 0.1 adversarial`` for the
autoencoder; ``0.1 * 0.5 * (LS(D(fake), 0) + LS(D(real), 1))`` for the discriminator, updated ``d_train_steps = 5``
times per autoencoder step on the same reconstruction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from monai.utils import optional_import
from torch import nn

from ctsynth.engines import GenerativeTrainer

__all__ = ["kl_divergence", "build_perceptual_loss", "AutoencoderGanTrainer"]

DOWNLOAD_HINT = "python -m monai.bundle download_large_files --bundle_path <this bundle>"


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over channels and space, averaged over the batch.

    ``0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1)`` (the BraTS bundle's ``compute_kl_loss``).
    """
    dims = list(range(1, z_mu.ndim))
    kl = 0.5 * torch.sum(z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2)) - 1, dim=dims)
    return kl.mean()


def build_perceptual_loss(
    weight: float,
    weights_path: str | os.PathLike | None,
    device: str | torch.device = "cpu",
    network_type: str = "resnet50",
    fake_3d_ratio: float = 0.2,
) -> nn.Module | None:
    """MONAI ``PerceptualLoss`` (ResNet-50, fake 3D on 20 % of the slices) from a local weights file, or None.

    Nothing downloads at run time: the weights are the bundle's ``large_files.yml`` entry, fetched beforehand with
    ``python -m monai.bundle download_large_files``.

    Args:
        weight: the perceptual loss weight; 0 builds nothing (smoke runs, or training without the term).
        weights_path: the ResNet-50 ``state_dict`` file.
        device: device of the feature network.
        network_type: MONAI ``PerceptualLoss`` network type.
        fake_3d_ratio: fraction of slices per axis fed to the 2D network.

    Returns:
        The loss module (frozen, eval mode) or None when ``weight`` is 0.

    Raises:
        FileNotFoundError: when ``weight > 0`` and the weights file is missing (names it and the download command).
        ImportError: when ``weight > 0`` and torchvision (the ResNet-50) is not installed.
    """
    if float(weight) == 0.0:
        return None
    path = Path(weights_path) if weights_path else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"perceptual loss weights not found: {path} (the ResNet-50 file declared in large_files.yml). Fetch it "
            f"with `{DOWNLOAD_HINT}` on a machine with network access, point --perceptual_weights_path at a copy, "
            "or train without the perceptual term: --perceptual_weight 0"
        )
    if not optional_import("torchvision")[1]:
        raise ImportError(
            "the perceptual loss needs torchvision for its ResNet-50 (pip install torchvision), or train without "
            "it: --perceptual_weight 0"
        )
    from monai.losses import PerceptualLoss

    loss = PerceptualLoss(
        spatial_dims=3,
        network_type=network_type,
        is_fake_3d=True,
        fake_3d_ratio=fake_3d_ratio,
        pretrained=True,
        pretrained_path=str(path),
        pretrained_state_dict_key=None,
    )
    return loss.to(device).eval()


class AutoencoderGanTrainer(GenerativeTrainer):
    """One stage-1 step: ``d_train_steps`` discriminator updates, then one autoencoder update.

    Networks: ``autoencoder`` (MONAI ``AutoencoderKL``) and ``discriminator`` (``PatchDiscriminator``); optimisers
    of the same names.

    Args:
        args: :class:`~ctsynth.engines.GenerativeTrainer` arguments.
        perceptual_loss: the perceptual loss module (None: the term is 0).
        kl_weight: weight of the KL term (1e-7).
        perceptual_weight: weight of the perceptual term (0.1); computed on the image channel only in pair mode.
        adv_weight: weight of the adversarial terms (0.1), also scaling the discriminator loss.
        d_train_steps: discriminator updates per autoencoder update (5).
        adv_warmup_epochs: epochs without the adversarial terms at the start (0 in the BraTS bundle, whose
            discriminator "warm-up" is its ``d_train_steps`` extra updates per step).
        kwargs: :class:`~ctsynth.engines.GenerativeTrainer` keyword arguments.

    Raises:
        ValueError: for ``d_train_steps`` below 1 or negative weights.
    """

    LOSS_KEYS = ("g_loss", "recon_loss", "kl_loss", "perceptual_loss", "adv_g_loss", "d_loss")

    def __init__(
        self,
        *args: Any,
        perceptual_loss: nn.Module | None = None,
        kl_weight: float = 1e-7,
        perceptual_weight: float = 0.1,
        adv_weight: float = 0.1,
        d_train_steps: int = 5,
        adv_warmup_epochs: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if int(d_train_steps) < 1 or min(kl_weight, perceptual_weight, adv_weight) < 0:
            raise ValueError(
                f"d_train_steps must be >= 1 and the loss weights >= 0, got d_train_steps={d_train_steps}, "
                f"kl_weight={kl_weight}, perceptual_weight={perceptual_weight}, adv_weight={adv_weight}"
            )
        self.perceptual_loss = perceptual_loss
        self.kl_weight, self.perceptual_weight = float(kl_weight), float(perceptual_weight)
        self.adv_weight = float(adv_weight)
        self.d_train_steps = int(d_train_steps)
        self.adv_warmup_epochs = int(adv_warmup_epochs)
        self.adv_loss = PatchAdversarialLoss(criterion="least_squares")

    def discriminator_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``adv_weight * 0.5 * (LS(D(fake), 0) + LS(D(real), 1))``, both halves in one forward pass (instance norm
        keeps the samples independent; one pass keeps DDP to one forward per backward)."""
        logits = self.discriminate(torch.cat([fake, real]))
        fake_logits, real_logits = logits.split([fake.shape[0], real.shape[0]])
        loss_fake = self.adv_loss(fake_logits, target_is_real=False, for_discriminator=True)
        loss_real = self.adv_loss(real_logits, target_is_real=True, for_discriminator=True)
        return self.adv_weight * 0.5 * (loss_fake + loss_real)

    def discriminate(self, images: torch.Tensor) -> torch.Tensor:
        """The discriminator's final patch logits, computed in float32 even under bf16 autocast (with bf16 its
        instance-norm statistics gave NaN adversarial losses in the first smoke iterations)."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.networks["discriminator"](images.float().contiguous())[-1]

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float | torch.Tensor]:
        x = batch["image"]
        with self.autocast():
            recon, z_mu, z_sigma = self.networks["autoencoder"](x)
        adversarial = self.adv_weight > 0 and self.state.epoch > self.adv_warmup_epochs
        d_total = 0.0
        if adversarial:
            fake = recon.detach()
            for _ in range(self.d_train_steps):
                with self.autocast():
                    d_loss = self.discriminator_loss(fake, x)
                self.update("discriminator", d_loss)
                d_total += float(d_loss.detach())
        zero = torch.zeros((), device=x.device)
        with self.frozen("discriminator"):
            with self.autocast():
                recon_loss = F.l1_loss(recon.float(), x.float())
                kl = kl_divergence(z_mu.float(), z_sigma.float())
                p_loss = zero
                if self.perceptual_loss is not None and self.perceptual_weight > 0:
                    p_loss = self.perceptual_loss(recon[:, :1].float(), x[:, :1].float())
                adv_g = zero
                if adversarial:
                    logits = self.discriminate(recon)
                    adv_g = self.adv_loss(logits, target_is_real=True, for_discriminator=False)
                g_loss = recon_loss + self.kl_weight * kl + self.perceptual_weight * p_loss + self.adv_weight * adv_g
            self.update("autoencoder", g_loss)
        return {
            "g_loss": g_loss.detach(),
            "recon_loss": recon_loss.detach(),
            "kl_loss": kl.detach(),
            "perceptual_loss": p_loss.detach(),
            "adv_g_loss": adv_g.detach(),
            "d_loss": d_total / self.d_train_steps,
        }
