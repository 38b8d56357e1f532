"""Activation checkpointing for generators with BatchNorm.

``torch.utils.checkpoint`` frees a block's activations after the forward pass and recomputes them during the backward
pass. A block in training mode with BatchNorm would then update its running statistics twice per step (once in the
forward, once in the recomputation). :func:`checkpoint_module` recomputes with those statistics held, so a checkpointed
step leaves the network exactly as an ordinary one would: same outputs, same gradients, same running statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_module", "held_batchnorm_statistics"]


@contextmanager
def held_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Inside the block, the BatchNorm layers of ``module`` normalise with batch statistics as usual but leave their
    running mean, variance and batch counter unchanged (momentum 0 for the block, counter restored after it).

    Args:
        module: any module; its BatchNorm layers in training mode that track running statistics are held.
    """
    norms = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if count is not None:
                with torch.no_grad():
                    m.num_batches_tracked.copy_(count)


def checkpoint_module(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """``module(*inputs)`` with activation checkpointing (non-reentrant) when gradients are being recorded: only the
    inputs are kept for the backward pass, the activations are recomputed there, with the BatchNorm running
    statistics held during the recomputation (:func:`held_batchnorm_statistics`). Without gradients it is a plain call.

    Args:
        module: the block to checkpoint (deterministic given its inputs: no dropout).
        inputs: its positional inputs.

    Returns:
        The block's output.
    """
    if not torch.is_grad_enabled():
        return module(*inputs)
    return checkpoint(
        module,
        *inputs,
        use_reentrant=False,
        context_fn=lambda: (nullcontext(), held_batchnorm_statistics(module)),
    )
