"""Training samples of CT-SGAN: a random slab of consecutive axial slices of a 224^3 chest volume.

One crop serves both critics (Sec. 2 of the paper: "sampling from the slab regions"): a crop of ``T + 2`` slices
starting at slice ``s`` holds the slab of the ``T`` centre slices ``s+1 .. s+T`` for D_slab and, around each of them,
the "3D slice" (3 adjacent slices) of steps ``s .. s+T-1`` for D_slice. The start ``s`` is stored with the sample so
the generator decodes the same steps.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

__all__ = ["RandSlabd", "real_slab", "real_slices"]


class RandSlabd(Randomizable, MapTransform):
    """Crop ``slab_slices + 2`` consecutive slices along the last (axial) axis at a uniformly random start.

    Args:
        keys: keys of channel-first volumes ``(C, X, Y, Z)`` cropped alike.
        slab_slices: T, the slab length of D_slab (the crop has ``T + 2`` slices).
        start_key: key receiving the start slice ``s`` (= the step index of the first 3D slice).
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: for ``slab_slices < 1``, or a volume with fewer than ``T + 2`` slices (naming its file).
    """

    def __init__(
        self, keys: KeysCollection, slab_slices: int, start_key: str = "slab_start", allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if int(slab_slices) < 1:
            raise ValueError(f"slab_slices must be >= 1, got {slab_slices}")
        self.slab_slices, self.start_key = int(slab_slices), start_key
        self._start = 0

    def randomize(self, depth: int) -> None:
        self._start = int(self.R.randint(0, depth - (self.slab_slices + 2) + 1))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        first = d[self.first_key(d)]
        depth, crop = int(first.shape[-1]), self.slab_slices + 2
        if depth < crop:
            name = getattr(first, "meta", {}).get("filename_or_obj", "a volume")
            raise ValueError(f"{name}: {depth} axial slices, fewer than slab_slices + 2 = {crop}")
        self.randomize(depth)
        for key in self.key_iterator(d):
            d[key] = d[key][..., self._start : self._start + crop]
        d[self.start_key] = torch.tensor(self._start, dtype=torch.long)
        return d


def real_slab(crop: torch.Tensor) -> torch.Tensor:
    """``(B, 1, X, Y, T + 2)`` crops -> ``(B, 1, T, X, Y)`` slabs of the ``T`` centre slices (D_slab's input)."""
    return crop[:, 0, :, :, 1:-1].permute(0, 3, 1, 2).unsqueeze(1)


def real_slices(crop: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """3D slices of the crops at step offsets.

    Args:
        crop: ``(B, 1, X, Y, T + 2)`` crops.
        offsets: ``(B, N)`` offsets in ``0 .. T-1`` (step ``start + offset``, centre slice ``start + offset + 1``).

    Returns:
        ``(B, N, 3, X, Y)``: slices ``o, o+1, o+2`` of each crop as channels.
    """
    planes = crop[:, 0].permute(0, 3, 1, 2)  # (B, T + 2, X, Y)
    idx = offsets[..., None] + torch.arange(3, device=offsets.device)  # (B, N, 3)
    b = torch.arange(crop.shape[0], device=crop.device)[:, None, None]
    return planes[b, idx]
