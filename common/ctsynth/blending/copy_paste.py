"""Blend I of 3DGAUnet: copy-and-paste ("uses the tumor voxels to replace the corresponding pancreas tissue voxels")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ctsynth.blending.placement import DEFAULT_THRESHOLD, BlendInputs, prepare_inputs
from ctsynth.blending.result import BlendResult, like_input

__all__ = ["blend_copy_paste"]


def blend_copy_paste(
    tumor: Any,
    tissue: Any,
    threshold: float = DEFAULT_THRESHOLD,
    offset: Sequence[int] | str | None = None,
    mask: Any = None,
    keep_largest: bool = True,
    fill_holes: bool = True,
    seed: int | None = 0,
) -> BlendResult:
    """Replace the tissue voxels under the tumour mask by the tumour voxels.

    Args:
        tumor: tumour cube (x, y, z) or (1, x, y, z), numpy or torch, tumour on a ~0 background, [0, 1].
        tissue: tissue cube (x, y, z) or (1, x, y, z), at least as large as ``tumor``, [0, 1].
        threshold: tumour voxels are those above it (ignored when ``mask`` is given).
        offset: ``None``/``"center"`` (default, the paper's fixed location), ``"random"`` or the corner index.
        mask: optional tumour mask on the tumour cube's grid instead of thresholding.
        keep_largest: keep only the largest connected component of the thresholded mask.
        fill_holes: fill enclosed holes of the thresholded mask.
        seed: seed of a random placement.

    Returns:
        :class:`BlendResult` with the blended image and the tumour mask on the tissue grid.

    Raises:
        ValueError: on bad shapes, a tumour larger than the tissue or an empty tumour mask.
    """
    inputs = prepare_inputs(tumor, tissue, threshold, offset, mask, keep_largest, fill_holes, seed)
    image = np.where(inputs.mask, inputs.tumor, inputs.tissue)
    return make_result(image, inputs, "copy_paste")


def make_result(image: np.ndarray, inputs: BlendInputs, method: str, mask: np.ndarray | None = None) -> BlendResult:
    """Wrap a blended float array and a mask (default: the inputs' mask) into a :class:`BlendResult` shaped like the
    tissue input."""
    mask = inputs.mask if mask is None else mask
    return BlendResult(
        image=like_input(image.astype(np.float32), inputs.tissue_input, inputs.had_channel, np.float32),
        mask=like_input(mask.astype(np.uint8), inputs.tissue_input, inputs.had_channel, np.uint8),
        offset=inputs.offset,
        method=method,
    )
