"""What every blending method returns, the label-map conversion, and the array-type plumbing they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_dst_type

__all__ = ["BlendResult", "to_label_map"]


@dataclass
class BlendResult:
    """A blended volume and its tumour mask, both on the tissue cube's grid.

    Attributes:
        image: the blended volume, float32, same container (numpy / torch / MetaTensor) and layout ((x, y, z) or
            (1, x, y, z)) as the tissue input, values in the tissue's intensity range ([0, 1] after windowing).
        mask: uint8 tumour mask (1 = tumour) with the same container and layout as ``image``.
        offset: voxel index of the tumour cube's corner in the tissue grid.
        method: name of the blending method that produced ``image``.
    """

    image: Any
    mask: Any
    offset: tuple[int, int, int]
    method: str

    def label_map(self, pancreas_value: int = 1, tumor_value: int = 2) -> Any:
        """The mask as an MSD-style label map (see :func:`to_label_map`)."""
        return to_label_map(self.mask, pancreas_value=pancreas_value, tumor_value=tumor_value)


def to_label_map(mask: Any, pancreas_value: int = 1, tumor_value: int = 2, pancreas_mask: Any = None) -> Any:
    """Turn a tumour mask of a blended pancreas cube into a label map (MSD Task07: pancreas = 1, tumour = 2).

    The blended cube is pancreas tissue throughout (the paper's pancreas cubes are "filled" with pancreas), so every
    non-tumour voxel gets ``pancreas_value`` unless ``pancreas_mask`` says where the pancreas is.

    Args:
        mask: tumour mask (non-zero = tumour), numpy or torch, any shape.
        pancreas_value: label of non-tumour pancreas voxels (0 to leave them background).
        tumor_value: label of tumour voxels.
        pancreas_mask: optional mask (same shape) of the pancreas; voxels outside it and outside the tumour get 0.

    Returns:
        uint8 label map, same container and shape as ``mask``.

    Raises:
        ValueError: when a value does not fit in uint8 or ``pancreas_mask`` has another shape.
    """
    for name, value in (("pancreas_value", pancreas_value), ("tumor_value", tumor_value)):
        if not 0 <= int(value) <= 255:
            raise ValueError(f"{name} must be in [0, 255] to fit a uint8 label map; got {value}")
    tumour = _to_numpy(mask) != 0
    labels = np.full(tumour.shape, int(pancreas_value), dtype=np.uint8)
    if pancreas_mask is not None:
        pancreas = _to_numpy(pancreas_mask) != 0
        if pancreas.shape != tumour.shape:
            raise ValueError(f"pancreas_mask shape {pancreas.shape} does not match mask shape {tumour.shape}")
        labels[~pancreas] = 0
    labels[tumour] = int(tumor_value)
    return convert_to_dst_type(labels, mask, dtype=np.uint8 if isinstance(mask, np.ndarray) else torch.uint8)[0]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_volume(x: Any, name: str) -> tuple[np.ndarray, bool]:
    """Validate one input volume and return it as a float64 (x, y, z) numpy array.

    Args:
        x: numpy array or torch tensor, (x, y, z) or channel-first (1, x, y, z).
        name: what the volume is, for error messages ("tumor", "tissue").

    Returns:
        ``(array, had_channel)``.

    Raises:
        TypeError: when ``x`` is not an array or tensor.
        ValueError: when ``x`` is not 3D (or 4D with one channel) or holds non-finite values.
    """
    if not isinstance(x, np.ndarray | torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor; got {type(x).__name__}")
    arr = _to_numpy(x)
    had_channel = arr.ndim == 4
    if had_channel and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D volume (x, y, z) or channel-first (1, x, y, z); got shape {x.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr, had_channel


def like_input(arr: np.ndarray, like: Any, had_channel: bool, dtype: Any) -> Any:
    """Return ``arr`` in the container (numpy / torch / MetaTensor, device) and layout of the input ``like``."""
    out = arr[None] if had_channel else arr
    if isinstance(like, torch.Tensor):
        dtype = {np.float32: torch.float32, np.uint8: torch.uint8}[dtype]
    return convert_to_dst_type(np.ascontiguousarray(out), like, dtype=dtype)[0]
