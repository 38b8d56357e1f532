"""The phantom container and input checks shared by the abdominal and chest generators."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PhantomVolume:
    """One synthetic CT volume with its labels.

    Args:
        image: float32 HU, indexed (x, y, z): x towards the patient's right, y anterior, z superior (RAS affine).
        label: uint8 MSD-style label map (abdomen: pancreas = 1, tumour = 2; chest: nodule = 1).
        organs: uint8 full organ map with :data:`~ctsynth.data.labels.ABDOMEN_LABELS` or
            :data:`~ctsynth.data.labels.CHEST_LABELS` ids.
        affine: 4x4 voxel-to-world affine in mm, volume centre at the origin.
        label_names: names of the ids in ``label`` (name -> id).
        organ_names: names of the ids in ``organs`` (name -> id).
        info: generation details (seed, phase, tumour/nodule centres and radii in voxels and mm, ...).
    """

    image: np.ndarray
    label: np.ndarray
    organs: np.ndarray
    affine: np.ndarray
    label_names: dict[str, int]
    organ_names: dict[str, int] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def check_shape(shape: Sequence[int] | int) -> tuple[int, int, int]:
    """Validate a volume shape: three positive integers (an int means a cube).

    Raises:
        ValueError: when it is not three positive integers.
    """
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (int(shape),) * 3
    try:
        vals = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}") from None
    if len(vals) != 3 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in vals):
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}")
    if min(vals) < 8:
        raise ValueError(f"shape must be at least 8 voxels along each axis, got {vals}")
    return tuple(int(v) for v in vals)  # type: ignore[return-value]


def check_spacing(spacing: Sequence[float] | float) -> tuple[float, float, float]:
    """Validate a voxel spacing in mm: three finite numbers > 0 (a number means isotropic).

    Raises:
        ValueError: when it is not three positive finite numbers.
    """
    if isinstance(spacing, int | float | np.number) and not isinstance(spacing, bool):
        spacing = (float(spacing),) * 3
    try:
        vals = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing!r}") from None
    if len(vals) != 3 or not all(np.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing!r}")
    return vals  # type: ignore[return-value]


def check_phase(phase: str) -> str:
    """Validate a contrast phase name."""
    from ctsynth.data.phantoms.tissues import PHASES

    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return phase


def seed_streams(seed: int, n: int) -> list[np.random.Generator]:
    """Independent generators for one seed (anatomy, lesions, noise...), so switching a lesion off keeps the rest.

    Raises:
        ValueError: when the seed is not a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(n)]


def ball_fits(mask: np.ndarray, centre: np.ndarray, radius_vox: np.ndarray) -> bool:
    """Whether the (ellipsoidal, in voxels) ball around ``centre`` lies inside ``mask`` and the volume."""
    c = np.asarray(centre, dtype=np.float64)
    r = np.asarray(radius_vox, dtype=np.float64)
    lo = np.floor(c - r).astype(int)
    hi = np.ceil(c + r).astype(int) + 1
    if np.any(lo < 0) or np.any(hi > np.asarray(mask.shape)):
        return False
    sub = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    g = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    inside = sum(((gi - ci) / ri) ** 2 for gi, ci, ri in zip(g, c, r, strict=True)) <= 1.0
    return bool(np.all(sub[inside]))
