"""Pairwise MS-SSIM among samples of one set: the diversity measure of 3DGAUnet Table 2 (lower = more diverse).

The standard MS-SSIM (5 scales, 11-voxel Gaussian window) does not fit 32^3 or 64^3 volumes:
:class:`monai.metrics.MultiScaleSSIMMetric` raises unless every spatial size ``s`` satisfies
``s // max(1, n_scales - 1) ** 2 > kernel_size - 1``, and the coarsest scale ``s // 2 ** (n_scales - 1)`` must hold a
whole window. :func:`select_msssim_config` picks the first configuration of :data:`MSSSIM_CANDIDATES` (most scales and
largest window first) that satisfies both; the weights are the first ``n_scales`` of Wang et al.'s five weights
renormalised to sum to 1. The choice is recorded in every result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric

__all__ = [
    "MSSSIM_CANDIDATES",
    "MSSSIM_STANDARD_WEIGHTS",
    "MSSSIMConfig",
    "pairwise_msssim",
    "sample_pairs",
    "select_msssim_config",
]

MSSSIM_STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# (kernel_size, n_scales) in order of preference.
MSSSIM_CANDIDATES: tuple[tuple[int, int], ...] = ((11, 5), (7, 5), (5, 4), (5, 3), (3, 3), (3, 2), (3, 1))


@dataclass(frozen=True)
class MSSSIMConfig:
    """Window and scale weights of an MS-SSIM computation."""

    kernel_size: int
    weights: tuple[float, ...]
    kernel_sigma: float = 1.5
    data_range: float = 1.0

    def as_dict(self) -> dict:
        """Plain-JSON form (for ``metrics.json``)."""
        d = asdict(self)
        d["weights"] = list(self.weights)
        d["n_scales"] = len(self.weights)
        return d


def _fits(spatial_shape: Sequence[int], kernel_size: int, n_scales: int) -> bool:
    monai_div = max(1, n_scales - 1) ** 2
    return all(s // monai_div > kernel_size - 1 and s // 2 ** (n_scales - 1) >= kernel_size for s in spatial_shape)


def select_msssim_config(spatial_shape: Sequence[int], data_range: float = 1.0) -> MSSSIMConfig:
    """Pick the MS-SSIM window and scales for volumes of ``spatial_shape`` (see the module docstring).

    Args:
        spatial_shape: e.g. ``(64, 64, 64)``.
        data_range: intensity range of the inputs (1.0 for windowed volumes in ``[0, 1]``).

    Returns:
        The chosen :class:`MSSSIMConfig` (``(11, 5 scales)`` from 176^3, ``(7, 5)`` from 112^3, ``(5, 4)`` at 64^3,
        ``(5, 3)`` at 32^3).

    Raises:
        ValueError: when the volume is too small for even a 3-voxel single-scale SSIM.
    """
    for kernel_size, n_scales in MSSSIM_CANDIDATES:
        if _fits(spatial_shape, kernel_size, n_scales):
            w = np.asarray(MSSSIM_STANDARD_WEIGHTS[:n_scales], dtype=np.float64)
            return MSSSIMConfig(kernel_size, tuple(float(v) for v in w / w.sum()), data_range=data_range)
    raise ValueError(f"volumes of shape {tuple(spatial_shape)} are too small for MS-SSIM (need >= 3 voxels per axis).")


def sample_pairs(n: int, max_pairs: int | None = None, seed: int = 0) -> np.ndarray:
    """All unordered pairs ``i < j`` of ``n`` items, or a seeded random subset of ``max_pairs`` of them.

    Returns:
        ``(P, 2)`` int array, sorted lexicographically.
    """
    iu = np.stack(np.triu_indices(n, k=1), axis=1)
    if max_pairs is not None and len(iu) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(iu), size=int(max_pairs), replace=False)
        iu = iu[np.sort(pick)]
    return iu


def pairwise_msssim(
    volumes: torch.Tensor | np.ndarray | Callable[[np.ndarray], torch.Tensor],
    n: int | None = None,
    spatial_shape: Sequence[int] | None = None,
    max_pairs: int | None = 500,
    seed: int = 0,
    batch_size: int = 8,
    config: MSSSIMConfig | None = None,
    data_range: float = 1.0,
) -> dict:
    """Mean 3D MS-SSIM over pairs of samples of one set (all pairs, or a seeded subset of ``max_pairs``).

    Pairs are evaluated ``batch_size`` at a time by one :class:`monai.metrics.MultiScaleSSIMMetric` call.

    Args:
        volumes: ``(N, 1, D, H, W)`` tensor/array, or a function mapping an index array to such a tensor (to read
            volumes from a disk cache; then ``n`` and ``spatial_shape`` are required).
        n: number of samples (default: ``len(volumes)``).
        spatial_shape: ``(D, H, W)`` (default: from ``volumes``).
        max_pairs: cap on the number of pairs (None: all ``N (N - 1) / 2``).
        seed: seed of the pair subset.
        batch_size: pairs per metric call.
        config: MS-SSIM window/weights (default: :func:`select_msssim_config`).
        data_range: intensity range (used when ``config`` is None).

    Returns:
        dict with ``mean``, ``std``, ``n_pairs``, ``pairs`` (``(P, 2)`` array), ``values`` (``(P,)`` array) and
        ``config`` (the chosen window/weights).

    Raises:
        ValueError: when fewer than two samples are given.
    """
    if callable(volumes) and not isinstance(volumes, torch.Tensor | np.ndarray):
        if n is None or spatial_shape is None:
            raise ValueError("n and spatial_shape are required when volumes is a loader function.")
        load = volumes
    else:
        data = torch.as_tensor(np.asarray(volumes) if isinstance(volumes, np.ndarray) else volumes).float()
        if data.ndim != 5:
            raise ValueError(f"volumes must be (N, 1, D, H, W), got shape {tuple(data.shape)}.")
        n, spatial_shape = data.shape[0], data.shape[2:]

        def load(idx: np.ndarray) -> torch.Tensor:
            return data[torch.as_tensor(idx)]

    if n < 2:
        raise ValueError(f"pairwise MS-SSIM needs at least two samples, got {n}.")
    cfg = config or select_msssim_config(spatial_shape, data_range=data_range)
    metric = MultiScaleSSIMMetric(
        spatial_dims=3,
        data_range=cfg.data_range,
        kernel_size=cfg.kernel_size,
        kernel_sigma=cfg.kernel_sigma,
        weights=cfg.weights,
        reduction="none",
    )
    pairs = sample_pairs(n, max_pairs=max_pairs, seed=seed)
    values = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            a, b = load(chunk[:, 0]), load(chunk[:, 1])
            values.append(metric(a, b).reshape(-1).cpu().numpy())
    vals = np.concatenate(values).astype(np.float64)
    return {
        "mean": float(vals.mean()),
        "std": float(vals.std()),
        "n_pairs": len(vals),
        "pairs": pairs,
        "values": vals,
        "config": cfg.as_dict(),
    }
