"""Process-group helpers shared by trainers, handlers and samplers (all no-ops without ``torch.distributed``)."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "get_rank", "get_world_size", "is_main_process", "all_ranks_agree", "barrier"]


def is_distributed() -> bool:
    """Whether a default process group is initialised (``torchrun`` + ``init_process_group``)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Rank of this process in the default group (0 without one)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this process writes files and logs (rank 0, or the only process)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def all_ranks_agree(flag: bool, mode: str = "all", device: torch.device | str | None = None) -> bool:
    """One decision for every rank: a local boolean reduced over the process group.

    Gated or skipped updates (a discriminator stepped only while it is losing, a critic skipped on a bad batch) must
    be taken by every rank together: DDP averages gradients inside ``backward``, so a rank that skips a backward pass
    the others make deadlocks them, and ranks whose optimisers step differently hold different weights afterwards.

    Args:
        flag: this rank's decision.
        mode: ``"all"`` (true only when every rank says true) or ``"any"`` (true when one rank says true).
        device: device of the reduction tensor (the process group's device: CUDA for NCCL, CPU for gloo). Default:
            the current CUDA device under NCCL, else the CPU.

    Returns:
        The shared decision (``flag`` itself without a process group).

    Raises:
        ValueError: for an unknown ``mode``.
    """
    if mode not in ("all", "any"):
        raise ValueError(f"mode must be 'all' or 'any', got '{mode}'")
    if not is_distributed():
        return bool(flag)
    if device is None:
        nccl = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN if mode == "all" else dist.ReduceOp.MAX)
    return bool(value.item() > 0.5)
