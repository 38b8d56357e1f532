"""Seeding: one call for global determinism, worker seeding for data loaders, and per-sample noise seeds.

Sampling must give sample ``i`` the same noise whatever the batch size, so noise is drawn from a generator
seeded by ``(seed, i)`` instead of from one stream consumed batch after batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import set_determinism

__all__ = ["seed_everything", "seed_worker", "per_index_seed", "seeded_noise"]


def seed_everything(seed: int, use_deterministic_algorithms: bool | None = None) -> None:
    """Seed Python, NumPy and torch (all devices) and make cuDNN deterministic.

    Thin wrapper over :func:`monai.utils.set_determinism` so every bundle seeds the same way.

    Args:
        seed: the global seed (a non-negative int).
        use_deterministic_algorithms: passed to ``torch.use_deterministic_algorithms`` when not None
            (some CUDA kernels then raise instead of running non-deterministically).

    Raises:
        ValueError: when ``seed`` is negative.
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    set_determinism(seed=int(seed), use_deterministic_algorithms=use_deterministic_algorithms)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for ``torch.utils.data.DataLoader``: seed ``random`` and NumPy in each worker.

    torch already gives each worker the seed ``base_seed + worker_id``; this propagates it to the other
    generators so NumPy-based augmentations differ between workers but repeat between runs.

    Args:
        worker_id: the worker index (unused: the torch seed already includes it).
    """
    del worker_id
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def per_index_seed(seed: int, index: int, *extra: int) -> int:
    """A 63-bit seed derived from ``(seed, index)`` with NumPy's ``SeedSequence`` (well mixed, collision-resistant).

    Args:
        seed: the run's seed.
        index: the sample index.
        extra: further integers mixed in (e.g. the redraw attempt of a rejected sample).

    Returns:
        A seed for ``torch.Generator.manual_seed``.
    """
    state = np.random.SeedSequence([int(seed), int(index), *(int(e) for e in extra)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seeded_noise(
    shape: Sequence[int],
    seed: int,
    indices: Sequence[int],
    std: float = 1.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian noise for a batch of sample indices, each row drawn from its own ``(seed, index)`` generator.

    Args:
        shape: shape of one sample's noise (without the batch dimension).
        seed: the run's seed.
        indices: sample indices; row ``k`` of the result depends only on ``(seed, indices[k])``.
        std: standard deviation of the noise.
        device: device of the returned tensor (noise is drawn on the CPU so it is identical on every device).
        dtype: dtype of the returned tensor.

    Returns:
        Tensor of shape ``(len(indices), *shape)``.
    """
    rows = []
    for index in indices:
        gen = torch.Generator(device="cpu").manual_seed(per_index_seed(seed, index))
        rows.append(torch.randn(tuple(int(s) for s in shape), generator=gen, dtype=torch.float32))
    out = torch.stack(rows) * float(std) if rows else torch.zeros((0, *shape))
    return out.to(device=device, dtype=dtype)
