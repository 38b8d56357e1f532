"""HU windowing with an exact inverse: HU window -> output range (3DGAUnet [-100, 170] -> [0, 1]; HA-GAN
[-1024, 600] -> [-1, 1]; CT-SGAN [-1000, 400] -> [-1, 1]).

MONAI's ``ScaleIntensityRanged(a_min, a_max, b_min, b_max, clip=True)`` computes the same forward map but is not an
``InvertibleTransform``, so ``Invertd``/``Compose.inverse`` cannot take generated or predicted volumes back to HU.
These transforms write the linear map themselves (two lines) and record the window in the MetaTensor's
``applied_operations`` so the inverse is found by MONAI's traced-transform machinery.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, MapTransform
from monai.transforms.utils import TraceKeys
from monai.utils import convert_to_dst_type, convert_to_tensor, get_equivalent_dtype

__all__ = ["HUToWindow", "HUWindowd", "unwindow_hu", "window_hu"]


def _check_window(hu_min: float, hu_max: float, out_min: float, out_max: float) -> None:
    if not hu_max > hu_min:
        raise ValueError(f"HU window must have hu_max > hu_min, got [{hu_min}, {hu_max}]")
    if out_max == out_min:
        raise ValueError(f"output range must not be empty, got [{out_min}, {out_max}]")


def window_hu(
    array: NdarrayOrTensor,
    hu_min: float,
    hu_max: float,
    out_min: float = 0.0,
    out_max: float = 1.0,
    clip: bool = True,
) -> NdarrayOrTensor:
    """Map HU linearly from ``[hu_min, hu_max]`` to ``[out_min, out_max]``, clipping outside the window.

    Args:
        array: numpy array or torch tensor in HU (any shape).
        hu_min: lower window edge (maps to ``out_min``).
        hu_max: upper window edge (maps to ``out_max``).
        out_min: output value of ``hu_min``.
        out_max: output value of ``hu_max``.
        clip: clip to the output range (values outside the window then map to its edges).

    Returns:
        Same type as ``array``; floating point (the input's float dtype, float32 for integer input).

    Raises:
        ValueError: for an empty window or output range.
    """
    _check_window(hu_min, hu_max, out_min, out_max)
    scale = (out_max - out_min) / (hu_max - hu_min)
    if isinstance(array, torch.Tensor):
        x = array if array.is_floating_point() else array.float()
        out = (x.double() - hu_min) * scale + out_min
        if clip:
            out = out.clamp(min(out_min, out_max), max(out_min, out_max))
        return out.to(x.dtype)
    x = np.asarray(array)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    out = (x.astype(np.float64) - hu_min) * scale + out_min
    if clip:
        out = np.clip(out, min(out_min, out_max), max(out_min, out_max))
    return out.astype(dtype)


def unwindow_hu(
    array: NdarrayOrTensor, hu_min: float, hu_max: float, out_min: float = 0.0, out_max: float = 1.0
) -> NdarrayOrTensor:
    """Inverse of :func:`window_hu`: map ``[out_min, out_max]`` back to ``[hu_min, hu_max]`` (no clipping).

    Exact (up to floating-point rounding) for voxels that were inside the window; voxels that ``window_hu`` clipped
    come back as the window edges ``hu_min`` / ``hu_max``.

    Args:
        array: numpy array or torch tensor in the output range.
        hu_min: lower window edge.
        hu_max: upper window edge.
        out_min: output value of ``hu_min``.
        out_max: output value of ``hu_max``.

    Returns:
        Same type as ``array``, floating point, in HU.
    """
    _check_window(hu_min, hu_max, out_min, out_max)
    scale = (hu_max - hu_min) / (out_max - out_min)
    if isinstance(array, torch.Tensor):
        x = array if array.is_floating_point() else array.float()
        return ((x.double() - out_min) * scale + hu_min).to(x.dtype)
    x = np.asarray(array)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return ((x.astype(np.float64) - out_min) * scale + hu_min).astype(dtype)


class HUToWindow(InvertibleTransform):
    """Array transform: HU window -> output range, invertible (see :func:`window_hu`, :func:`unwindow_hu`).

    Args:
        hu_min: lower window edge in HU.
        hu_max: upper window edge in HU.
        out_min: output value of ``hu_min``.
        out_max: output value of ``hu_max``.
        clip: clip outside the window. The inverse then returns clipped voxels as the window edges.
        dtype: output dtype (the arithmetic is done in float64).
    """

    backend = [torch.Tensor]

    def __init__(
        self,
        hu_min: float,
        hu_max: float,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        dtype: DtypeLike = np.float32,
    ) -> None:
        _check_window(hu_min, hu_max, out_min, out_max)
        self.hu_min, self.hu_max = float(hu_min), float(hu_max)
        self.out_min, self.out_max = float(out_min), float(out_max)
        self.clip = clip
        self.dtype = get_equivalent_dtype(dtype, torch.Tensor)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        """Window ``img`` (channel-first or any shape); returns a MetaTensor when meta tracking is on."""
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        out = window_hu(img_t.as_tensor() if isinstance(img_t, MetaTensor) else img_t, *self._params(), clip=self.clip)
        out = convert_to_dst_type(out, dst=img_t, dtype=self.dtype)[0]  # keeps the MetaTensor's meta
        if isinstance(out, MetaTensor):
            self.push_transform(out, extra_info={"window": list(self._params())})
        return out

    def _params(self) -> tuple[float, float, float, float]:
        return self.hu_min, self.hu_max, self.out_min, self.out_max

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Map back to HU using the window recorded when the transform was applied."""
        transform = self.pop_transform(data)
        hu_min, hu_max, out_min, out_max = transform[TraceKeys.EXTRA_INFO]["window"]
        raw = data.as_tensor() if isinstance(data, MetaTensor) else data
        out = unwindow_hu(raw.float() if not raw.is_floating_point() else raw, hu_min, hu_max, out_min, out_max)
        return convert_to_dst_type(out, dst=data, dtype=out.dtype)[0]


class HUWindowd(MapTransform, InvertibleTransform):
    """Dictionary wrapper of :class:`HUToWindow`: HU window -> output range with an inverse back to HU.

    Examples: 3DGAUnet ``HUWindowd("image", -100, 170)`` ([0, 1]); HA-GAN ``HUWindowd("image", -1024, 600, -1, 1)``.

    Args:
        keys: keys of the images to window (not labels).
        hu_min: lower window edge in HU.
        hu_max: upper window edge in HU.
        out_min: output value of ``hu_min``.
        out_max: output value of ``hu_max``.
        clip: clip outside the window; the inverse is exact inside the window and returns clipped voxels as the
            window edges (information outside the window is lost).
        dtype: output dtype.
        allow_missing_keys: do not raise for missing keys.
    """

    backend = HUToWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        hu_min: float,
        hu_max: float,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.windower = HUToWindow(hu_min, hu_max, out_min, out_max, clip, dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.windower(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.windower.inverse(d[key])
        return d
