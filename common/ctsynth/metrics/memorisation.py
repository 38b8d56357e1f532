"""Memorisation audit: is a synthetic sample a (near-)copy of a training sample?

Synthetic data is often shared in place of patient data, so each synthetic sample is matched with its nearest
training sample in two spaces:

* **feature space** -- Euclidean distance to the nearest training feature vector, divided by the median of the
  training set's leave-one-out nearest-neighbour distances (``ratio``; ~1 for a fresh sample from the same
  distribution, ~0 for a copy);
* **voxel space** -- normalised cross-correlation (Pearson correlation over all voxels) with every training volume,
  maximised over the training set, also against the synthetic volume mirrored along ``flip_axes`` (default: the
  left-right axis x, so a mirrored copy is still caught), and over every integer shift of up to ``max_shift`` voxels
  per axis (correlation over the overlap of the shifted pair, by FFT cross-correlation), so a crop of a training
  volume taken a few voxels off is still caught. Computed block-wise: both sets are read ``chunk_size`` volumes at a
  time, so neither needs to be in memory.

A sample is listed as a likely copy when ``voxel_ncc >= ncc_threshold`` (default 0.95) or ``ratio <= ratio_threshold``
(default 0.2). The same statistics among training samples (leave-one-out) are reported for context: if real scans
already correlate above 0.95 with each other (e.g. tightly cropped, aligned cubes), raise the NCC threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ctsynth.metrics.distances import pairwise_distances

__all__ = [
    "feature_nearest_neighbours",
    "leave_one_out_nn_distances",
    "max_ncc_blockwise",
    "memorisation_audit",
    "shift_limits",
]

VolumeLoader = Callable[[np.ndarray], np.ndarray]


def feature_nearest_neighbours(
    synthetic: np.ndarray | torch.Tensor, training: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean nearest training feature vector of each synthetic one.

    Returns:
        ``(distance, index)`` arrays of length ``n_synthetic``.
    """
    s = torch.as_tensor(np.asarray(synthetic), dtype=torch.float64)
    t = torch.as_tensor(np.asarray(training), dtype=torch.float64)
    if s.shape[1:] != t.shape[1:]:
        raise ValueError(f"feature sizes differ: synthetic {tuple(s.shape[1:])} vs training {tuple(t.shape[1:])}.")
    d = pairwise_distances(s.reshape(len(s), -1), t.reshape(len(t), -1))
    dist, idx = d.min(dim=1)
    return dist.numpy(), idx.numpy()


def leave_one_out_nn_distances(training: np.ndarray | torch.Tensor) -> np.ndarray:
    """Distance of each training feature vector to its nearest *other* training vector.

    Raises:
        ValueError: with fewer than two samples.
    """
    t = torch.as_tensor(np.asarray(training), dtype=torch.float64)
    if t.shape[0] < 2:
        raise ValueError(f"leave-one-out distances need at least two training samples, got {t.shape[0]}.")
    d = pairwise_distances(t.reshape(len(t), -1), t.reshape(len(t), -1))
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values.numpy()


def _zscore_rows(x: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).reshape(len(x), -1)
    t = t - t.mean(dim=1, keepdim=True)
    norm = t.norm(dim=1, keepdim=True)
    # a constant volume has no defined correlation: its row stays 0 and correlates 0 with everything.
    return t / torch.where(norm > 0, norm, torch.ones_like(norm))


