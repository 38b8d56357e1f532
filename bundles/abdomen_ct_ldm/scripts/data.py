"""Data of the LDM bundle: the datalist, the crop regimes of the thesis (Drenth 2024, section 3.3) and the
dataset-level intensity range recorded for sampling.

Training scales each volume by its own 0th-99.5th percentiles to [0, 1] (MONAI ``ScaleIntensityRangePercentilesd``,
as the BraTS LDM bundle the thesis ran). A generated volume has no percentiles of its own, so sampling maps [0, 1]
back to HU with one fixed range: the mean of the per-volume percentiles over the training volumes
(:func:`dataset_intensity_range`), stored in the checkpoint's run info.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import AsDiscreted, ConcatItemsd, DeleteItemsd, MapTransform

from ctsynth.data.datalist import find_cases
from ctsynth.transforms.crops import PancreasBBoxCropd, SemiCropd

__all__ = ["CROP_REGIMES", "load_cases", "crop_regime_transforms", "pair_transforms", "dataset_intensity_range"]

CROP_REGIMES = ("full_body", "pancreas", "semi")


def load_cases(dataset_dir: str | os.PathLike, need_labels: bool = False) -> list[dict[str, str]]:
    """``[{"image": path, "label"?: path}]`` of a dataset (MSD ``dataset.json``, ``imagesTr``/``labelsTr`` or a folder).

    Args:
        dataset_dir: dataset folder or ``dataset.json`` (see :func:`ctsynth.data.datalist.find_cases`).
        need_labels: the run needs a label per image (pancreas crop, pair mode).

    Returns:
        The cases with absolute paths as strings.

    Raises:
        ValueError: when labels are needed and some image has none (names the first such file).
    """
    _, cases, _ = find_cases(dataset_dir)
    unlabelled = [c["image"] for c in cases if "label" not in c]
    if need_labels and unlabelled:
        raise ValueError(
            f"{dataset_dir}: {len(unlabelled)} image(s) have no label (e.g. {unlabelled[0]}); the pancreas crop and "
            "pair mode need a label per image (use the labelled MSD cases, or --crop_regime full_body "
            "--pair_mode false)"
        )
    keys = ("image", "label") if need_labels else ("image",)
    return [{k: str(c[k]) for k in keys} for c in cases]


def crop_regime_transforms(
    regime: str,
    keys: Sequence[str],
    resize: Sequence[int] | str | None = None,
    keep_spacing: bool = True,
    body_source: str = "threshold",
    body_threshold_hu: float = -500.0,
) -> list[MapTransform]:
    """The offline crop of a thesis regime, as transforms run after ``Orientationd("RAS")`` on HU volumes.

    - ``full_body``: no crop (thesis model 1).
    - ``pancreas``: bounding box of every label > 0, then resized (thesis models 2-5: back to the input size,
      ``resize="original"``; model 6: ``resize=[240, 240, 155]``).
    - ``semi``: largest axial square inside the body, z cut to the body, resized to 240 x 240 x 155 (model 7). The
      body mask is thresholded (``body_source="threshold"``) or, when asked for and installed, TotalSegmentator's
      ``body`` task (``body_source="totalsegmentator"``, the thesis's tool).

    Args:
        regime: one of :data:`CROP_REGIMES`.
        keys: keys cropped together (``["image"]`` or ``["image", "label"]``).
        resize: size after the crop; ``None`` takes the thesis's default of the regime.
        keep_spacing: keep the cropped voxel spacing in the affine after the resize, so the later ``Spacingd`` does
            not undo the resize (the reading of the thesis's "less zoomed" outputs, see docs/README.md).
        body_source: ``"threshold"`` or ``"totalsegmentator"`` (semi crop only).
        body_threshold_hu: threshold of the thresholded body mask.

    Returns:
        The transforms (empty for ``full_body``).

    Raises:
        ValueError: for an unknown regime or body source.
    """
    keys = list(keys)
    if regime == "full_body":
        return []
    if regime == "pancreas":
        if "label" not in keys:
            raise ValueError("the pancreas crop needs the label key among the loaded keys")
        size = "original" if resize is None else resize
        return [PancreasBBoxCropd(keys, label_key="label", spatial_size=size, keep_spacing=keep_spacing)]
    if regime == "semi":
        if body_source not in ("threshold", "totalsegmentator"):
            raise ValueError(f"body_source must be 'threshold' or 'totalsegmentator', got {body_source!r}")
        size = (240, 240, 155) if resize is None else resize
        if body_source == "threshold":
            return [SemiCropd(keys, body_threshold_hu=body_threshold_hu, spatial_size=size, keep_spacing=keep_spacing)]
        from scripts.totalseg import TotalSegmentatorBodyd

        return [
            TotalSegmentatorBodyd("image", out_key="body"),
            SemiCropd(keys, body_key="body", spatial_size=size, keep_spacing=keep_spacing),
            DeleteItemsd("body"),
        ]
    raise ValueError(f"crop_regime must be one of {CROP_REGIMES}, got {regime!r}")


def pair_transforms(pair_mode: bool, has_label: bool) -> list[MapTransform]:
    """Last transforms: in pair mode the binary label (pancreas + tumour) becomes the image's second channel.

    Args:
        pair_mode: train on ``[image, mask]`` two-channel volumes.
        has_label: a ``"label"`` key was loaded (dropped when not in pair mode).

    Returns:
        The transforms.
    """
    if pair_mode:
        return [
            AsDiscreted("label", threshold=0.5),
            ConcatItemsd(["image", "label"], name="image"),
            DeleteItemsd("label"),
        ]
    return [DeleteItemsd("label")] if has_label else []


def dataset_intensity_range(
    cases: Sequence[Mapping[str, Any]],
    transform: Callable[[dict], dict],
    lower: float = 0.0,
    upper: float = 99.5,
    max_volumes: int | None = 16,
) -> list[float]:
    """Mean of the per-volume ``lower``/``upper`` HU percentiles (the fixed inverse map used when sampling).

    Args:
        cases: the training cases.
        transform: the preprocessing before intensity scaling (load, orientation, crop regime, spacing, crop/pad).
        lower: lower percentile (thesis bundle: 0).
        upper: upper percentile (thesis bundle: 99.5).
        max_volumes: use the first N cases only (None: all).

    Returns:
        ``[mean lower percentile, mean upper percentile]`` in HU.

    Raises:
        ValueError: when there are no cases or the range is empty.
    """
    chosen = list(cases)[: max_volumes if max_volumes else None]
    if not chosen:
        raise ValueError("no training cases to compute the intensity range from")
    lows, highs = [], []
    for case in chosen:
        image = transform(dict(case))["image"]
        values = torch.as_tensor(image)[0].float().flatten().numpy()
        lo, hi = np.percentile(values, [lower, upper])
        lows.append(float(lo))
        highs.append(float(hi))
    lo, hi = float(np.mean(lows)), float(np.mean(highs))
    if not hi > lo:
        raise ValueError(f"empty intensity range [{lo}, {hi}] over {len(chosen)} volume(s), e.g. {chosen[0]['image']}")
    return [lo, hi]
