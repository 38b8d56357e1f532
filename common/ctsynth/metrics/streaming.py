"""One pass over a set of volumes that feeds every metric of the suite (each volume is read once).

On the way through, :func:`stream_set` accumulates the HU histograms, the linear-MMD sums and the three centre slices,
batches the windowed volumes through the feature extractors (only ``(N, F)`` features are kept; slice extractors'
features go into running means/covariances), and writes the windowed volume to a memory-mapped cache when a metric
needs pairs of volumes.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ctsynth.data.io import load_volume, require_finite
from ctsynth.metrics.features.base import extractor_input
from ctsynth.metrics.histograms import body_mask, hu_histogram
from ctsynth.metrics.mmd import LinearMMDAccumulator
from ctsynth.metrics.psnr import PLANES, centre_slices

__all__ = ["SetState", "stream_set", "window_volume"]


class SetState:
    """What the suite keeps about one set while streaming it.

    Attributes:
        files: the set's volume files.
        hist_counts: per-volume HU histogram counts.
        hist_out_of_range: per-volume fraction of (masked) voxels outside the histogram range.
        slices: plane -> centre slices of the windowed volumes.
        features: extractor name -> list of ``(B, F)`` feature batches.
        plane_stats: slice-extractor name -> plane -> running feature statistics.
        cache: ``(N, D, H, W)`` float32 memory map of the windowed volumes (or None).
        shape: common spatial shape after resizing.
    """

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.hist_counts: list[np.ndarray] = []
        self.hist_out_of_range: list[float] = []
        self.slices: dict[str, list[np.ndarray]] = {p: [] for p in PLANES}
        self.features: dict[str, list[np.ndarray]] = {}
        self.plane_stats: dict[str, dict[str, Any]] = {}
        self.cache: np.memmap | None = None
        self.shape: tuple[int, ...] | None = None


def window_volume(
    hu: np.ndarray, window: tuple[float, float], resize_to: tuple[int, ...] | None = None
) -> torch.Tensor:
    """HU clipped to ``window`` and scaled to [0, 1], then resized (trilinear, anti-aliased) to ``resize_to``.

    Returns:
        ``(1, D, H, W)`` float32 tensor.
    """
    lo, hi = window
    x = torch.from_numpy(np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0))[None]
    if resize_to is not None and tuple(x.shape[1:]) != tuple(resize_to):
        from monai.transforms import Resize

        x = torch.as_tensor(Resize(resize_to, mode="trilinear", anti_aliasing=True)(x)).clamp_(0.0, 1.0)
    return x


def _run_features(
    state: SetState, extractors: dict[str, Any], batch: list[torch.Tensor], window: tuple[float, float]
) -> None:
    from ctsynth.metrics.frechet import RunningFeatureStats

    x = torch.stack(batch)  # (B, 1, D, H, W)
    for name, ext in extractors.items():
        feats = ext(extractor_input(ext, x, window))
        if isinstance(feats, dict):
            for plane, f in feats.items():
                state.plane_stats.setdefault(name, {}).setdefault(plane, RunningFeatureStats()).update(f)
        else:
            state.features.setdefault(name, []).append(np.asarray(feats, dtype=np.float32))


#: a volume whose every value lies within +-this is normalised, not HU (the rule of ``ctsynth validate``)
NORMALISED_LIMIT = 1.5


def check_hu_volume(hu: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Refuse a volume the suite cannot score in HU: NaN/inf values, or intensities that look normalised.

    Args:
        hu: the volume read from ``path``.
        path: its file (named in the message).
        what: ``"real"`` or ``"synthetic"``.

    Returns:
        ``hu`` unchanged.

    Raises:
        ValueError: naming the file and the problem.
    """
    require_finite(hu, path, what=f"{what} volume")
    low, high = float(hu.min()), float(hu.max())
    if low != high and -NORMALISED_LIMIT <= low and high <= NORMALISED_LIMIT:
        raise ValueError(
            f"{path}: {what} volume has intensities in [{low:.3g}, {high:.3g}], which look normalised (e.g. to [0, 1] "
            "or [-1, 1]), not HU; the suite compares both sets in HU (bundle inference writes HU; convert the "
            "reference set back, or check it with `ctsynth validate`)"
        )
    return hu


def stream_set(
    state: SetState,
    what: str,
    needs: Collection[str],
    extractors: dict[str, Any],
    options: Any,
    hist_edges: np.ndarray,
    linear_mmd: LinearMMDAccumulator | None = None,
) -> None:
    """Read every volume of ``state.files`` once and fill ``state`` with what ``needs`` asks for.

    Args:
        state: the set (its ``cache`` must be allocated when ``"volume_cache"`` is needed).
        what: ``"real"`` or ``"synthetic"`` (the side of the linear-MMD sums; progress label).
        needs: stream products (see :mod:`ctsynth.metrics.registry`).
        extractors: feature extractors to run (batches of ``options.batch_size``).
        options: :class:`~ctsynth.metrics.options.EvaluationOptions`.
        hist_edges: HU histogram bin edges.
        linear_mmd: accumulator updated when ``"linear_mmd"`` is needed.
    """
    batch: list[torch.Tensor] = []
    for i, f in enumerate(tqdm(state.files, desc=f"{what} volumes", disable=not options.progress)):
        hu = check_hu_volume(load_volume(f, dtype=np.float32)[0], f, what)
        if "histogram" in needs:
            mask = body_mask(hu) if options.hist_body_mask else None
            counts, out = hu_histogram(hu, hist_edges, mask=mask)
            state.hist_counts.append(counts)
            state.hist_out_of_range.append(out)
        x = window_volume(hu, options.window, options.resize_to)
        if "volume_cache" in needs:
            state.cache[i] = x[0].numpy()
        if "linear_mmd" in needs:
            linear_mmd.update(x[None], real=what == "real")
        if "centre_slices" in needs:
            for plane, s in centre_slices(x[0].numpy()).items():
                state.slices[plane].append(s)
        if extractors:
            batch.append(x)
            if len(batch) == options.batch_size:
                _run_features(state, extractors, batch, options.window)
                batch = []
    if batch:
        _run_features(state, extractors, batch, options.window)
    if "volume_cache" in needs:
        state.cache.flush()
