"""Networks of a few layers and a training step with two critics (WGAN-GP) and an encoder (L1 reconstruction)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctsynth.engines import GenerativeTrainer, gradient_penalty, wasserstein_critic_loss, wasserstein_generator_loss

__all__ = ["ToyGenerator", "ToyCritic", "ToyEncoder", "TwoCriticEncoderTrainer"]


class ToyGenerator(nn.Module):
    """Latent vector -> (1, size, size) image."""

    def __init__(self, latent_dim: int = 4, size: int = 8) -> None:
        super().__init__()
        self.latent_shape = (latent_dim,)
        self.latent_std = 1.0
        self.size = size
        self.net = nn.Sequential(nn.Linear(latent_dim, 16), nn.ReLU(), nn.Linear(16, size * size), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, self.size, self.size)


class ToyCritic(nn.Module):
    """(1, s, s) image -> score; ``crop`` > 0 scores only the central crop (a "slab" critic)."""

    def __init__(self, size: int = 8, crop: int = 0) -> None:
        super().__init__()
        self.crop = crop
        side = crop or size
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:
            lo = (x.shape[-1] - self.crop) // 2
            x = x[..., lo : lo + self.crop, lo : lo + self.crop]
        return self.net(x)


class ToyEncoder(nn.Module):
    """(1, s, s) image -> latent vector."""

    def __init__(self, latent_dim: int = 4, size: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size * size, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TwoCriticEncoderTrainer(GenerativeTrainer):
    """n_critic WGAN-GP updates of two critics, one generator update against both, one encoder update.

    Args:
        n_critic: critic updates per generator update.
        gp_weight: weight of the gradient penalty.
        args, kwargs: :class:`~ctsynth.engines.GenerativeTrainer` arguments.
    """

    LOSS_KEYS = ("critic_full", "critic_crop", "g_loss", "e_loss")

    def __init__(self, *args: Any, n_critic: int = 2, gp_weight: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_critic, self.gp_weight = int(n_critic), float(gp_weight)

    def latents(self, n: int) -> torch.Tensor:
        return torch.randn((n, *self.networks["generator"].latent_shape), device=self.state.device)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        G, E = self.networks["generator"], self.networks["encoder"]
        reals = batch["image"]
        n = reals.shape[0]
        losses: dict[str, float] = {}
        for _ in range(self.n_critic):
            with torch.no_grad():
                fakes = G(self.latents(n))
            for name in ("critic_full", "critic_crop"):
                critic = self.networks[name]
                with self.autocast():
                    loss = wasserstein_critic_loss(critic(reals), critic(fakes))
                loss = loss + self.gp_weight * gradient_penalty(critic, reals, fakes)
                self.update(name, loss)
                losses[name] = float(loss.item())

        with self.frozen("critic_full", "critic_crop", "encoder"), self.autocast():
            fakes = G(self.latents(n))
            g_loss = sum(wasserstein_generator_loss(self.networks[c](fakes)) for c in ("critic_full", "critic_crop"))
        self.update("generator", g_loss)

        with self.frozen("generator"), self.autocast():
            z = self.latents(n)
            e_loss = F.l1_loss(E(G(z)).float(), z)
        self.update("encoder", e_loss)
        return {**losses, "g_loss": float(g_loss.item()), "e_loss": float(e_loss.item())}