def shift_limits(spatial: Sequence[int], max_shift: int) -> tuple[int, ...]:
    """Per-axis shift limit: ``max_shift`` capped at a quarter of the edge (the overlap stays >= 42 % of the volume)."""
    return tuple(min(int(max_shift), int(s) // 4) for s in spatial)


class _ShiftedNCC:
    """Pearson correlation of two volume sets maximised over integer shifts, from FFT cross-correlations.

    For a shift ``t`` the correlation is taken over the overlap ``O_t`` of ``q(x + t)`` and ``r(x)`` only:
    ``(S_qr - S_q S_r / n) / sqrt((S_qq - S_q^2 / n)(S_rr - S_r^2 / n))``, where ``S_qr`` is the cross-correlation of
    the zero-padded volumes and ``S_q``, ``S_qq`` (``S_r``, ``S_rr``) are those of ``q``, ``q^2`` (``r``, ``r^2``) with
    the other volume's support; padding each axis by its shift limit keeps the circular FFT free of wrap-around.
    """

    def __init__(self, spatial: Sequence[int], max_shift: int) -> None:
        self.spatial = tuple(int(s) for s in spatial)
        self.limits = shift_limits(self.spatial, max_shift)
        self.padded = tuple(s + m for s, m in zip(self.spatial, self.limits, strict=True))
        pairs = zip(self.limits, self.padded, strict=True)
        self.index = [torch.as_tensor([t % p for t in range(-m, m + 1)]) for m, p in pairs]
        counts = [torch.as_tensor([s - abs(t) for t in range(-m, m + 1)], dtype=torch.float64)
                  for s, m in zip(self.spatial, self.limits, strict=True)]  # fmt: skip
        self.n = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
        self.ones = self._fft(torch.ones((1, *self.spatial), dtype=torch.float32))

    def _fft(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfftn(x, s=self.padded, dim=(-3, -2, -1))

    def _shifts(self, spectrum: torch.Tensor) -> torch.Tensor:
        c = torch.fft.irfftn(spectrum, s=self.padded, dim=(-3, -2, -1))
        return c[..., self.index[0], :, :][..., self.index[1], :][..., self.index[2]]

    def prepare(self, volumes: np.ndarray, as_query: bool) -> dict[str, torch.Tensor]:
        """Spectra and windowed sums of ``(B, *spatial)`` volumes (each centred on its mean first, for accuracy)."""
        v = torch.as_tensor(np.ascontiguousarray(volumes), dtype=torch.float64)
        v = (v - v.mean(dim=(-3, -2, -1), keepdim=True)).float()  # centred: float32 sums stay accurate
        f, f2 = self._fft(v), self._fft(v * v)
        # as query: sums of q(x + t) over x in the reference's support; as reference: of r(x) over the query's.
        pair = (lambda a: a * self.ones.conj()) if as_query else (lambda a: self.ones * a.conj())
        return {"fft": f, "sum": self._shifts(pair(f)).double(), "sumsq": self._shifts(pair(f2)).double()}

    def max_over_shifts(self, q: dict[str, torch.Tensor], r: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``(max_ncc, argmax shift index)`` of every (query, reference) pair: shapes ``(Q, R)``."""
        best, arg = [], []
        for i in range(q["fft"].shape[0]):
            cross = self._shifts(q["fft"][i : i + 1] * r["fft"].conj()).double()  # (R, shifts...)
            sq, sqq = q["sum"][i : i + 1], q["sumsq"][i : i + 1]
            num = cross - sq * r["sum"] / self.n
            var = (sqq - sq * sq / self.n).clamp_min(0.0) * (r["sumsq"] - r["sum"] ** 2 / self.n).clamp_min(0.0)
            ncc = torch.where(var > 1e-12, num / var.clamp_min(1e-300).sqrt(), torch.zeros_like(num)).clamp(-1.0, 1.0)
            val, idx = ncc.reshape(ncc.shape[0], -1).max(dim=1)
            best.append(val)
            arg.append(idx)
        return torch.stack(best), torch.stack(arg)

    def shift_of(self, flat_index: int) -> tuple[int, int, int]:
        """The shift ``(tx, ty, tz)`` of a flat index of :meth:`max_over_shifts`."""
        sizes = [2 * m + 1 for m in self.limits]
        i, rest = divmod(int(flat_index), sizes[1] * sizes[2])
        j, k = divmod(rest, sizes[2])
        return i - self.limits[0], j - self.limits[1], k - self.limits[2]


def max_ncc_blockwise(
    load_query: VolumeLoader,
    n_query: int,
    load_reference: VolumeLoader,
    n_reference: int,
    chunk_size: int = 16,
    flip_axes: Sequence[int] = (0,),
    exclude_self: bool = False,
    max_shift: int = 0,
    return_shifts: bool = False,
) -> tuple[np.ndarray, ...]:
    """Max Pearson correlation over voxels of each query volume against all reference volumes, block by block.

    Args:
        load_query: maps an index array to a ``(B, *spatial)`` array of query volumes.
        n_query: number of query volumes.
        load_reference: same for the reference (training) volumes.
        n_reference: number of reference volumes.
        chunk_size: volumes per block.
        flip_axes: spatial axes along which mirrored query volumes are also compared (``()`` for none).
        exclude_self: skip ``i == j`` (leave-one-out when query and reference are the same set).
        max_shift: also maximise over integer shifts of up to this many voxels per axis (capped at a quarter of each
            edge; :func:`shift_limits`), the correlation taken over the overlap; 0: aligned volumes only.
        return_shifts: also return the ``(n_query, 3)`` best shift (query voxel ``x + t`` matches reference ``x``).

    Returns:
        ``(max_ncc, reference_index, flip_axis)`` per query volume (``flip_axis`` -1 for the unflipped volume), and the
        best shifts when ``return_shifts``.
    """
    if max_shift > 0:
        return _max_ncc_shifted(
            load_query, n_query, load_reference, n_reference, chunk_size, flip_axes, exclude_self, max_shift,
            return_shifts,
        )  # fmt: skip
    best = np.full(n_query, -np.inf, dtype=np.float64)
    best_idx = np.full(n_query, -1, dtype=np.int64)
    best_flip = np.full(n_query, -1, dtype=np.int64)
    variants = [-1, *flip_axes]
    for q0 in range(0, n_query, chunk_size):
        q_idx = np.arange(q0, min(q0 + chunk_size, n_query))
        q = np.asarray(load_query(q_idx))
        # rows ordered variant-major: row v * B + b is volume b under variant v.
        qz = torch.cat([_zscore_rows(q if ax < 0 else np.flip(q, axis=ax + 1)) for ax in variants])
        for r0 in range(0, n_reference, chunk_size):
            r_idx = np.arange(r0, min(r0 + chunk_size, n_reference))
            rz = _zscore_rows(np.asarray(load_reference(r_idx)))
            corr = (qz @ rz.T).double().reshape(len(variants), len(q_idx), len(r_idx))
            if exclude_self:
                same = torch.as_tensor(q_idx[:, None] == r_idx[None, :])
                corr = corr.masked_fill(same[None], -np.inf)
            flat = corr.permute(1, 0, 2).reshape(len(q_idx), -1)  # (B, variants * R)
            val, arg = flat.max(dim=1)
            val, arg = val.numpy(), arg.numpy()
            better = val > best[q_idx]
            best[q_idx[better]] = val[better]
            best_idx[q_idx[better]] = r_idx[arg[better] % len(r_idx)]
            best_flip[q_idx[better]] = np.asarray(variants)[arg[better] // len(r_idx)]
    if return_shifts:
        return best, best_idx, best_flip, np.zeros((n_query, 3), dtype=np.int64)
    return best, best_idx, best_flip


def _max_ncc_shifted(
    load_query: VolumeLoader,
    n_query: int,
    load_reference: VolumeLoader,
    n_reference: int,
    chunk_size: int,
    flip_axes: Sequence[int],
    exclude_self: bool,
    max_shift: int,
    return_shifts: bool,
) -> tuple[np.ndarray, ...]:
    best = np.full(n_query, -np.inf, dtype=np.float64)
    best_idx = np.full(n_query, -1, dtype=np.int64)
    best_flip = np.full(n_query, -1, dtype=np.int64)
    best_shift = np.zeros((n_query, 3), dtype=np.int64)
    variants = [-1, *flip_axes]
    engine: _ShiftedNCC | None = None
    for q0 in range(0, n_query, chunk_size):
        q_idx = np.arange(q0, min(q0 + chunk_size, n_query))
        q = np.asarray(load_query(q_idx))
        if engine is None:
            engine = _ShiftedNCC(q.shape[1:], max_shift)
        qs = [engine.prepare(q if ax < 0 else np.flip(q, axis=ax + 1), as_query=True) for ax in variants]
        for r0 in range(0, n_reference, chunk_size):
            r_idx = np.arange(r0, min(r0 + chunk_size, n_reference))
            r = engine.prepare(np.asarray(load_reference(r_idx)), as_query=False)
            for v, ax in enumerate(variants):
                val, arg = engine.max_over_shifts(qs[v], r)  # (Bq, Br)
                val, arg = val.numpy(), arg.numpy()
                if exclude_self:
                    val = np.where(q_idx[:, None] == r_idx[None, :], -np.inf, val)
                j = val.argmax(axis=1)
                top = val[np.arange(len(q_idx)), j]
                better = top > best[q_idx]
                for b in np.flatnonzero(better):
                    best[q_idx[b]] = top[b]
                    best_idx[q_idx[b]] = r_idx[j[b]]
                    best_flip[q_idx[b]] = ax
                    best_shift[q_idx[b]] = engine.shift_of(arg[b, j[b]])
    if return_shifts:
        return best, best_idx, best_flip, best_shift
    return best, best_idx, best_flip


def memorisation_audit(
    synthetic_features: np.ndarray | None,
    training_features: np.ndarray | None,
    load_synthetic: VolumeLoader | None = None,
    n_synthetic: int | None = None,
    load_training: VolumeLoader | None = None,
    n_training: int | None = None,
    ncc_threshold: float = 0.95,
    ratio_threshold: float = 0.2,
    chunk_size: int = 16,
    flip_axes: Sequence[int] = (0,),
    max_shift: int = 0,
) -> dict:
    """Nearest training sample of every synthetic sample, in feature and voxel space, and the likely copies.

    Either space can be skipped by passing None for its inputs.

    Args:
        synthetic_features: ``(n, F)`` synthetic features.
        training_features: ``(m, F)`` training features.
        load_synthetic: index array -> ``(B, *spatial)`` synthetic volumes (intensities windowed to ``[0, 1]``).
        n_synthetic: number of synthetic volumes.
        load_training: index array -> ``(B, *spatial)`` training volumes.
        n_training: number of training volumes.
        ncc_threshold: voxel NCC at or above which a sample is a likely copy.
        ratio_threshold: feature distance ratio at or below which a sample is a likely copy.
        chunk_size: volumes per block in the voxel search.
        flip_axes: mirrored variants checked in voxel space.
        max_shift: largest integer shift (voxels per axis) over which the voxel NCC is maximised (0: aligned only).

    Returns:
        dict with ``per_sample`` (column name -> array, one row per synthetic sample), ``likely_copies`` (indices),
        ``summary`` (scalars) and ``protocol`` (thresholds).
    """
    per_sample: dict[str, np.ndarray] = {}
    summary: dict[str, float | int] = {}
    flagged = None
    if synthetic_features is not None and training_features is not None:
        dist, idx = feature_nearest_neighbours(synthetic_features, training_features)
        loo = leave_one_out_nn_distances(training_features)
        median_loo = float(np.median(loo))
        ratio = dist / median_loo if median_loo > 0 else np.full_like(dist, np.inf)
        per_sample.update({"feature_nn_index": idx, "feature_nn_distance": dist, "feature_distance_ratio": ratio})
        summary.update(
            {
                "training_loo_nn_distance_median": median_loo,
                "feature_distance_ratio_median": float(np.median(ratio)),
                "feature_distance_ratio_min": float(np.min(ratio)),
            }
        )
        flagged = ratio <= ratio_threshold
    if load_synthetic is not None and load_training is not None:
        ncc, nidx, flip, shift = max_ncc_blockwise(
            load_synthetic, n_synthetic, load_training, n_training, chunk_size=chunk_size, flip_axes=flip_axes,
            max_shift=max_shift, return_shifts=True,
        )  # fmt: skip
        loo_ncc, _, _ = max_ncc_blockwise(
            load_training, n_training, load_training, n_training, chunk_size, flip_axes=flip_axes, exclude_self=True,
            max_shift=max_shift,
        )  # fmt: skip
        per_sample.update({"voxel_nn_index": nidx, "voxel_ncc": ncc, "voxel_nn_flip_axis": flip})
        if max_shift > 0:
            per_sample.update({f"voxel_nn_shift_{a}": shift[:, k] for k, a in enumerate("xyz")})
        summary.update(
            {
                "voxel_ncc_median": float(np.median(ncc)),
                "voxel_ncc_max": float(np.max(ncc)),
                "training_loo_max_ncc_median": float(np.median(loo_ncc)),
                "training_loo_max_ncc_max": float(np.max(loo_ncc)),
            }
        )
        by_ncc = ncc >= ncc_threshold
        flagged = by_ncc if flagged is None else (flagged | by_ncc)
    if flagged is None:
        raise ValueError("memorisation_audit needs features and/or volume loaders for both sets.")
    per_sample["likely_copy"] = flagged
    likely = np.flatnonzero(flagged)
    summary.update({"n_likely_copies": int(len(likely)), "fraction_likely_copies": float(flagged.mean())})
    return {
        "per_sample": per_sample,
        "likely_copies": likely.tolist(),
        "summary": summary,
        "protocol": {
            "ncc_threshold": ncc_threshold,
            "ratio_threshold": ratio_threshold,
            "flip_axes": list(flip_axes),
            "max_shift": int(max_shift),
            "ratio": "feature NN distance / median leave-one-out NN distance among training samples",
        },
    }
