"""LDM crop regimes (LDM thesis, Sec. 4.3): pancreas bounding-box crop and the "semi" (largest body square) crop.

Full body is the identity (plus an optional ``monai.transforms.Resized``), so it has no transform of its own.

Both crops compose MONAI's ``Crop`` and, when a ``spatial_size`` is given, ``Resize``; their traced inverses restore
the original shape, with the voxels inside the crop back at their place (exact without a resize). The volumes are
expected in RAS orientation (``Orientationd("RAS")`` first) so the last axis is the axial (z) axis.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Crop, InvertibleTransform, MapTransform, Resize
from monai.transforms.utils import TraceKeys, get_largest_connected_component_mask
from monai.utils import convert_to_tensor, ensure_tuple
from scipy import ndimage

from ._utils import box_counts, describe, spatial_numpy, to_spatial_mask

__all__ = ["PancreasBBoxCropd", "SemiCropd", "body_mask", "largest_inscribed_square"]


def body_mask(
    image_hu: NdarrayOrTensor,
    threshold_hu: float = -500.0,
    fill_holes: bool = True,
    largest_component: bool = True,
) -> np.ndarray:
    """Body mask of a CT volume in HU (stand-in for TotalSegmentator's ``body`` task, which is not available here).

    Threshold above ``threshold_hu``, fill holes in every axial slice (lungs, bowel gas; per slice so air pockets
    open at the top or bottom of the scan are filled too), keep the largest 3D connected component (drops the table
    and other detached objects).

    Args:
        image_hu: HU volume (x, y, z) or (1, x, y, z), numpy or torch; z is the axial axis.
        threshold_hu: HU above which a voxel is tissue.
        fill_holes: fill enclosed holes slice by slice.
        largest_component: keep only the largest connected component.

    Returns:
        Boolean array (x, y, z).
    """
    mask = spatial_numpy(image_hu) > threshold_hu
    if fill_holes and mask.any():
        # a structuring element connected only within the axial plane fills each z-slice independently in one call
        plane = np.zeros((3, 3, 3), dtype=bool)
        plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
        mask = ndimage.binary_fill_holes(mask, structure=plane)
    if largest_component and mask.any():
        mask = np.asarray(get_largest_connected_component_mask(mask, connectivity=1), dtype=bool)
    return mask


def largest_inscribed_square(mask2d: np.ndarray) -> tuple[int, int, int]:
    """Largest axis-aligned square of True pixels in a 2D mask.

    Exact: binary search on the edge length, each candidate checked for all positions at once with an integral
    image (:func:`~ctsynth.transforms._utils.box_counts`). Among equal squares the one centred nearest the mask
    centroid is returned.

    Args:
        mask2d: boolean 2D array with at least one True pixel.

    Returns:
        ``(row start, column start, edge length)``.

    Raises:
        ValueError: for an empty mask.
    """
    mask2d = np.asarray(mask2d, dtype=bool)
    if mask2d.ndim != 2 or not mask2d.any():
        raise ValueError(f"need a non-empty 2D mask, got shape {mask2d.shape} with {int(mask2d.sum())} pixels")
    lo, hi = 1, min(mask2d.shape)
    while lo < hi:  # largest s with a full s x s box
        mid = (lo + hi + 1) // 2
        if box_counts(mask2d, (mid, mid)).max() == mid * mid:
            lo = mid
        else:
            hi = mid - 1
    full = np.argwhere(box_counts(mask2d, (lo, lo)) == lo * lo)
    centroid = np.argwhere(mask2d).mean(0)
    best = full[int(np.argmin(np.linalg.norm(full + (lo - 1) / 2.0 - centroid, axis=1)))]
    return int(best[0]), int(best[1]), int(lo)


class _CropResized(MapTransform, InvertibleTransform):
    """Crop every key to one data-dependent box, then optionally resize; invertible (base of the LDM crops)."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | str | None,
        label_keys: KeysCollection | None,
        default_label_key: str | None,
        image_mode: str,
        keep_spacing: bool,
        allow_missing_keys: bool,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(spatial_size, str) and spatial_size != "original":
            raise ValueError(f"spatial_size must be a size, 'original' or None, got {spatial_size!r}")
        self.spatial_size = spatial_size
        if label_keys is None:
            label_keys = (default_label_key,) if default_label_key in self.keys else ()
        self.label_keys = ensure_tuple(label_keys)
        self.image_mode = image_mode
        self.keep_spacing = keep_spacing
        self.cropper = Crop()
        self.resizer = Resize(spatial_size=-1)

    def compute_box(self, d: Mapping[Hashable, NdarrayOrTensor]) -> tuple[slice, ...]:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        slices = self.compute_box(d)
        for key in self.key_iterator(d):
            img = convert_to_tensor(d[key], track_meta=True)
            orig_shape = tuple(img.shape[1:])
            out = self.cropper(img, slices=slices)
            resized_affine = None
            if self.spatial_size is not None:
                size = orig_shape if self.spatial_size == "original" else tuple(self.spatial_size)
                mode = "nearest-exact" if key in self.label_keys else self.image_mode
                cropped_affine = out.affine.clone() if isinstance(out, MetaTensor) else None
                self.resizer.spatial_size = size  # Resize.inverse reads the traced size, not this attribute
                dtype = out.dtype
                out = self.resizer(out, mode=mode, align_corners=None if mode.startswith("nearest") else False)
                if key in self.label_keys:
                    out = out.to(dtype)
                if self.keep_spacing and isinstance(out, MetaTensor):
                    resized_affine = out.affine.tolist()
                    out.affine = cropped_affine
            if isinstance(out, MetaTensor):
                self.push_transform(out, extra_info={"resized_affine": resized_affine, "box": str(slices)})
            d[key] = out
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Undo the resize and the crop (voxels outside the crop become 0)."""
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            info = self.pop_transform(x)[TraceKeys.EXTRA_INFO]
            if info["resized_affine"] is not None:
                x.affine = torch.as_tensor(info["resized_affine"], dtype=torch.float64)
            if self.spatial_size is not None:
                dtype = x.dtype
                x = self.resizer.inverse(x)
                if key in self.label_keys:
                    x = x.to(dtype)
            d[key] = self.cropper.inverse(x)
        return d


class PancreasBBoxCropd(_CropResized):
    """LDM "pancreas cropped" regime: crop to the bounding box of the pancreas labels, optionally resize.

    Our reading of LDM thesis Sec. 4.3.1 (defaults): the box of all labels > 0 (pancreas and tumour), no margin, z
    cropped too (a 3D box), then ``spatial_size="original"`` resizes back to the input size (thesis models 2-5,
    "resized back to 512 x 512 x Z") or ``spatial_size=(240, 240, 155)`` (model 6), trilinear ("bilinear") for
    images.

    Args:
        keys: keys of every volume to crop (images and labels).
        label_key: key of the label map defining the box.
        labels: label values defining the box (``None``: every label > 0).
        margin_mm: margin added on every side of the box, in mm (from the label's affine); clipped to the volume.
        crop_z: crop z to the box too (``False`` keeps every slice).
        spatial_size: ``None`` (no resize), ``"original"`` (back to the input shape) or a size for MONAI ``Resize``.
        label_keys: keys resized with ``"nearest-exact"`` (default: ``label_key`` when it is among ``keys``).
        image_mode: interpolation of the other keys (``"trilinear"``, the 3D bilinear).
        keep_spacing: after a resize, keep the cropped volume's voxel spacing in the affine instead of rescaling it
            (our reading of the "zoomed-in" output of LDM thesis Sec. 4.3.1); the inverse restores the true geometry.
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: when the label has no voxel of ``labels`` (the message names the key and file).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        labels: Sequence[int] | None = None,
        margin_mm: float = 0.0,
        crop_z: bool = True,
        spatial_size: Sequence[int] | str | None = None,
        label_keys: KeysCollection | None = None,
        image_mode: str = "trilinear",
        keep_spacing: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, spatial_size, label_keys, label_key, image_mode, keep_spacing, allow_missing_keys)
        if margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0, got {margin_mm}")
        self.label_key = label_key
        self.labels = None if labels is None else tuple(int(v) for v in labels)
        self.margin_mm = float(margin_mm)
        self.crop_z = crop_z

    def compute_box(self, d: Mapping[Hashable, NdarrayOrTensor]) -> tuple[slice, ...]:
        label = d[self.label_key]
        mask = to_spatial_mask(label, self.labels)
        if not mask.any():
            which = "labels > 0" if self.labels is None else f"labels {self.labels}"
            raise ValueError(f"{describe(label, self.label_key)}: no pancreas voxel ({which}); cannot crop to it")
        coords = np.argwhere(mask)
        lo, hi = coords.min(0), coords.max(0) + 1
        if self.margin_mm > 0:
            spacing = np.asarray(label.pixdim, dtype=float)[:3] if isinstance(label, MetaTensor) else np.ones(3)
            m = np.ceil(self.margin_mm / spacing).astype(int)
            lo, hi = np.maximum(lo - m, 0), np.minimum(hi + m, mask.shape)
        if not self.crop_z:
            lo[2], hi[2] = 0, mask.shape[2]
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


class SemiCropd(_CropResized):
    """LDM "semi full-body" regime: crop x/y to the largest axis-aligned square inside the body, z to the body.

    The body mask comes from ``body_key`` when given (e.g. a TotalSegmentator ``body_trunc`` mask), else from
    :func:`body_mask` on the HU image. The square is found on the axial projection of the mask: pixels inside the
    body on at least ``axial_fraction`` of the body's z-slices (0.5: the majority; 1.0: the intersection over the
    z-range, which shrinks the square to the narrowest slice). Then the crop is resized to ``spatial_size``
    (240 x 240 x 155, trilinear, as in the thesis).

    Args:
        keys: keys of every volume to crop (images and labels).
        image_key: key of the HU image the body mask is computed from.
        body_key: key of a precomputed body mask (overrides the thresholding).
        body_threshold_hu: threshold of :func:`body_mask`.
        axial_fraction: fraction of body slices a pixel must be inside the body on, in (0, 1].
        spatial_size: output size of the resize, or ``None`` for no resize.
        label_keys: keys resized with ``"nearest-exact"`` (default: ``"label"`` when among ``keys``).
        image_mode: interpolation of the other keys.
        keep_spacing: keep the cropped voxel spacing in the affine after the resize (see :class:`PancreasBBoxCropd`).
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: when the body mask is empty (the message names the key and file).
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        body_key: str | None = None,
        body_threshold_hu: float = -500.0,
        axial_fraction: float = 0.5,
        spatial_size: Sequence[int] | None = (240, 240, 155),
        label_keys: KeysCollection | None = None,
        image_mode: str = "trilinear",
        keep_spacing: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, spatial_size, label_keys, "label", image_mode, keep_spacing, allow_missing_keys)
        if not 0.0 < axial_fraction <= 1.0:
            raise ValueError(f"axial_fraction must be in (0, 1], got {axial_fraction}")
        self.image_key, self.body_key = image_key, body_key
        self.body_threshold_hu = float(body_threshold_hu)
        self.axial_fraction = float(axial_fraction)

    def compute_box(self, d: Mapping[Hashable, NdarrayOrTensor]) -> tuple[slice, ...]:
        if self.body_key is not None:
            src_key = self.body_key
            body = spatial_numpy(d[src_key]) > 0
        else:
            src_key = self.image_key
            body = body_mask(d[src_key], self.body_threshold_hu)
        if not body.any():
            raise ValueError(f"{describe(d[src_key], src_key)}: the body mask is empty; cannot compute the semi crop")
        zs = np.flatnonzero(body.any(axis=(0, 1)))
        z0, z1 = int(zs[0]), int(zs[-1]) + 1
        projection = body[:, :, z0:z1].sum(axis=2) >= self.axial_fraction * (z1 - z0) - 1e-9
        if not projection.any():  # a body too irregular for the fraction: fall back to any-slice projection
            projection = body[:, :, z0:z1].any(axis=2)
        x0, y0, size = largest_inscribed_square(projection)
        return slice(x0, x0 + size), slice(y0, y0 + size), slice(z0, z1)
