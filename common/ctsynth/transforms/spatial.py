"""Isotropic resampling (3DGAUnet 1 mm, LDM 1.1 mm, HA-GAN 1.5 mm) as a thin layer over MONAI's ``Spacingd``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.config import DtypeLike, KeysCollection
from monai.transforms import Spacingd
from monai.utils import ensure_tuple

__all__ = ["IsotropicSpacingd"]


class IsotropicSpacingd(Spacingd):
    """Resample to isotropic voxels of ``spacing_mm``; images bilinear, label maps nearest.

    A :class:`monai.transforms.Spacingd` whose per-key interpolation mode is chosen from ``label_keys`` so a
    config only lists which keys are labels. Invertible exactly as ``Spacingd`` is.

    Args:
        keys: keys of every volume to resample (images and labels).
        spacing_mm: isotropic output spacing in mm.
        label_keys: the subset of ``keys`` holding label maps (resampled with ``"nearest"``).
        mode: explicit interpolation mode, one for all keys or one per key; overrides ``label_keys``.
        image_mode: interpolation mode of the non-label keys when ``mode`` is not given.
        padding_mode: ``grid_sample`` padding mode.
        align_corners: ``grid_sample`` corner alignment (MONAI's default ``False``).
        dtype: resampling precision (MONAI's default float64).
        allow_missing_keys: do not raise for missing keys.
        kwargs: other :class:`monai.transforms.Spacingd` arguments.

    Raises:
        ValueError: for a non-positive spacing or label keys that are not in ``keys``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing_mm: float = 1.0,
        label_keys: KeysCollection = (),
        mode: str | Sequence[str] | None = None,
        image_mode: str = "bilinear",
        padding_mode: str | Sequence[str] = "border",
        align_corners: bool | Sequence[bool] = False,
        dtype: DtypeLike = np.float64,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        if not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
        keys_t = ensure_tuple(keys)
        label_t = ensure_tuple(label_keys) if label_keys else ()
        unknown = [k for k in label_t if k not in keys_t]
        if unknown:
            raise ValueError(f"label_keys {unknown} are not among keys {list(keys_t)}")
        if mode is None:
            mode = tuple("nearest" if k in label_t else image_mode for k in keys_t)
        super().__init__(
            keys_t,
            pixdim=(float(spacing_mm),) * 3,
            mode=mode,
            padding_mode=padding_mode,
            align_corners=align_corners,
            dtype=dtype,
            allow_missing_keys=allow_missing_keys,
            **kwargs,
        )
        self.spacing_mm = float(spacing_mm)
        self.label_keys = label_t
