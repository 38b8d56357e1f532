"""GAN pieces of 3DGAUnet the configs plug into :class:`ctsynth.engines.GatedGanTrainer`: losses on discriminator
logits, the latent (noise) maker, the reals' prepare-batch, and the optional D-update gate.

The paper trains with the standard minimax GAN objective and "the cross-entropy of the binary classifier of the
discriminator" (Eq. 1-4). The generator minimises the non-saturating form ``-log D(G(z))`` (Goodfellow et al. 2014),
the usual practice since ``log(1 - D(G(z)))`` has vanishing gradients early in training.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ctsynth.engines.gan import AccuracyGate, make_gaussian_latent
from ctsynth.engines.loss_log import EpochLossLogger

__all__ = [
    "discriminator_loss",
    "generator_loss",
    "latent_maker",
    "prepare_reals",
    "make_d_update_gate",
    "epoch_loss_printer",
]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D loss: ``BCE(D(x), 1) + BCE(D(G(z)), 0)`` on logits (= ``-[log D(x) + log(1 - D(G(z)))]``).

    Args:
        real_logits: D logits of real cubes, shape (B, 1).
        fake_logits: D logits of generated cubes (computed on detached fakes), shape (B', 1).

    Returns:
        Scalar loss.
    """
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: ``BCE(D(G(z)), 1)`` on logits (= ``-log D(G(z))``).

    Args:
        fake_logits: D logits of generated cubes, shape (B, 1).

    Returns:
        Scalar loss.
    """
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def latent_maker(std: float = 1.0) -> Callable[..., torch.Tensor]:
    """``g_prepare_batch`` drawing ``N(0, std^2)`` latents of the trainer's ``latent_shape``.

    Noise volumes ``(1, S, S, S)`` and latent vectors ``(latent_dim,)`` are both expressed by the trainer's
    ``latent_shape`` (taken from the generator's ``latent_shape`` in the configs).

    Args:
        std: standard deviation (the generator's ``latent_std``: 1.0 for noise volumes, 0.33 for vectors).

    Returns:
        A callable with GanTrainer's ``g_prepare_batch`` signature.
    """
    return functools.partial(make_gaussian_latent, std=float(std))


def prepare_reals(
    batchdata: Mapping[str, Any] | Sequence | torch.Tensor,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    image_key: str = "image",
    **kwargs: Any,
) -> torch.Tensor:
    """``d_prepare_batch``: the real cubes of a batch moved to ``device``.

    Args:
        batchdata: a dict batch from a MONAI ``DataLoader`` (``image_key`` holds ``(B, 1, S, S, S)``), or a tensor.
        device: target device.
        non_blocking: passed to ``Tensor.to``.
        image_key: key of the cubes.
        kwargs: other ``to()`` arguments.

    Returns:
        The cube batch as a plain tensor.

    Raises:
        KeyError: when a dict batch has no ``image_key``.
    """
    x = batchdata
    if isinstance(batchdata, Mapping):
        if image_key not in batchdata:
            raise KeyError(f"batch has no '{image_key}' (keys: {sorted(batchdata)})")
        x = batchdata[image_key]
    elif isinstance(batchdata, (list, tuple)):
        x = batchdata[0]
    x = torch.as_tensor(x)
    x = x.as_tensor() if hasattr(x, "as_tensor") else x
    return x.to(device=device, non_blocking=non_blocking, **kwargs)


def make_d_update_gate(accuracy_threshold: float | None) -> AccuracyGate | None:
    """The D-update gate of the 3DGAUnet repository (D stepped only while its batch accuracy < threshold).

    Args:
        accuracy_threshold: e.g. 0.7 (repository); None disables gating (D stepped every iteration, the default).

    Returns:
        An :class:`~ctsynth.engines.AccuracyGate` or None.
    """
    return None if accuracy_threshold is None else AccuracyGate(float(accuracy_threshold))


def epoch_loss_printer(loss_logger: EpochLossLogger, name: str = "train_log") -> Callable[[Any], None]:
    """``epoch_print_logger`` of a MONAI ``StatsHandler`` that logs the epoch means of the GAN losses.

    ``StatsHandler``'s default epoch print shows ``engine.state.metrics``, which a GAN trainer never fills, so the
    console would show no loss at all; this prints the means that ``loss_logger`` (the handler writing
    ``losses.csv``) has accumulated over the epoch.

    Args:
        loss_logger: the :class:`~ctsynth.engines.EpochLossLogger` attached to the same trainer (before the
            ``StatsHandler``, so its epoch sums are complete when this runs).
        name: logger name (the ``StatsHandler``'s ``name``).

    Returns:
        A callable ``f(engine)`` logging ``Epoch[n] g_loss: ... d_loss: ...`` at INFO level.
    """

    def _print(engine: Any) -> None:
        # looked up at call time: creating the logger before StatsHandler does would make MONAI's get_logger skip
        # its stdout handler (it adds one only to new loggers) while still turning propagation off
        means = loss_logger.epoch_means()
        values = " ".join(f"{k}: {v:.4f}" for k, v in means.items())
        logging.getLogger(name).info("Epoch[%d] %s", engine.state.epoch, values)

    return _print
