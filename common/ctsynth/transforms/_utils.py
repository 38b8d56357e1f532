"""Helpers shared by the ctsynth transforms: error-message naming, integral-image box counts, invertible box crops."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Crop, InvertibleTransform, Pad
from monai.utils import convert_to_numpy

__all__ = [
    "BoxExtract",
    "CubeRejectedError",
    "box_counts",
    "crop_array",
    "describe",
    "spatial_numpy",
    "to_spatial_mask",
]


class CubeRejectedError(ValueError):
    """Raised when a cube does not meet the requested criteria (``on_oversize="skip"``, ``min_fill``).

    Offline data-preparation loops catch it to skip a case; it subclasses ``ValueError`` so plain callers see a
    normal bad-input error.
    """


def describe(data: Any, key: Hashable | None = None) -> str:
    """Name an item for error messages: its dictionary key and, when the MetaTensor knows it, its source file."""
    name = f"key '{key}'" if key is not None else "input"
    if isinstance(data, MetaTensor):
        fname = data.meta.get("filename_or_obj")
        if fname:
            name += f" (file {fname})"
    return name


def spatial_numpy(img: NdarrayOrTensor) -> np.ndarray:
    """The spatial array of a channel-first single-channel image, or of a bare 3D array, as numpy."""
    arr = convert_to_numpy(img.as_tensor() if isinstance(img, MetaTensor) else img)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"expected a single-channel image (1, x, y, z), got shape {tuple(arr.shape)}")
        return arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D array (x, y, z) or channel-first (1, x, y, z), got shape {tuple(arr.shape)}")
    return arr


def to_spatial_mask(label: NdarrayOrTensor, labels: Sequence[int] | None) -> np.ndarray:
    """Boolean spatial mask of ``label`` values in ``labels`` (``None``: every label > 0)."""
    arr = spatial_numpy(label)
    if labels is None:
        return arr > 0
    return np.isin(np.rint(arr).astype(np.int64), np.asarray(tuple(labels), dtype=np.int64))


def box_counts(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Number of True voxels in every axis-aligned box of ``size`` that fits in ``mask``.

    Computed with a summed-area table (integral image), so every box costs O(1): out[i, j, k] is the count in
    ``mask[i:i+size[0], j:j+size[1], k:k+size[2]]``. Written by hand because scipy's ``uniform_filter`` works in
    floating point and centres even-sized windows ambiguously; this one is exact and indexed by the box start.

    Args:
        mask: boolean nD array.
        size: box size per axis, each <= the mask's size on that axis.

    Returns:
        int64 array of shape ``mask.shape - size + 1``.
    """
    size = tuple(int(s) for s in size)
    if len(size) != mask.ndim or any(s < 1 or s > n for s, n in zip(size, mask.shape, strict=True)):
        raise ValueError(f"box size {size} must be >= 1 and fit in the mask shape {mask.shape}")
    sat = np.pad(mask.astype(np.int64), [(1, 0)] * mask.ndim)
    for ax in range(mask.ndim):
        np.cumsum(sat, axis=ax, out=sat)
    out = np.zeros([n - s + 1 for n, s in zip(mask.shape, size, strict=True)], dtype=np.int64)
    # inclusion-exclusion over the 2^ndim corners of each box
    for corner in np.ndindex(*([2] * mask.ndim)):
        sl = tuple(slice(s, s + o) if c else slice(0, o) for c, s, o in zip(corner, size, out.shape, strict=True))
        sign = (-1) ** (mask.ndim - sum(corner))
        out += sign * sat[sl]
    return out


def crop_array(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: Any = 0) -> np.ndarray:
    """Numpy box ``array[start:start+size]`` per axis, with ``fill`` where the box leaves the array."""
    start = np.asarray(start, dtype=int)
    size = np.asarray(size, dtype=int)
    n = np.asarray(array.shape)
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src_lo, src_hi = np.maximum(start, 0), np.minimum(start + size, n)
    if (src_hi > src_lo).all():
        out[tuple(slice(a - s, b - s) for a, b, s in zip(src_lo, src_hi, start, strict=True))] = array[
            tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
        ]
    return out


class BoxExtract(InvertibleTransform):
    """Extract a box given by its start and size from a channel-first image, padding where it leaves the image.

    Composes MONAI's :class:`~monai.transforms.Pad` (only the amount the box overhangs the image) and
    :class:`~monai.transforms.Crop`, so the affine is updated and the inverse (put the box back into an image of the
    original size, zeros elsewhere) works through MONAI's traced-transform machinery.

    Args:
        pad_mode: padding mode for the parts of the box outside the image (``"constant"`` uses ``pad_value``).
    """

    def __init__(self, pad_mode: str = "constant") -> None:
        self.padder = Pad(mode=pad_mode)
        self.cropper = Crop()

    def __call__(
        self, img: NdarrayOrTensor, start: Sequence[int], size: Sequence[int], pad_value: float = 0.0
    ) -> torch.Tensor:
        """Args:
        img: channel-first image (C, x, y, z).
        start: box start per spatial axis (may be negative or beyond the image).
        size: box size per spatial axis.
        pad_value: constant for padded voxels.
        """
        shape = img.peek_pending_shape() if isinstance(img, MetaTensor) else tuple(img.shape[1:])
        start = [int(s) for s in start]
        size = [int(s) for s in size]
        before = [max(0, -s) for s in start]
        after = [max(0, s + n - d) for s, n, d in zip(start, size, shape, strict=True)]
        to_pad = [(0, 0)] + list(zip(before, after, strict=True))
        kwargs = {"value": pad_value} if self.padder.mode == "constant" else {}
        padded = self.padder(img, to_pad=to_pad, **kwargs)  # always traced, even when nothing is padded
        slices = tuple(slice(s + b, s + b + n) for s, b, n in zip(start, before, size, strict=True))
        return self.cropper(padded, slices=slices)

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        return self.padder.inverse(self.cropper.inverse(data))
