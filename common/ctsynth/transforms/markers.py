"""High-density (metal marker) replacement of the 3DGAUnet preprocessing.

The paper (3DGAUnet, Shi et al. 2023, Sec. 2.1): "pixels above 200 HU were replaced with the mean HU value of the entire
pancreas captured in each CT scan". Choices where it is silent:

- "entire pancreas" = the whole organ as segmented, i.e. pancreas **and** tumour labels (MSD labels 1 and 2): the
  tumour is part of the pancreas. ``organ_labels=(1,)`` gives pancreas-parenchyma only.
- the mean is taken over organ voxels that are themselves <= the threshold, because marker voxels inside the organ
  would bias the mean upwards (a marker at 2000 HU in a few voxels moves a ~40 HU mean noticeably).
- which voxels: the sentence reads as "every voxel above 200 HU", but that rewrites bone, contrast-filled vessels and
  calcifications too, and breaks the monotonicity of the intensity map (a 180 HU voxel ends at the window top, a
  450 HU bone voxel at the pancreas mean, i.e. darker). The fix is meant for metal fiducial markers (the paper's UNMC
  scans), so the default ``mode="markers"`` replaces only marker-like objects: connected components (26-connected)
  of voxels above the threshold that are small (``max_volume_mm3``), very dense (peak >= ``min_peak_hu``, above
  cortical bone) and near the organ (within ``max_distance_mm``). ``mode="all"`` is the literal reading.
- it runs in HU, before windowing. Streak artefacts around a marker are not touched.
- the 3DGAUnet bundle has it off by default (``configs/prepare_data.json``): scans without markers need nothing.

The operation destroys information (the original values above the threshold), so it has no inverse; it is a
plain :class:`~monai.transforms.MapTransform` that ``Compose.inverse``/``Invertd`` skip.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type
from scipy import ndimage
from scipy.spatial import cKDTree

from ._utils import describe, spatial_numpy, to_spatial_mask

__all__ = ["MARKER_MODES", "ReplaceHighDensityd", "marker_mask", "replace_high_density"]

MARKER_MODES = ("markers", "all")


def marker_mask(
    image: np.ndarray,
    organ: np.ndarray,
    threshold_hu: float = 200.0,
    min_peak_hu: float = 2000.0,
    max_volume_mm3: float = 1000.0,
    max_distance_mm: float = 20.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Voxels of marker-like objects: small, very dense connected components near the organ.

    Args:
        image: HU volume (x, y, z).
        organ: boolean organ mask (x, y, z).
        threshold_hu: a component is a 26-connected set of voxels strictly above this.
        min_peak_hu: its brightest voxel must reach this (metal; cortical bone stays below about 1900 HU).
        max_volume_mm3: its volume must not exceed this (a fiducial with its blooming is a few hundred mm^3 at most;
            vertebrae, ribs and contrast-filled vessels are far larger).
        max_distance_mm: at least one of its voxels must lie within this distance of an organ voxel.
        spacing: voxel size in mm per axis.

    Returns:
        Boolean mask of the voxels to replace.
    """
    high = image > threshold_hu
    out = np.zeros(image.shape, dtype=bool)
    if not high.any() or not organ.any():
        return out
    components, n = ndimage.label(high, structure=np.ones((3, 3, 3), dtype=bool))
    index = np.arange(1, n + 1)
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=np.float64)))
    sizes = ndimage.sum_labels(high, components, index) * voxel_mm3
    peaks = ndimage.maximum(image, components, index)
    candidates = index[(sizes <= max_volume_mm3) & (np.asarray(peaks) >= min_peak_hu)]
    if candidates.size == 0:
        return out
    sp = np.asarray(spacing, dtype=np.float64)
    tree = cKDTree(np.argwhere(organ) * sp)
    for c in candidates:
        voxels = components == c
        dist, _ = tree.query(np.argwhere(voxels) * sp, k=1, distance_upper_bound=max_distance_mm + 1e-6)
        if np.isfinite(dist).any():
            out |= voxels
    return out


