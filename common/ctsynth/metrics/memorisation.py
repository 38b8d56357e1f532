"""Memorisation audit: is a synthetic sample a (near-)copy of a training sample?

Synthetic data is often shared in place of patient data, so each synthetic sample is matched with its nearest
training sample in two spaces:

* **feature space** -- Euclidean distance to the nearest training feature vector, divided by the median of the
  training set's leave-one-out nearest-neighbour distances (``ratio``; ~1 for a fresh sample from the same
  distribution, ~0 for a copy);
* **voxel space** -- normalised cross-correlation (Pearson correlation over all voxels) with every training volume,
  maximised over the training set, also against the synthetic volume mirrored along ``flip_axes`` (default: the
  left-right axis x, so a mirrored copy is still caught). Computed block-wise: both sets are read ``chunk_size`` volumes
  at a time, so neither needs to be in memory.

A sample is listed as a likely copy when ``voxel_ncc >= ncc_threshold`` (default 0.95) or ``ratio <= ratio_threshold``
(default 0.2). The same statistics among training samples (leave-one-out) are reported for context: if real scans
already correlate above 0.95 with each other (e.g. tightly cropped, aligned cubes), raise the NCC threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ctsynth.metrics.distances import pairwise_distances

__all__ = ["feature_nearest_neighbours", "leave_one_out_nn_distances", "max_ncc_blockwise", "memorisation_audit"]

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


def max_ncc_blockwise(
    load_query: VolumeLoader,
    n_query: int,
    load_reference: VolumeLoader,
    n_reference: int,
    chunk_size: int = 16,
    flip_axes: Sequence[int] = (0,),
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max Pearson correlation over voxels of each query volume against all reference volumes, block by block.

    Args:
        load_query: maps an index array to a ``(B, *spatial)`` array of query volumes.
        n_query: number of query volumes.
        load_reference: same for the reference (training) volumes.
        n_reference: number of reference volumes.
        chunk_size: volumes per block.
        flip_axes: spatial axes along which mirrored query volumes are also compared (``()`` for none).
        exclude_self: skip ``i == j`` (leave-one-out when query and reference are the same set).

    Returns:
        ``(max_ncc, reference_index, flip_axis)`` per query volume; ``flip_axis`` is -1 for the unflipped volume.
    """
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
        ncc, nidx, flip = max_ncc_blockwise(
            load_synthetic, n_synthetic, load_training, n_training, chunk_size=chunk_size, flip_axes=flip_axes
        )
        loo_ncc, _, _ = max_ncc_blockwise(
            load_training, n_training, load_training, n_training, chunk_size, flip_axes=flip_axes, exclude_self=True
        )
        per_sample.update({"voxel_nn_index": nidx, "voxel_ncc": ncc, "voxel_nn_flip_axis": flip})
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
            "ratio": "feature NN distance / median leave-one-out NN distance among training samples",
        },
    }
