"""3DGAUnet training cubes: 32^3 tumour cubes and 64^3 pancreas-tissue cubes (3DGAUnet paper, Sec. 2.1, 3.1).

Both extract an axis-aligned box with MONAI's ``Pad`` + ``Crop`` (see :class:`~ctsynth.transforms._utils.BoxExtract`),
so the cube keeps a correct affine (it can be saved as NIfTI in place) and the geometric part is invertible: the
inverse puts the cube back into a volume of the original size (zeros elsewhere). Masking/filling inside the cube is
not undone by the inverse.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Randomizable
from monai.transforms.utils import get_largest_connected_component_mask
from monai.utils import convert_to_dst_type, convert_to_tensor
from scipy import ndimage

from ._utils import BoxExtract, CubeRejectedError, box_counts, crop_array, describe, spatial_numpy, to_spatial_mask

__all__ = ["CubeRejectedError", "ExtractPancreasCubed", "ExtractTumorCubed", "best_fill_cube_start"]

FILL_MODES = ("none", "nearest", "noise")


def _channel_first(x: NdarrayOrTensor, name: str) -> torch.Tensor:
    t = convert_to_tensor(x, track_meta=True)
    if t.ndim != 4 or t.shape[0] != 1:
        raise ValueError(f"{name}: expected a channel-first single-channel volume (1, x, y, z), got {tuple(t.shape)}")
    return t


def _spacing(img: torch.Tensor) -> np.ndarray:
    if isinstance(img, MetaTensor):
        return np.asarray(img.pixdim, dtype=np.float64)[:3]
    return np.ones(3)


def best_fill_cube_start(
    mask: np.ndarray, cube_size: int, forbidden: np.ndarray | None = None
) -> tuple[tuple[int, ...], int]:
    """Start of the ``cube_size``^3 box holding the most ``mask`` voxels (and no ``forbidden`` voxel).

    The search is limited to boxes inside the volume (where the volume is at least ``cube_size`` long on an axis;
    otherwise boxes covering that whole axis) that touch the mask's bounding box. Ties go to the box whose centre is
    nearest the mask's centroid, then to the first in C order.

    Args:
        mask: boolean 3D array with at least one True voxel.
        cube_size: cube edge in voxels.
        forbidden: optional boolean array of the mask's shape; boxes holding any of its voxels are not candidates.

    Returns:
        ``(start per axis, number of mask voxels in the box)``.

    Raises:
        ValueError: when the mask is empty.
        CubeRejectedError: when every candidate box holding a mask voxel also holds a forbidden voxel.
    """
    coords = np.argwhere(mask)
    if coords.size == 0:
        raise ValueError("the mask is empty")
    lo, hi = coords.min(0), coords.max(0) + 1
    n = np.asarray(mask.shape)
    smin = np.maximum(lo - cube_size + 1, np.minimum(0, n - cube_size))
    smax = np.minimum(hi - 1, np.maximum(0, n - cube_size))
    # zero-padded copy of the region any candidate box can cover: [smin, smax + cube_size)
    region = crop_array(mask, smin, smax - smin + cube_size, fill=False)
    counts = box_counts(region, (cube_size,) * 3)
    if forbidden is not None:
        if forbidden.shape != mask.shape:
            raise ValueError(f"forbidden shape {forbidden.shape} differs from the mask shape {mask.shape}")
        blocked = box_counts(crop_array(forbidden, smin, smax - smin + cube_size, fill=False), (cube_size,) * 3) > 0
        counts = np.where(blocked, -1, counts)
    best = int(counts.max())
    if best <= 0 and forbidden is not None:
        raise CubeRejectedError(
            f"every {cube_size}^3 box holding a mask voxel also holds a forbidden (excluded-label) voxel"
        )
    ties = np.argwhere(counts == best) + smin
    centroid = coords.mean(0)
    dist = np.linalg.norm(ties + (cube_size - 1) / 2.0 - centroid, axis=1)
    start = ties[int(np.argmin(dist))]  # argmin returns the first of equal distances (C order)
    return tuple(int(v) for v in start), best


class ExtractTumorCubed(MapTransform, InvertibleTransform):
    """Tumour cube centred on the tumour, with voxels outside the tumour set to the background.

    Centre: the centroid of the largest connected tumour component (26-connectivity), rounded to a voxel; the cube
    spans ``[c - size//2, c + size//2)`` per axis, so its geometric centre is within half a voxel of the centroid.
    The largest component is used (not the bounding-box centre of all tumour voxels) so a stray labelled voxel or a
    satellite lesion does not pull the cube off the main tumour; with ``largest_component=False`` the centroid of all
    tumour voxels is used and all of them are kept.

    For the 3DGAUnet 64^3 "tumorous pancreas" classifier cubes (tumour plus surrounding tissue) use
    ``cube_size=64, mask_outside=False``.

    Args:
        image_key: key of the (windowed) image, channel-first (1, x, y, z).
        label_key: key of the label map on the same grid.
        cube_size: cube edge in voxels (32 at 1 mm in the paper).
        tumor_label: label value of the tumour.
        mask_outside: set voxels outside the tumour to ``background_value``.
        background_value: value outside the tumour and of padded voxels; ``None`` uses the image minimum (0 after a
            [0, 1] window, the air value in HU).
        largest_component: keep only the largest connected tumour component.
        on_oversize: when the tumour's bounding box is larger than the cube: ``"crop"`` (warn and keep the centred
            cube) or ``"skip"`` (raise :class:`CubeRejectedError`, which data-preparation loops catch to skip).
        output_image_key: key of the image cube (default: overwrite ``image_key``).
        output_mask_key: key of the uint8 tumour mask cube, 1 inside the tumour (default: overwrite ``label_key``).
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: when the label has no tumour voxel (the message names the key and file), or shapes differ.
        CubeRejectedError: for an oversized tumour with ``on_oversize="skip"``.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        cube_size: int = 32,
        tumor_label: int = 2,
        mask_outside: bool = True,
        background_value: float | None = None,
        largest_component: bool = True,
        on_oversize: str = "crop",
        output_image_key: str | None = None,
        output_mask_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__((image_key, label_key), allow_missing_keys)
        if on_oversize not in ("crop", "skip"):
            raise ValueError(f"on_oversize must be 'crop' or 'skip', got {on_oversize!r}")
        if cube_size < 1:
            raise ValueError(f"cube_size must be positive, got {cube_size}")
        self.image_key, self.label_key = image_key, label_key
        self.cube_size = int(cube_size)
        self.tumor_label = int(tumor_label)
        self.mask_outside = mask_outside
        self.background_value = background_value
        self.largest_component = largest_component
        self.on_oversize = on_oversize
        self.output_image_key = output_image_key or image_key
        self.output_mask_key = output_mask_key or label_key
        self.box = BoxExtract()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.allow_missing_keys and (self.image_key not in d or self.label_key not in d):
            return d
        img = _channel_first(d[self.image_key], describe(d[self.image_key], self.image_key))
        lbl_name = describe(d[self.label_key], self.label_key)
        lbl = _channel_first(d[self.label_key], lbl_name)
        if img.shape != lbl.shape:
            raise ValueError(f"image shape {tuple(img.shape)} and {lbl_name} shape {tuple(lbl.shape)} differ")
        tumor = to_spatial_mask(lbl, (self.tumor_label,))
        if not tumor.any():
            raise ValueError(f"{lbl_name}: no tumour voxel (label {self.tumor_label}); cannot extract a tumour cube")
        if self.largest_component:
            tumor = np.asarray(get_largest_connected_component_mask(tumor, connectivity=3), dtype=bool)
        coords = np.argwhere(tumor)
        extent = coords.max(0) - coords.min(0) + 1
        if (extent > self.cube_size).any():
            ext = tuple(int(v) for v in extent)
            msg = f"{lbl_name}: tumour extent {ext} voxels exceeds the {self.cube_size}^3 cube"
            if self.on_oversize == "skip":
                raise CubeRejectedError(msg)
            warnings.warn(msg + "; the cube crops it", stacklevel=2)
        centre = np.floor(coords.mean(0) + 0.5).astype(int)
        start = centre - self.cube_size // 2
        size = (self.cube_size,) * 3
        bg = float(spatial_numpy(img).min()) if self.background_value is None else float(self.background_value)

        mask_t = convert_to_dst_type(tumor[None].astype(np.uint8), dst=lbl, dtype=torch.uint8)[0]
        img_cube = self.box(img, start, size, pad_value=bg)
        mask_cube = self.box(mask_t, start, size, pad_value=0)
        if self.mask_outside:
            img_cube[mask_cube == 0] = bg
        if isinstance(img_cube, MetaTensor):
            img_cube.meta["cube_start_voxel"] = [int(v) for v in start]
            img_cube.meta["tumor_voxels"] = int(tumor.sum())
        d[self.output_image_key] = img_cube
        d[self.output_mask_key] = mask_cube
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Put the cubes back at their place in volumes of the original size (zeros elsewhere)."""
        d = dict(data)
        for key in (self.output_image_key, self.output_mask_key):
            if key in d:
                d[key] = self.box.inverse(d[key])
        return d


class ExtractPancreasCubed(MapTransform, InvertibleTransform, Randomizable):
    """Pancreas-tissue cube: the ``cube_size``^3 box holding the most (tumour-free) pancreas voxels.

    The paper's cubes have "pancreas tissue filling the entire cube", which a real pancreas at 1 mm cannot do for
    64^3 (the real test CT reaches a fill of about 0.2). Rule used here: choose the box maximising the fraction of
    pancreas voxels (exact, by an integral image; ties to the box centred nearest the pancreas centroid), report the
    fraction as ``pancreas_fill_fraction`` in the cube's meta, reject cubes below ``min_fill``, and optionally
    replace the non-pancreas voxels of the cube by pancreas-like values (``fill_mode``).

    With ``exclude_labels=(2,)`` (default) tumour voxels, and pancreas voxels within ``exclude_margin_mm`` (default
    10 mm) of them, do not count as pancreas, and with ``reject_excluded`` (default) no box holding a tumour voxel is
    chosen (:class:`CubeRejectedError` when every box with pancreas holds one): this gives healthy pancreas cubes
    (the pancreas GAN's training data, the classifier's negatives) from tumour-bearing scans. The pancreas and tumour
    labels are disjoint, so a 0 mm margin alone excludes nothing: the cube with the most pancreas then usually holds
    the tumour too.

    Args:
        image_key: key of the image, channel-first (1, x, y, z).
        label_key: key of the label map on the same grid.
        cube_size: cube edge in voxels (64 at 1 mm in the paper).
        pancreas_labels: label values counted as pancreas.
        exclude_labels: label values (tumour) excluded, with their margin, from the pancreas.
        exclude_margin_mm: pancreas voxels closer than this (Euclidean, in mm from the affine) to an excluded voxel
            are excluded too (default 10 mm, the margin of the 3DGAUnet classifier's healthy cubes here).
        reject_excluded: choose only boxes without any excluded-label voxel; when there is none,
            :class:`CubeRejectedError` (data-preparation loops skip the case).
        min_fill: minimum fraction of pancreas voxels in the cube; below it :class:`CubeRejectedError` is raised.
        fill_mode: what to do with the cube's non-pancreas voxels: ``"none"`` (keep the real surroundings),
            ``"nearest"`` (copy the nearest pancreas voxel's value) or ``"noise"`` (Gaussian with the mean and SD of
            the cube's pancreas voxels; uses this transform's random state).
        pad_value: value of voxels outside the volume; ``None`` uses the image minimum.
        output_image_key: key of the image cube (default: overwrite ``image_key``).
        output_label_key: key of the label-map cube (default: overwrite ``label_key``).
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: when no pancreas voxel is left (the message names the key and file), or shapes differ.
        CubeRejectedError: when the best fill is below ``min_fill``, or (``reject_excluded``) every box with pancreas
            holds an excluded voxel.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        cube_size: int = 64,
        pancreas_labels: Sequence[int] = (1,),
        exclude_labels: Sequence[int] = (2,),
        exclude_margin_mm: float = 10.0,
        reject_excluded: bool = True,
        min_fill: float = 0.0,
        fill_mode: str = "none",
        pad_value: float | None = None,
        output_image_key: str | None = None,
        output_label_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__((image_key, label_key), allow_missing_keys)
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
        if not 0.0 <= min_fill <= 1.0:
            raise ValueError(f"min_fill must be in [0, 1], got {min_fill}")
        if cube_size < 1:
            raise ValueError(f"cube_size must be positive, got {cube_size}")
        self.image_key, self.label_key = image_key, label_key
        self.cube_size = int(cube_size)
        self.pancreas_labels = tuple(int(v) for v in pancreas_labels)
        self.exclude_labels = tuple(int(v) for v in exclude_labels)
        self.exclude_margin_mm = float(exclude_margin_mm)
        if self.exclude_margin_mm < 0:
            raise ValueError(f"exclude_margin_mm must be >= 0, got {exclude_margin_mm}")
        self.reject_excluded = bool(reject_excluded)
        self.min_fill = float(min_fill)
        self.fill_mode = fill_mode
        self.pad_value = pad_value
        self.output_image_key = output_image_key or image_key
        self.output_label_key = output_label_key or label_key
        self.box = BoxExtract()

    def pancreas_mask(self, label: torch.Tensor) -> np.ndarray:
        """Pancreas voxels minus the excluded labels and their margin (spatial boolean array)."""
        mask = to_spatial_mask(label, self.pancreas_labels)
        if not self.exclude_labels:
            return mask
        excluded = to_spatial_mask(label, self.exclude_labels)
        if not excluded.any():
            return mask
        if self.exclude_margin_mm > 0 and mask.any():
            # distance to the nearest excluded voxel, computed only around the pancreas (plus the margin) for speed
            spacing = _spacing(label)
            pad = np.ceil(self.exclude_margin_mm / spacing).astype(int) + 1
            coords = np.argwhere(mask)
            lo = np.maximum(coords.min(0) - pad, 0)
            hi = np.minimum(coords.max(0) + 1 + pad, mask.shape)
            sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            dist = ndimage.distance_transform_edt(~excluded[sl], sampling=spacing)
            near = np.zeros_like(mask)
            near[sl] = dist <= self.exclude_margin_mm
            excluded = excluded | near
        return mask & ~excluded

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.allow_missing_keys and (self.image_key not in d or self.label_key not in d):
            return d
        img = _channel_first(d[self.image_key], describe(d[self.image_key], self.image_key))
        lbl_name = describe(d[self.label_key], self.label_key)
        lbl = _channel_first(d[self.label_key], lbl_name)
        if img.shape != lbl.shape:
            raise ValueError(f"image shape {tuple(img.shape)} and {lbl_name} shape {tuple(lbl.shape)} differ")
        pancreas = self.pancreas_mask(lbl)
        if not pancreas.any():
            raise ValueError(
                f"{lbl_name}: no pancreas voxel (labels {self.pancreas_labels}, excluding labels "
                f"{self.exclude_labels} with a {self.exclude_margin_mm} mm margin); cannot extract a pancreas cube"
            )
        forbidden = None
        if self.reject_excluded and self.exclude_labels:
            forbidden = to_spatial_mask(lbl, self.exclude_labels)
            forbidden = forbidden if forbidden.any() else None
        try:
            start, count = best_fill_cube_start(pancreas, self.cube_size, forbidden=forbidden)
        except CubeRejectedError as e:
            raise CubeRejectedError(f"{lbl_name}: {e}; no tumour-free {self.cube_size}^3 pancreas cube") from e
        fill = count / self.cube_size**3
        if fill < self.min_fill:
            raise CubeRejectedError(
                f"{lbl_name}: best pancreas fill fraction {fill:.3f} is below min_fill {self.min_fill}"
            )
        size = (self.cube_size,) * 3
        pad = float(spatial_numpy(img).min()) if self.pad_value is None else float(self.pad_value)
        img_cube = self.box(img, start, size, pad_value=pad)
        lbl_cube = self.box(lbl, start, size, pad_value=0)
        if self.fill_mode != "none":
            inside = crop_array(pancreas, start, size, fill=False)
            img_cube = self._fill(img_cube, inside)
        if isinstance(img_cube, MetaTensor):
            img_cube.meta["pancreas_fill_fraction"] = float(fill)
            img_cube.meta["cube_start_voxel"] = list(start)
        d[self.output_image_key] = img_cube
        d[self.output_label_key] = lbl_cube
        return d

    def _fill(self, cube: torch.Tensor, inside: np.ndarray) -> torch.Tensor:
        arr = spatial_numpy(cube).copy()
        if self.fill_mode == "nearest":
            # scipy's EDT with return_indices gives, for every voxel, the index of the nearest pancreas voxel
            idx = ndimage.distance_transform_edt(~inside, return_distances=False, return_indices=True)
            arr = arr[tuple(idx)]
        else:  # "noise"
            vals = arr[inside].astype(np.float64)
            noise = self.R.normal(vals.mean(), vals.std(), size=int((~inside).sum()))
            arr[~inside] = noise
        cube[0] = convert_to_dst_type(arr, dst=cube.as_tensor() if isinstance(cube, MetaTensor) else cube)[0]
        return cube

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Put the cubes back at their place in volumes of the original size (zeros elsewhere)."""
        d = dict(data)
        for key in (self.output_image_key, self.output_label_key):
            if key in d:
                d[key] = self.box.inverse(d[key])
        return d
