"""Where the tumour cube goes in the tissue cube, and which of its voxels are tumour.

The paper inserts the tumour "at a fixed location"; the default here is the cube centre (a 32^3 tumour occupies
[16:48]^3 of a 64^3 tissue cube). Its tumour cubes hold tumour voxels on a ~0 background and the tumour object "is
extracted with a simple threshold of pixel value"; the threshold is not stated (default 0.05 on [0, 1] data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.transforms.utils import get_largest_connected_component_mask
from scipy import ndimage

from ctsynth.blending.result import as_volume

__all__ = [
    "BlendInputs",
    "dilate_mask",
    "paste_into",
    "prepare_inputs",
    "tumor_fringe",
    "tumor_mask",
    "tumor_offset",
]

DEFAULT_THRESHOLD = 0.05


def tumor_mask(
    tumor: Any, threshold: float = DEFAULT_THRESHOLD, keep_largest: bool = True, fill_holes: bool = True
) -> np.ndarray:
    """Tumour voxels of a tumour cube: threshold, then optionally keep the largest component and fill holes.

    Keeping the largest (6-connected) component drops isolated voxels of the cube's background that pass the
    threshold; filling holes keeps dark voxels enclosed by the tumour (necrotic core) as tumour.

    Args:
        tumor: tumour cube, (x, y, z) or (1, x, y, z), numpy or torch, tumour on a ~0 background.
        threshold: voxels strictly above it are tumour.
        keep_largest: keep only the largest connected component.
        fill_holes: fill enclosed holes (``scipy.ndimage.binary_fill_holes``).

    Returns:
        uint8 mask (x, y, z), 1 = tumour.

    Raises:
        ValueError: when the mask is empty (names the threshold and the cube's maximum).
    """
    arr, _ = as_volume(tumor, "tumor")
    mask = arr > threshold
    if not mask.any():
        raise ValueError(
            f"tumor mask is empty after thresholding at {threshold} (tumor max {arr.max():.4g}); "
            "lower `threshold` or pass `mask`"
        )
    if keep_largest:
        mask = get_largest_connected_component_mask(mask, connectivity=1)
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return np.asarray(mask, dtype=np.uint8)


def tumor_offset(
    tumor_shape: Sequence[int],
    tissue_shape: Sequence[int],
    offset: Sequence[int] | str | None = None,
    seed: int | None = 0,
) -> tuple[int, int, int]:
    """Corner of the tumour cube in the tissue grid.

    Args:
        tumor_shape: (x, y, z) of the tumour cube.
        tissue_shape: (x, y, z) of the tissue cube.
        offset: ``None`` or ``"center"`` for the centred (paper: "fixed") location, ``"random"`` for a uniformly
            random location where the whole tumour cube fits, or explicit voxel indices of the corner.
        seed: seed of the random location.

    Returns:
        The corner index (x, y, z).

    Raises:
        ValueError: when the tumour cube does not fit in the tissue cube at that offset, or ``offset`` is unknown.
    """
    tumor_shape, tissue_shape = tuple(int(s) for s in tumor_shape), tuple(int(s) for s in tissue_shape)
    if len(tumor_shape) != 3 or len(tissue_shape) != 3:
        raise ValueError(f"shapes must be 3D; got tumor {tumor_shape}, tissue {tissue_shape}")
    room = tuple(t - s for s, t in zip(tumor_shape, tissue_shape, strict=True))
    if min(room) < 0:
        raise ValueError(f"tumor cube {tumor_shape} is larger than the tissue cube {tissue_shape}")
    if offset is None or (isinstance(offset, str) and offset == "center"):
        return tuple(r // 2 for r in room)
    if isinstance(offset, str):
        if offset != "random":
            raise ValueError(f"unknown offset {offset!r}; use None, 'center', 'random' or three voxel indices")
        rng = np.random.default_rng(seed)
        return tuple(int(rng.integers(0, r + 1)) for r in room)
    corner = tuple(int(o) for o in offset)
    if len(corner) != 3:
        raise ValueError(f"offset must have 3 entries; got {offset}")
    if any(c < 0 or c > r for c, r in zip(corner, room, strict=True)):
        raise ValueError(
            f"tumor cube {tumor_shape} at offset {corner} does not fit in the tissue cube {tissue_shape} "
            f"(each offset must be in [0, {list(room)}])"
        )
    return corner


def paste_into(shape: Sequence[int], array: np.ndarray, offset: Sequence[int], fill: float = 0) -> np.ndarray:
    """A new array of ``shape`` filled with ``fill`` holding ``array`` at corner ``offset``."""
    out = np.full(tuple(shape), fill, dtype=array.dtype)
    out[tuple(slice(o, o + s) for o, s in zip(offset, array.shape, strict=True))] = array
    return out


def dilate_mask(mask: np.ndarray, voxels: int) -> np.ndarray:
    """Dilate a boolean mask by ``voxels`` with the 6-neighbour (city-block) structuring element."""
    if voxels <= 0:
        return mask.astype(bool)
    return ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(3, 1), iterations=int(voxels))


def tumor_fringe(tumor: np.ndarray, mask: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Partial-volume fringe of a tumour on a ~0 background: dark mask voxels reachable from outside the mask.

    A generated (or masked) tumour cube fades from the tumour's intensity to the cube's ~0 background over a voxel or
    two; the voxels of that fade that pass the threshold are the "black pixels ... around the boundary" of
    copy-and-paste. They are the mask voxels darker than ``fraction`` times the median tumour value that connect to
    the outside of the mask through such dark voxels (so a dark core enclosed by brighter tumour is not fringe).

    Args:
        tumor: tumour values (any 3D grid).
        mask: boolean tumour mask on the same grid.
        fraction: fringe voxels are darker than ``fraction * median(tumor[mask])``; 0 gives an empty fringe.

    Returns:
        Boolean fringe mask (a subset of ``mask``).
    """
    mask = np.asarray(mask, dtype=bool)
    if fraction <= 0 or not mask.any():
        return np.zeros_like(mask)
    dark = mask & (tumor < fraction * np.median(tumor[mask]))
    reachable = ndimage.binary_propagation(~mask, structure=ndimage.generate_binary_structure(3, 1), mask=~mask | dark)
    return reachable & mask


@dataclass
class BlendInputs:
    """Inputs of a blending method, validated and brought onto the tissue grid (float64, (x, y, z)).

    Attributes:
        tumor: the tumour cube pasted into a zero canvas of the tissue's shape.
        tissue: the tissue cube.
        mask: boolean tumour mask on the tissue grid.
        offset: the tumour cube's corner in the tissue grid.
        tissue_input: the tissue as given (its container and layout are those of the outputs).
        had_channel: whether the tissue input had a channel dimension.
    """

    tumor: np.ndarray
    tissue: np.ndarray
    mask: np.ndarray
    offset: tuple[int, int, int]
    tissue_input: Any
    had_channel: bool


def prepare_inputs(
    tumor: Any,
    tissue: Any,
    threshold: float = DEFAULT_THRESHOLD,
    offset: Sequence[int] | str | None = None,
    mask: Any = None,
    keep_largest: bool = True,
    fill_holes: bool = True,
    seed: int | None = 0,
) -> BlendInputs:
    """Validate a tumour / tissue pair, build the tumour mask and place both on the tissue grid.

    Args:
        tumor: tumour cube (x, y, z) or (1, x, y, z).
        tissue: tissue cube (x, y, z) or (1, x, y, z), at least as large as ``tumor`` on every axis.
        threshold: tumour threshold (see :func:`tumor_mask`); ignored when ``mask`` is given.
        offset: placement (see :func:`tumor_offset`).
        mask: optional tumour mask on the tumour cube's grid, used instead of thresholding.
        keep_largest: see :func:`tumor_mask`.
        fill_holes: see :func:`tumor_mask`.
        seed: seed of a random placement.

    Returns:
        The :class:`BlendInputs`.

    Raises:
        ValueError: on non-3D inputs, a tumour larger than the tissue, a mask of the wrong shape or an empty mask.
    """
    tumor_arr, _ = as_volume(tumor, "tumor")
    tissue_arr, had_channel = as_volume(tissue, "tissue")
    if any(s > t for s, t in zip(tumor_arr.shape, tissue_arr.shape, strict=True)):
        raise ValueError(f"tumor cube {tumor_arr.shape} is larger than the tissue cube {tissue_arr.shape}")
    if mask is None:
        small_mask = tumor_mask(tumor_arr, threshold=threshold, keep_largest=keep_largest, fill_holes=fill_holes)
    else:
        small_mask, _ = as_volume(mask, "mask")
        if small_mask.shape != tumor_arr.shape:
            raise ValueError(f"mask shape {small_mask.shape} does not match tumor shape {tumor_arr.shape}")
        if not small_mask.any():
            raise ValueError("the given tumor mask is empty")
    corner = tumor_offset(tumor_arr.shape, tissue_arr.shape, offset, seed=seed)
    return BlendInputs(
        tumor=paste_into(tissue_arr.shape, tumor_arr, corner),
        tissue=tissue_arr,
        mask=paste_into(tissue_arr.shape, small_mask != 0, corner, fill=False),
        offset=corner,
        tissue_input=tissue,
        had_channel=had_channel,
    )
