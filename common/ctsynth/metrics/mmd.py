"""Maximum mean discrepancy (MMD^2) between a real and a synthetic sample.

Two protocols are provided:

* **Linear kernel on flattened voxels, unbiased** -- the estimator of :class:`monai.metrics.MMDMetric`, used here for
  3DGAUnet Table 2 (our reading: its magnitudes are consistent with raw ``[0, 1]`` voxels). It is computed from running
  sums (:class:`LinearMMDAccumulator`) so that a whole set never has to be held in memory.
* **Gaussian kernel with the median-heuristic bandwidth on feature vectors** (HA-GAN protocol, MMD on Med3D features),
  biased (V-statistic) or unbiased (U-statistic).

Streaming form of the unbiased linear-kernel MMD^2 (derivation). With ``k(a, b) = <a, b>``, real sample
``x_1..x_m`` and synthetic sample ``y_1..y_n``, let ``S_x = sum_i x_i`` and ``Q_x = sum_i ||x_i||^2`` (same for y).
Then ``sum_{i != j} <x_i, x_j> = ||S_x||^2 - Q_x`` and ``sum_{i, j} <x_i, y_j> = <S_x, S_y>``, so::

    MMD^2_u = (||S_x||^2 - Q_x) / (m (m - 1)) + (||S_y||^2 - Q_y) / (n (n - 1)) - 2 <S_x, S_y> / (m n)

which needs one voxel-sized float64 sum per set and two scalars instead of three N x N Gram matrices.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ctsynth.metrics.distances import pairwise_squared_distances

__all__ = [
    "LinearMMDAccumulator",
    "gaussian_mmd",
    "linear_mmd",
    "median_heuristic_bandwidth",
]


def _as_2d_float64(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim < 1:
        raise ValueError(f"{name} must have a leading sample dimension, got a scalar.")
    return arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)


class LinearMMDAccumulator:
    """Unbiased linear-kernel MMD^2 between two sets accumulated batch by batch (see the module docstring).

    Equal to ``monai.metrics.MMDMetric()(y=real, y_pred=synthetic)`` on the whole sets, up to float rounding
    (sums are kept in float64).

    Example::

        acc = LinearMMDAccumulator()
        for batch in real_batches:
            acc.update(batch, real=True)
        for batch in synthetic_batches:
            acc.update(batch, real=False)
        value = acc.compute()
    """

    def __init__(self) -> None:
        self._sum: dict[bool, np.ndarray | None] = {True: None, False: None}
        self._sq_norm: dict[bool, float] = {True: 0.0, False: 0.0}
        self._count: dict[bool, int] = {True: 0, False: 0}

    def update(self, batch: np.ndarray | torch.Tensor, real: bool) -> None:
        """Add a batch of samples (any shape with a leading sample dimension) to the real or synthetic set.

        Raises:
            ValueError: when the per-sample size differs from earlier batches.
        """
        flat = _as_2d_float64(batch, "batch")
        reference = next((s for s in (self._sum[real], self._sum[not real]) if s is not None), None)
        if reference is not None and reference.shape[0] != flat.shape[1]:
            raise ValueError(
                f"linear MMD needs samples of equal size; got {flat.shape[1]} values per sample, expected "
                f"{reference.shape[0]} (resize the volumes first)."
            )
        total = self._sum[real]
        if total is None:
            total = np.zeros(flat.shape[1], dtype=np.float64)
            self._sum[real] = total
        total += flat.sum(axis=0)
        self._sq_norm[real] += float(np.einsum("ij,ij->", flat, flat))
        self._count[real] += flat.shape[0]

    @property
    def counts(self) -> tuple[int, int]:
        """``(n_real, n_synthetic)`` accumulated so far."""
        return self._count[True], self._count[False]

    def compute(self) -> float:
        """Return the unbiased linear-kernel MMD^2.

        Raises:
            ValueError: when either set has fewer than two samples.
        """
        m, n = self.counts
        if m < 2 or n < 2:
            raise ValueError(f"MMD needs at least two samples in each set, got n_real={m}, n_synthetic={n}.")
        sx, sy = self._sum[True], self._sum[False]
        xx = (float(sx @ sx) - self._sq_norm[True]) / (m * (m - 1))
        yy = (float(sy @ sy) - self._sq_norm[False]) / (n * (n - 1))
        xy = float(sx @ sy) / (m * n)
        return xx + yy - 2.0 * xy


def linear_mmd(real: np.ndarray | torch.Tensor, synthetic: np.ndarray | torch.Tensor) -> float:
    """Unbiased linear-kernel MMD^2 on flattened samples (``monai.metrics.MMDMetric`` estimator, from sums).

    Args:
        real: ``(m, ...)`` real samples (e.g. ``(m, 1, D, H, W)`` volumes in ``[0, 1]``).
        synthetic: ``(n, ...)`` synthetic samples with the same per-sample shape.

    Returns:
        MMD^2 (can be slightly negative: the unbiased estimator is not clipped).
    """
    acc = LinearMMDAccumulator()
    acc.update(real, real=True)
    acc.update(synthetic, real=False)
    return acc.compute()


def median_heuristic_bandwidth(real: np.ndarray | torch.Tensor, synthetic: np.ndarray | torch.Tensor) -> float:
    """Median of the pairwise Euclidean distances over the pooled sample (pairs ``i < j``).

    Args:
        real: ``(m, F)`` features.
        synthetic: ``(n, F)`` features.

    Returns:
        The bandwidth ``sigma`` of ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``.
    """
    z = torch.from_numpy(np.concatenate([_as_2d_float64(real, "real"), _as_2d_float64(synthetic, "synthetic")]))
    d2 = pairwise_squared_distances(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    # np.median averages the two middle distances of an even count (torch.median would return the lower one).
    return float(np.median(np.sqrt(d2[iu[0], iu[1]].numpy())))


def gaussian_mmd(
    real: np.ndarray | torch.Tensor,
    synthetic: np.ndarray | torch.Tensor,
    bandwidth: float | Literal["median"] = "median",
    unbiased: bool = True,
) -> dict[str, float]:
    """MMD^2 with a Gaussian (RBF) kernel on feature vectors (HA-GAN protocol when ``bandwidth="median"``).

    ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``; the median heuristic sets ``sigma`` to the median pairwise distance
    of the pooled real + synthetic features. Unbiased: the diagonals of the within-set kernel matrices are excluded
    (U-statistic, as ``monai.metrics.MMDMetric`` and ``torch_two_sample.MMDStatistic``); biased: all terms are kept
    (V-statistic, always >= 0).

    Args:
        real: ``(m, F)`` real features.
        synthetic: ``(n, F)`` synthetic features.
        bandwidth: ``"median"`` or a positive ``sigma``.
        unbiased: U-statistic (True) or V-statistic (False).

    Returns:
        ``{"mmd2": value, "bandwidth": sigma}``.

    Raises:
        ValueError: on fewer than two samples per set, mismatched feature sizes or a non-positive bandwidth.
    """
    x = _as_2d_float64(real, "real")
    y = _as_2d_float64(synthetic, "synthetic")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"MMD needs at least two samples in each set, got n_real={m}, n_synthetic={n}.")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: real {x.shape[1]} vs synthetic {y.shape[1]}.")
    sigma = median_heuristic_bandwidth(x, y) if bandwidth == "median" else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"bandwidth must be positive, got {sigma} (all features identical?).")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gamma = 1.0 / (2.0 * sigma**2)
    kxx = torch.exp(-gamma * pairwise_squared_distances(xt, xt))
    kyy = torch.exp(-gamma * pairwise_squared_distances(yt, yt))
    kxy = torch.exp(-gamma * pairwise_squared_distances(xt, yt))
    if unbiased:
        term_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        term_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    else:
        term_x = kxx.sum() / (m * m)
        term_y = kyy.sum() / (n * n)
    value = term_x + term_y - 2.0 * kxy.sum() / (m * n)
    return {"mmd2": float(value), "bandwidth": sigma}
