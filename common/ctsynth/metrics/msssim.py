"""Pairwise MS-SSIM among samples of one set: the diversity measure of 3DGAUnet Table 2 (lower = more diverse).

The standard MS-SSIM (5 scales, 11-voxel Gaussian window) does not fit 32^3 or 64^3 volumes:
:class:`monai.metrics.MultiScaleSSIMMetric` raises unless every spatial size ``s`` satisfies
``s // max(1, n_scales - 1) ** 2 > kernel_size - 1``, and the coarsest scale ``s // 2 ** (n_scales - 1)`` must hold a
whole window. :func:`select_msssim_config` picks the first configuration of :data:`MSSSIM_CANDIDATES` (most scales and
largest window first) that satisfies both; the weights are the first ``n_scales`` of Wang et al.'s five weights
renormalised to sum to 1. The choice is recorded in every result.

Speed: the default ``implementation="separable"`` computes exactly MONAI's quantities (same Gaussian window, valid
filtering, ``avg_pool`` downsampling, ReLU on each scale, weighted product) but filters with the three 1-D factors of
the separable Gaussian (``3 k`` instead of ``k^3`` multiply-adds per voxel) and filters each volume's ``x`` and ``x^2``
once for the whole set (when the moments fit in ``max_moment_bytes``; else once per batch of pairs) instead of once per
pair; only ``x_a x_b`` is filtered per pair. It agrees with
:class:`monai.metrics.MultiScaleSSIMMetric` to float32 rounding (tested); ``implementation="monai"`` calls MONAI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
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


def _gaussian_1d(kernel_size: int, sigma: float) -> torch.Tensor:
    # the 1-D factor of MONAI's separable Gaussian window (monai.metrics.regression._gaussian_kernel)
    dist = torch.arange(start=(1 - kernel_size) / 2, end=(1 + kernel_size) / 2, step=1)
    g = torch.exp(-torch.pow(dist / sigma, 2) / 2)
    return g / g.sum()


def _filter_valid(x: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """'valid' separable filtering of (B, D, H, W) along the three spatial axes (shifted slice sums, no padding)."""
    k = len(taps)
    for axis in (1, 2, 3):
        n = x.shape[axis] - k + 1
        out = x.narrow(axis, 0, n) * taps[0]
        for t in range(1, k):
            out.add_(x.narrow(axis, t, n), alpha=taps[t])
        x = out
    return x


def _pyramid(x: torch.Tensor, n_scales: int) -> list[torch.Tensor]:
    """(B, D, H, W) volumes at each scale (2x average pooling between scales, as MONAI)."""
    out = [x]
    for _ in range(n_scales - 1):
        out.append(F.avg_pool3d(out[-1][:, None], kernel_size=2)[:, 0])
    return out


def _moments(pyramid: list[torch.Tensor], taps: list[float]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Local mean and local variance ``E[x^2] - E[x]^2`` of each volume at each scale."""
    out = []
    for x in pyramid:
        mu = _filter_valid(x, taps)
        out.append((mu, _filter_valid(x * x, taps).addcmul_(mu, mu, value=-1.0)))
    return out


def _msssim_from_moments(
    pyramid: list[torch.Tensor],
    moments: list[tuple[torch.Tensor, torch.Tensor]],
    ia: torch.Tensor,
    ib: torch.Tensor,
    cfg: MSSSIMConfig,
) -> torch.Tensor:
    """MS-SSIM of pairs ``(ia[p], ib[p])`` given per-volume pyramids and local moments; only ``x_a x_b`` is filtered.

    In-place operations keep the number of passes over the pair tensors low (the cost is memory traffic).
    """
    taps = _gaussian_1d(cfg.kernel_size, cfg.kernel_sigma).tolist()
    c1, c2 = (0.01 * cfg.data_range) ** 2, (0.03 * cfg.data_range) ** 2
    n_scales = len(cfg.weights)
    per_scale = []
    for scale in range(n_scales):
        x = pyramid[scale]
        mu, var = moments[scale]
        mu_a, mu_b = mu[ia], mu[ib]
        # contrast-structure term: (2 cov_ab + c2) / (var_a + var_b + c2), cov_ab = E[x_a x_b] - mu_a mu_b
        cs = _filter_valid(x[ia].mul_(x[ib]), taps).addcmul_(mu_a, mu_b, value=-1.0).mul_(2.0).add_(c2)
        cs.div_(var[ia].add_(var[ib]).add_(c2))
        if scale == n_scales - 1:
            luminance = (mu_a * mu_b).mul_(2.0).add_(c1).div_(mu_a.mul_(mu_a).addcmul_(mu_b, mu_b).add_(c1))
            per_scale.append(torch.relu(cs.mul_(luminance).flatten(1).mean(1)))
        else:
            per_scale.append(torch.relu(cs.flatten(1).mean(1)))
    w = torch.tensor(cfg.weights, dtype=torch.float)
    return torch.prod(torch.stack(per_scale) ** w[:, None], dim=0)


