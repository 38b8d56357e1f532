"""GAN training step helpers shared by the GAN bundles: a gated ``GanTrainer``, Gaussian latents, D accuracy.

MONAI's :class:`monai.engines.GanTrainer` always steps the discriminator and lets the loss functions call D
themselves. :class:`GatedGanTrainer` keeps its constructor, events and output keys but runs D itself, so that

- the D update can be skipped when D is already winning (the 3D-GAN trick: update D only while its batch accuracy
  is below a threshold), which GanTrainer cannot express because it always calls ``d_optimizer.step()``;
- the loss functions receive D *logits*: ``d_loss_function(real_logits, fake_logits)`` and
  ``g_loss_function(fake_logits)``;
- the number of fakes follows the real batch (GanTrainer uses ``data_loader.batch_size``, wrong for a short last
  batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.engines import GanTrainer
from monai.utils import GanKeys

__all__ = ["make_gaussian_latent", "discriminator_accuracy", "AccuracyGate", "GatedGanTrainer"]


def make_gaussian_latent(
    num_latents: int,
    latent_size: int | Sequence[int],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    std: float = 1.0,
    **kwargs: Any,
) -> torch.Tensor:
    """``g_prepare_batch`` for GanTrainer: ``N(0, std^2)`` latents of shape ``(num_latents, *latent_size)``.

    Args:
        num_latents: batch size.
        latent_size: an int (vector latents) or a shape such as ``(1, 32, 32, 32)`` (noise volumes).
        device: target device.
        non_blocking: unused (drawn on the device directly); kept for GanTrainer's call signature.
        std: standard deviation.
        kwargs: other ``to_kwargs`` of the trainer (ignored).

    Returns:
        The latent tensor.
    """
    del non_blocking, kwargs
    shape = (int(latent_size),) if isinstance(latent_size, int) else tuple(int(s) for s in latent_size)
    return torch.randn((int(num_latents), *shape), device=device) * float(std)


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


class AccuracyGate:
    """Update D only while its batch accuracy is below ``threshold`` (3D-GAN, Wu et al. 2016; 3DGAUnet repo: 0.7).

    Args:
        threshold: accuracy in (0, 1]; 1.0 (or more) always updates.
    """

    def __init__(self, threshold: float = 0.7) -> None:
        if not 0.0 < threshold:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.threshold = float(threshold)

    def __call__(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> bool:
        return discriminator_accuracy(real_logits, fake_logits) < self.threshold


class GatedGanTrainer(GanTrainer):
    """:class:`monai.engines.GanTrainer` whose D step can be gated and whose losses take D logits.

    Args:
        d_update_gate: optional callable ``(real_logits, fake_logits) -> bool``; when it returns False, D is not
            stepped in this iteration (its loss is still computed and logged).
        args, kwargs: as :class:`monai.engines.GanTrainer`; ``d_loss_function(real_logits, fake_logits)`` and
            ``g_loss_function(fake_logits)`` return scalar losses. ``decollate`` defaults to False (outputs are
            scalars and whole batches).

    The iteration output holds GanTrainer's keys (``reals``, ``fakes``, ``latents``, ``g_loss``, ``d_loss``) plus
    ``d_accuracy`` (D accuracy before its step) and ``d_updated`` (1.0 or 0.0).
    """

    def __init__(
        self, *args: Any, d_update_gate: Callable[[torch.Tensor, torch.Tensor], bool] | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("decollate", False)
        if kwargs.get("amp_kwargs"):
            raise ValueError("GatedGanTrainer does not support amp_kwargs")
        super().__init__(*args, **kwargs)
        self.d_update_gate = d_update_gate

    def _make_latents(self, engine: GatedGanTrainer, n: int) -> torch.Tensor:
        return engine.g_prepare_batch(
            num_latents=n,
            latent_size=engine.latent_shape,
            device=engine.state.device,
            non_blocking=engine.non_blocking,
            **engine.to_kwargs,
        )

    def _iteration(self, engine: GatedGanTrainer, batchdata: dict | Sequence) -> dict[str, Any]:  # type: ignore[override]
        """One adversarial iteration: D step(s) on reals and detached fakes, then one G step.

        Raises:
            ValueError: when ``batchdata`` is None.
        """
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        reals = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if isinstance(reals, (tuple, list)):
            reals = reals[0]
        n = int(reals.shape[0])
        latents = self._make_latents(engine, n)
        fakes = engine.g_inferer(latents, engine.g_network)

        d_total, accuracy, updated = 0.0, 0.0, 0.0
        for _ in range(engine.d_train_steps):
            real_logits = engine.d_inferer(reals, engine.d_network)
            fake_logits = engine.d_inferer(fakes.detach(), engine.d_network)
            d_loss = engine.d_loss_function(real_logits, fake_logits)
            accuracy = discriminator_accuracy(real_logits.detach(), fake_logits.detach())
            d_total += float(d_loss.item())
            if engine.d_update_gate is None or engine.d_update_gate(real_logits.detach(), fake_logits.detach()):
                engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
                d_loss.backward()
                engine.d_optimizer.step()
                updated = 1.0

        if engine.g_update_latents:
            latents = self._make_latents(engine, n)
            fakes = engine.g_inferer(latents, engine.g_network)
        engine.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        g_loss = engine.g_loss_function(engine.d_inferer(fakes, engine.d_network))
        g_loss.backward()
        engine.g_optimizer.step()

        return {
            GanKeys.REALS: reals,
            GanKeys.FAKES: fakes.detach(),
            GanKeys.LATENTS: latents,
            GanKeys.GLOSS: float(g_loss.item()),
            GanKeys.DLOSS: d_total,
            "d_accuracy": accuracy,
            "d_updated": updated,
        }
