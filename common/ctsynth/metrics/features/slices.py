"""2D slices of 3D volumes along the three planes, and a generic "2D network on slices" feature extractor.

Axis convention: volumes are ``(N, 1, X, Y, Z)`` tensors in the array order of the NIfTI files (ctsynth's
convention). A plane is named by the two axes it spans and is cut at fixed values of the third:

=======  ===========  ==========================  ==================================
plane    fixed axis   slice image axes (rows, cols)  RAS-oriented CT
=======  ===========  ==========================  ==================================
``xy``   z            (x, y)                      axial
``yz``   x            (y, z)                      sagittal
``zx``   y            (x, z)                      coronal
=======  ===========  ==========================  ==================================

(The in-plane axes keep array order; a 2D CNN is not rotation-invariant, so only compare numbers computed with the
same convention.)

Slice selection (``slices=``):

- ``"centre"``: the single centre slice ``n // 2`` of each volume per plane (3DGAUnet Table 1: 100 real vs 100
  synthetic centre slices per plane);
- ``"all"``: every slice (CT-SGAN's slice-by-slice FID; MAISI's 2.5D FID pools all slices of all volumes per plane);
- ``"every_k"``: every ``k``-th slice, starting at the first kept one.

``centre_ratio`` (MAISI's ``center_slices_ratio``) first restricts ``"all"`` / ``"every_k"`` to the central
``round(ratio * n)`` slices (at least 1), starting at ``(n - kept + 1) // 2`` (so one kept slice is ``n // 2``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ctsynth.metrics.features.base import as_volume_batch, batched_inference, describe

__all__ = [
    "PLANES",
    "PLANE_ALIASES",
    "SliceFeatureExtractor",
    "extract_slices",
    "slice_indices",
]

PLANES = ("xy", "yz", "zx")
PLANE_ALIASES = {"axial": "xy", "sagittal": "yz", "coronal": "zx"}
_FIXED_AXIS = {"xy": 4, "yz": 2, "zx": 3}  # axis of the (N, 1, X, Y, Z) tensor that a slice fixes

SliceMode = Literal["centre", "all", "every_k"]


def _plane(plane: str) -> str:
    key = PLANE_ALIASES.get(plane, plane)
    if key not in _FIXED_AXIS:
        raise ValueError(f"unknown plane {plane!r}; use one of {PLANES} or {tuple(PLANE_ALIASES)}.")
    return key


def slice_indices(
    n: int, slices: SliceMode = "centre", every_k: int = 1, centre_ratio: float | None = None
) -> list[int]:
    """Indices of the slices kept along an axis of length ``n`` (rules in the module docstring).

    Args:
        n: number of slices along the axis.
        slices: ``"centre"``, ``"all"`` or ``"every_k"``.
        every_k: step for ``"every_k"``.
        centre_ratio: fraction in (0, 1] of central slices to keep first (``"all"`` / ``"every_k"`` only).

    Returns:
        Sorted slice indices.

    Raises:
        ValueError: on an unknown mode or an out-of-range ratio/step.
    """
    if n < 1:
        raise ValueError(f"an axis needs at least one slice, got {n}.")
    if slices == "centre":
        return [n // 2]
    if slices not in ("all", "every_k"):
        raise ValueError(f"slices must be 'centre', 'all' or 'every_k', got {slices!r}.")
    start, stop = 0, n
    if centre_ratio is not None:
        if not 0.0 < centre_ratio <= 1.0:
            raise ValueError(f"centre_ratio must be in (0, 1], got {centre_ratio}.")
        kept = max(1, int(round(centre_ratio * n)))
        start = (n - kept + 1) // 2  # so a single kept slice is the "centre" slice n // 2
        stop = start + kept
    step = 1
    if slices == "every_k":
        if every_k < 1:
            raise ValueError(f"every_k must be >= 1, got {every_k}.")
        step = every_k
    return list(range(start, stop, step))


def extract_slices(
    volumes: torch.Tensor,
    plane: str,
    slices: SliceMode = "centre",
    every_k: int = 1,
    centre_ratio: float | None = None,
) -> torch.Tensor:
    """Cut a batch of volumes into 2D slices of one plane.

    Args:
        volumes: (N, 1, X, Y, Z) tensor.
        plane: ``"xy"``, ``"yz"``, ``"zx"`` (or ``"axial"``, ``"sagittal"``, ``"coronal"``).
        slices: selection mode (see :func:`slice_indices`).
        every_k: step for ``"every_k"``.
        centre_ratio: fraction of central slices kept.

    Returns:
        (N * n_kept, 1, rows, cols) tensor, volume-major (all slices of volume 0 first, in index order).
    """
    key = _plane(plane)
    axis = _FIXED_AXIS[key]
    idx = slice_indices(volumes.shape[axis], slices, every_k, centre_ratio)
    picked = volumes.index_select(axis, torch.as_tensor(idx, device=volumes.device))
    # move the fixed axis next to the batch axis, keep the other two in array order
    rest = [a for a in (2, 3, 4) if a != axis]
    picked = picked.permute(0, axis, 1, *rest)
    return picked.reshape(-1, 1, picked.shape[-2], picked.shape[-1])


class SliceFeatureExtractor:
    """A 2D feature network applied to the slices of each plane: (N, 1, X, Y, Z) -> ``{plane: (M, dim)}``.

    Subclasses (:class:`~ctsynth.metrics.features.inception.Inception2DSliceFeatureExtractor`,
    :class:`~ctsynth.metrics.features.radimagenet.RadImageNet25DFeatureExtractor`) provide the network, the volume
    normalisation and the slice preprocessing.

    Args:
        net: 2D network mapping (B, 3, H, W) to (B, dim).
        dim: feature dimension.
        preprocess: maps (B, 1, H, W) slices to the network input.
        normalize_volumes: maps the (N, 1, X, Y, Z) batch to the intensities the slices are cut from.
        planes: planes to compute.
        slices: slice selection mode.
        every_k: step for ``"every_k"``.
        centre_ratio: fraction of central slices kept.
        batch_size: slices per forward pass.
        device: torch device.
        note: caveat recorded with the numbers (e.g. random weights).
    """

    name = "slices2d"

    def __init__(
        self,
        net: nn.Module,
        dim: int,
        preprocess: Callable[[torch.Tensor], torch.Tensor],
        normalize_volumes: Callable[[torch.Tensor], torch.Tensor] = lambda v: v,
        planes: tuple[str, ...] = PLANES,
        slices: SliceMode = "centre",
        every_k: int = 1,
        centre_ratio: float | None = None,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        note: str | None = None,
    ) -> None:
        self.planes = tuple(_plane(p) for p in planes)
        slice_indices(8, slices, every_k, centre_ratio)  # validate the selection early
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.dim, self.preprocess, self.normalize_volumes = dim, preprocess, normalize_volumes
        self.slices, self.every_k, self.centre_ratio = slices, every_k, centre_ratio
        self.batch_size, self.note = batch_size, note

    def _forward(self, slices: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(slices))

    def __call__(self, volumes: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Features of the selected slices of every plane.

        Args:
            volumes: (N, 1, X, Y, Z) batch (intensity convention: see the subclass).

        Returns:
            ``{plane: (N * slices_per_volume, dim) float32 array}``, volume-major.
        """
        x = self.normalize_volumes(as_volume_batch(volumes))
        out = {}
        for plane in self.planes:
            cut = extract_slices(x, plane, self.slices, self.every_k, self.centre_ratio)
            out[plane] = batched_inference(self._forward, cut, self.batch_size, self.device)
        return out

    def describe(self) -> dict[str, Any]:
        """The protocol, for recording next to the metric values."""
        return describe(
            self.name,
            self.dim,
            self.note,
            planes=list(self.planes),
            slices=self.slices,
            every_k=self.every_k,
            centre_ratio=self.centre_ratio,
        )
