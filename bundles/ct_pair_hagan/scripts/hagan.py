"""The HA-GAN training step (Sun et al. 2022, Sec. III-B, Eq. 6-10; Guttulsrud 2023, Sec. 3.6.5) on
:class:`ctsynth.engines.GenerativeTrainer`.

Per iteration, with one random sub-volume position ``r`` for the batch:

1. ``D`` step: BCE-with-logits of ``D(S^H(X; r), X^L, r)`` vs 1 and of ``D(G(z, r))`` vs 0 (``G`` without gradients);
   ``X^L`` is ``X`` interpolated by 1/4 (nearest, as ``F.interpolate``'s default).
2. ``G`` step: fresh ``z``, BCE of ``D(G(z, r))`` vs 1, ``D`` frozen.
3. ``E^H`` step: L1 between ``G^H(E^H(S^H(X; r)))`` and ``S^H(X; r)`` (Eq. 8), ``G`` frozen.
4. ``E^G`` step: ``E^H`` of all eight slabs of ``X`` (no gradients) concatenated along ``D1`` -> ``E^G`` -> ``z^`` ->
   ``G``; loss ``(L1(sub-volume) + L1(low-res)) / 2`` (Eq. 9 halved, as in the HA-GAN code), ``G`` frozen.

Every loss updates only its own network (lambda = 1 in Eq. 10; the thesis gives no lambda).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ctsynth.engines import GenerativeTrainer, unwrap

from .networks import crop_range

__all__ = ["HAGANTrainer", "low_resolution"]


def low_resolution(volume: torch.Tensor) -> torch.Tensor:
    """The real low-res target ``X^L``: ``F.interpolate(X, scale_factor=0.25)`` (nearest)."""
    return F.interpolate(volume, scale_factor=0.25)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


class HAGANTrainer(GenerativeTrainer):
    """HA-GAN training: D, G, E^H and E^G updates per iteration (see the module notes).

    Networks ``generator``, ``discriminator``, ``encoder``, ``sub_encoder`` and optimisers of the same names
    (``configs/train.json``). The batch holds the pair volumes under ``key``, ``(B, C, S, S, S)`` in [-1, 1].

    Args:
        key: batch key of the pair volume.
        g_iter: G updates per iteration (1 in the HA-GAN code).
        args, kwargs: :class:`~ctsynth.engines.GenerativeTrainer` arguments.

    Raises:
        ValueError: for ``g_iter < 1``.
    """

    LOSS_KEYS = ("d_loss", "d_real", "d_fake", "g_loss", "e_loss", "sub_e_loss")

    def __init__(self, *args: Any, key: str = "pair", g_iter: int = 1, **kwargs: Any) -> None:
        if int(g_iter) < 1:
            raise ValueError(f"g_iter must be >= 1, got {g_iter}")
        super().__init__(*args, **kwargs)
        self.key = key
        self.g_iter = int(g_iter)
        generator = unwrap(self.networks["generator"])
        self.size, self.latent_dim = generator.size, generator.latent_dim

    def latents(self, n: int) -> torch.Tensor:
        """``n`` latents ``z ~ N(0, I)``."""
        return torch.randn((n, self.latent_dim), device=self.state.device)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        G, D = self.networks["generator"], self.networks["discriminator"]
        E, SE = self.networks["encoder"], self.networks["sub_encoder"]
        g = unwrap(G)
        real = batch[self.key]
        n, depth = int(real.shape[0]), self.size // 8
        crop_idx = int(torch.randint(0, crop_range(self.size) + 1, (1,)))
        real_sub, real_low = real[:, :, crop_idx : crop_idx + depth], low_resolution(real)

        # 1. discriminator
        with torch.no_grad(), self.autocast():
            fake_sub, fake_low = G(self.latents(n), crop_idx)
        with self.autocast():
            d_real = _bce(D(real_sub, real_low, crop_idx), 1.0)
            d_fake = _bce(D(fake_sub, fake_low, crop_idx), 0.0)
            d_loss = d_real + d_fake
        self.update("discriminator", d_loss)

        # 2. generator
        with self.frozen("discriminator"):
            for _ in range(self.g_iter):
                with self.autocast():
                    g_loss = _bce(D(*G(self.latents(n), crop_idx), crop_idx), 1.0)
                self.update("generator", g_loss)

        # 3. encoder E^H: sub-volume -> feature slab -> G^H
        with self.frozen("generator"):
            with self.autocast():
                e_loss = F.l1_loss(g.high_res(E(real_sub)).float(), real_sub)
            self.update("encoder", e_loss)

        # 4. sub-encoder E^G: all slabs -> feature volume -> z^ -> G
        with torch.no_grad(), self.autocast():
            features = torch.cat([E(real[:, :, i : i + depth]) for i in range(0, self.size, depth)], dim=2)
        with self.frozen("generator"):
            with self.autocast():
                h = g.features(SE(features))
                recon_sub = g.high_res(g.feature_slab(h, crop_idx)).float()
                recon_low = g.low_res(h).float()
                sub_e_loss = (F.l1_loss(recon_sub, real_sub) + F.l1_loss(recon_low, real_low)) / 2.0
            self.update("sub_encoder", sub_e_loss)

        return {
            "d_loss": float(d_loss.item()),
            "d_real": float(d_real.item()),
            "d_fake": float(d_fake.item()),
            "g_loss": float(g_loss.item()),
            "e_loss": float(e_loss.item()),
            "sub_e_loss": float(sub_e_loss.item()),
            "crop_idx": float(crop_idx),
        }