def pairwise_msssim(
    volumes: torch.Tensor | np.ndarray | Callable[[np.ndarray], torch.Tensor],
    n: int | None = None,
    spatial_shape: Sequence[int] | None = None,
    max_pairs: int | None = 500,
    seed: int = 0,
    batch_size: int = 16,
    config: MSSSIMConfig | None = None,
    data_range: float = 1.0,
    implementation: str = "separable",
    max_moment_bytes: int = 1 << 30,
) -> dict:
    """Mean 3D MS-SSIM over pairs of samples of one set (all pairs, or a seeded subset of ``max_pairs``).

    Pairs are evaluated ``batch_size`` at a time (see the module docstring for the two implementations).

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
        implementation: ``"separable"`` (default, fast) or ``"monai"`` (:class:`monai.metrics.MultiScaleSSIMMetric`).
        max_moment_bytes: memory allowed for caching every volume's local moments (separable only); above it the
            moments are recomputed per batch of pairs.

    Returns:
        dict with ``mean``, ``std``, ``n_pairs``, ``pairs`` (``(P, 2)`` array), ``values`` (``(P,)`` array) and
        ``config`` (the chosen window/weights).

    Raises:
        ValueError: when fewer than two samples are given or the implementation is unknown.
    """
    if implementation not in ("separable", "monai"):
        raise ValueError(f"implementation must be 'separable' or 'monai', got {implementation!r}.")
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
    taps = _gaussian_1d(cfg.kernel_size, cfg.kernel_sigma).tolist()
    n_scales = len(cfg.weights)

    def load_pyramid(idx: np.ndarray) -> list[torch.Tensor]:
        return _pyramid(torch.as_tensor(load(idx)).float().reshape(len(idx), *spatial_shape), n_scales)

    # local moments of every volume, once (``2 N`` filterings instead of ``4`` per pair), when they fit in memory
    moments_all = None
    if implementation == "separable":
        moment_bytes = 8 * sum(
            int(np.prod([max(s // 2**k - cfg.kernel_size + 1, 0) for s in spatial_shape])) for k in range(n_scales)
        )
        if n * moment_bytes <= max_moment_bytes:
            used = np.unique(pairs)
            moments_all = [None] * n_scales
            for start in range(0, len(used), batch_size):
                idx = used[start : start + batch_size]
                for k, (mu, var) in enumerate(_moments(load_pyramid(idx), taps)):
                    if moments_all[k] is None:
                        moments_all[k] = (mu.new_zeros((n, *mu.shape[1:])), mu.new_zeros((n, *mu.shape[1:])))
                    moments_all[k][0][torch.as_tensor(idx)] = mu
                    moments_all[k][1][torch.as_tensor(idx)] = var
    values = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            if implementation == "monai":
                values.append(metric(load(chunk[:, 0]), load(chunk[:, 1])).reshape(-1).cpu().numpy())
                continue
            # load each volume of the batch once; pairs index into the unique set
            unique, inverse = np.unique(chunk, return_inverse=True)
            inverse = torch.as_tensor(inverse.reshape(chunk.shape))
            pyramid = load_pyramid(unique)
            if moments_all is None:
                moments = _moments(pyramid, taps)
            else:
                u = torch.as_tensor(unique)
                moments = [(mu[u], var[u]) for mu, var in moments_all]
            values.append(_msssim_from_moments(pyramid, moments, inverse[:, 0], inverse[:, 1], cfg).cpu().numpy())
    vals = np.concatenate(values).astype(np.float64)
    return {
        "mean": float(vals.mean()),
        "std": float(vals.std()),
        "n_pairs": len(vals),
        "pairs": pairs,
        "values": vals,
        "config": cfg.as_dict(),
    }
