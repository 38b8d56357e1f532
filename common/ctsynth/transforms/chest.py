"""Chest CT -> 224^3 cube for CT-SGAN (CT-SGAN paper, Sec. 2 and 3.1; it states only the size).

Choices (the paper gives no spacing, window or cropping):

1. ``Orientation("RAS")`` so z is axial and every scan has the same axis order.
2. Isotropic spacing chosen so the body's x/y extent fits the cube: ``spacing = max(body extent x, y in mm) / 224``,
   clamped to ``spacing_range`` (0.6-2.0 mm); about 1.5-1.8 mm for an adult chest. Images trilinear, labels nearest.
3. A 224^3 box centred on the centre of the body's bounding box (not the volume centre: the table and off-centre
   patients would shift a plain ``ResizeWithPadOrCrop``), padded with air where it leaves the scan; z longer than
   224 voxels is cut symmetrically about the body centre.
4. HU clipped to ``hu_range`` (-1000, 400) and mapped to ``out_range`` ((-1, 1) for the tanh generator; (0, 1) for the
   classifier).

Every step is a traced MONAI transform (``Orientation``, ``Spacing``, ``Pad`` + ``Crop``, :class:`HUToWindow`), so the
inverse takes a (generated or processed) cube back to HU on the original grid.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Orientation, Spacing
from monai.transforms.utils import TraceKeys
from monai.utils import convert_to_tensor, ensure_tuple

from ._utils import BoxExtract, describe
from .crops import body_mask
from .intensity import HUToWindow

__all__ = ["ChestTo224d", "chest_spacing"]


def chest_spacing(body: np.ndarray, spacing: Sequence[float], size: int, spacing_range: tuple[float, float]) -> float:
    """Isotropic spacing (mm) at which the body's larger x/y extent spans ``size`` voxels, clamped to the range.

    Args:
        body: boolean body mask (x, y, z).
        spacing: its voxel spacing in mm.
        size: target edge in voxels.
        spacing_range: (min, max) spacing in mm.
    """
    coords = np.argwhere(body)
    extent_mm = (coords.max(0) - coords.min(0) + 1) * np.asarray(spacing, dtype=float)[:3]
    return float(np.clip(max(extent_mm[0], extent_mm[1]) / size, *spacing_range))


class ChestTo224d(MapTransform, InvertibleTransform):
    """Orient RAS, resample so the body fits, crop/pad a ``spatial_size``^3 cube around the body, window HU.

    Args:
        keys: keys of every volume (images and labels), channel-first (1, x, y, z) MetaTensors with their affine.
        image_key: key of the HU image the body mask (threshold ``body_threshold_hu``) is computed from.
        label_keys: keys of label maps (nearest resampling, padded with 0, not windowed).
        spatial_size: cube edge in voxels (224).
        hu_range: HU window (-1000, 400).
        out_range: output range of the window ((-1, 1)).
        spacing_range: (min, max) isotropic spacing in mm.
        body_threshold_hu: HU threshold of :func:`~ctsynth.transforms.crops.body_mask`.
        image_mode: interpolation of the image keys (``"bilinear"``, i.e. trilinear in 3D for ``Spacing``).
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: when the image has no body voxel (the message names the key and file).
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        label_keys: KeysCollection = (),
        spatial_size: int = 224,
        hu_range: tuple[float, float] = (-1000.0, 400.0),
        out_range: tuple[float, float] = (-1.0, 1.0),
        spacing_range: tuple[float, float] = (0.6, 2.0),
        body_threshold_hu: float = -500.0,
        image_mode: str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0 < spacing_range[0] <= spacing_range[1]:
            raise ValueError(f"spacing_range must be 0 < min <= max, got {spacing_range}")
        self.image_key = image_key
        self.label_keys = ensure_tuple(label_keys) if label_keys else ()
        self.spatial_size = int(spatial_size)
        self.hu_range = (float(hu_range[0]), float(hu_range[1]))
        self.spacing_range = (float(spacing_range[0]), float(spacing_range[1]))
        self.body_threshold_hu = float(body_threshold_hu)
        self.image_mode = image_mode
        self.orienter = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
        self.spacer = Spacing(pixdim=1.0, mode=image_mode, padding_mode="border")
        self.box = BoxExtract()
        self.windower = HUToWindow(self.hu_range[0], self.hu_range[1], out_range[0], out_range[1], clip=True)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.orienter(convert_to_tensor(d[key], track_meta=True))
        image = d[self.image_key]
        body = body_mask(image, self.body_threshold_hu)
        if not body.any():
            raise ValueError(f"{describe(image, self.image_key)}: no body voxel above {self.body_threshold_hu} HU")
        src_spacing = np.asarray(image.pixdim, dtype=float)[:3] if isinstance(image, MetaTensor) else np.ones(3)
        spacing = chest_spacing(body, src_spacing, self.spatial_size, self.spacing_range)
        coords = np.argwhere(body)
        centre_vox = (coords.min(0) + coords.max(0)) / 2.0  # body bounding-box centre, input voxels
        affine = image.affine.numpy() if isinstance(image, MetaTensor) else np.eye(4)
        centre_world = affine @ np.append(centre_vox, 1.0)
        self.spacer.pixdim = np.array([spacing] * 3)  # Spacing.inverse reads the traced affine, not pixdim
        for key in self.key_iterator(d):
            is_label = key in self.label_keys
            dtype = d[key].dtype
            x = self.spacer(d[key], mode="nearest" if is_label else self.image_mode)
            if is_label:
                x = x.to(dtype)
            # the body centre in the resampled grid (same physical point)
            new_affine = x.affine.numpy() if isinstance(x, MetaTensor) else np.diag([spacing] * 3 + [1.0])
            centre = np.floor((np.linalg.inv(new_affine) @ centre_world)[:3] + 0.5).astype(int)
            start = centre - self.spatial_size // 2
            pad = 0.0 if is_label else self.hu_range[0]
            x = self.box(x, start, (self.spatial_size,) * 3, pad_value=pad)
            if not is_label:
                x = self.windower(x)
            if isinstance(x, MetaTensor):
                self.push_transform(x, extra_info={"is_label": is_label, "spacing_mm": spacing})
            d[key] = x
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Back to HU (clipped to the window) on the original grid and orientation."""
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            info = self.pop_transform(x)[TraceKeys.EXTRA_INFO]
            if not info["is_label"]:
                x = self.windower.inverse(x)
            x = self.box.inverse(x)
            dtype = x.dtype
            x = self.spacer.inverse(x)
            if info["is_label"]:
                x = x.to(dtype)
            d[key] = self.orienter.inverse(x)
        return d