def replace_high_density(
    image: NdarrayOrTensor,
    label: NdarrayOrTensor,
    threshold_hu: float = 200.0,
    organ_labels: Sequence[int] = (1, 2),
    name: str = "input",
    mode: str = "markers",
    min_peak_hu: float = 2000.0,
    max_volume_mm3: float = 1000.0,
    max_distance_mm: float = 20.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[NdarrayOrTensor, float, int]:
    """Replace marker voxels (``mode="markers"``) or every voxel above ``threshold_hu`` (``"all"``) by the scan's
    mean organ HU.

    Args:
        image: HU volume, (x, y, z) or channel-first (1, x, y, z), numpy or torch.
        label: label map on the same grid.
        threshold_hu: voxels strictly above this are candidates.
        organ_labels: label values forming the organ whose mean is used (default pancreas + tumour).
        name: how to name the input in error messages.
        mode: ``"markers"`` (only :func:`marker_mask` components) or ``"all"`` (every voxel above the threshold).
        min_peak_hu: ``"markers"``: minimum peak HU of a marker component.
        max_volume_mm3: ``"markers"``: maximum volume of a marker component.
        max_distance_mm: ``"markers"``: maximum distance of a marker component from the organ.
        spacing: voxel size in mm (``"markers"``: volumes and distances).

    Returns:
        ``(replaced image, fill value in HU, number of replaced voxels)``; the image has the input's type and dtype.

    Raises:
        ValueError: on an unknown mode, when the label has no organ voxels, or none at or below the threshold, or
            shapes differ.
    """
    if mode not in MARKER_MODES:
        raise ValueError(f"mode must be one of {MARKER_MODES}, got {mode!r}")
    img = spatial_numpy(image)
    organ = to_spatial_mask(label, organ_labels)
    if img.shape != organ.shape:
        raise ValueError(f"{name}: image shape {img.shape} and label shape {organ.shape} differ")
    if not organ.any():
        raise ValueError(
            f"{name}: the label has no pancreas voxels (labels {tuple(organ_labels)}); cannot compute the mean"
        )
    usable = organ & (img <= threshold_hu)
    if not usable.any():
        raise ValueError(f"{name}: every pancreas voxel is above {threshold_hu} HU; cannot compute the mean")
    fill = float(img[usable].astype(np.float64).mean())
    if mode == "all":
        high = img > threshold_hu
    else:
        high = marker_mask(img, organ, threshold_hu, min_peak_hu, max_volume_mm3, max_distance_mm, spacing)
    n = int(high.sum())
    out = img.copy()
    out[high] = fill
    out = out.reshape(np.shape(image))
    return convert_to_dst_type(out, dst=image, dtype=out.dtype)[0], fill, n


class ReplaceHighDensityd(MapTransform):
    """Dictionary transform: marker voxels (default: small, very dense objects near the pancreas; ``mode="all"``:
    every voxel above ``threshold_hu``) -> the scan's mean pancreas HU (see the module notes).

    Not invertible (the replaced values are lost). The fill value and the replaced-voxel count are written to the
    image MetaTensor's meta as ``high_density_fill_hu`` and ``high_density_replaced``.

    Args:
        image_key: key of the HU image.
        label_key: key of the label map.
        threshold_hu: voxels strictly above this are candidates (paper: 200 HU).
        organ_labels: labels whose voxels form "the entire pancreas" (default pancreas 1 + tumour 2).
        mode: ``"markers"`` (default) or ``"all"`` (the literal reading of the paper; rewrites bone and vessels).
        min_peak_hu: ``"markers"``: minimum peak HU of a marker component (2000).
        max_volume_mm3: ``"markers"``: maximum volume of a marker component (1000 mm^3).
        max_distance_mm: ``"markers"``: maximum distance of a marker from the pancreas (20 mm).
        allow_missing_keys: do not raise for missing keys.

    Raises:
        ValueError: when the label has no pancreas voxels (the message names the key and file).
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        threshold_hu: float = 200.0,
        organ_labels: Sequence[int] = (1, 2),
        mode: str = "markers",
        min_peak_hu: float = 2000.0,
        max_volume_mm3: float = 1000.0,
        max_distance_mm: float = 20.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__((image_key, label_key), allow_missing_keys)
        if mode not in MARKER_MODES:
            raise ValueError(f"mode must be one of {MARKER_MODES}, got {mode!r}")
        self.image_key, self.label_key = image_key, label_key
        self.threshold_hu = float(threshold_hu)
        self.organ_labels = tuple(int(v) for v in organ_labels)
        self.mode = mode
        self.min_peak_hu, self.max_volume_mm3 = float(min_peak_hu), float(max_volume_mm3)
        self.max_distance_mm = float(max_distance_mm)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.allow_missing_keys and (self.image_key not in d or self.label_key not in d):
            return d
        name = f"{describe(d[self.image_key], self.image_key)} with {describe(d[self.label_key], self.label_key)}"
        image = d[self.image_key]
        spacing = np.asarray(image.pixdim, dtype=np.float64)[:3] if isinstance(image, MetaTensor) else np.ones(3)
        out, fill, n = replace_high_density(
            image,
            d[self.label_key],
            self.threshold_hu,
            self.organ_labels,
            name=name,
            mode=self.mode,
            min_peak_hu=self.min_peak_hu,
            max_volume_mm3=self.max_volume_mm3,
            max_distance_mm=self.max_distance_mm,
            spacing=spacing,
        )
        if isinstance(out, MetaTensor):
            out.meta["high_density_fill_hu"] = fill
            out.meta["high_density_replaced"] = n
        d[self.image_key] = out
        return d
