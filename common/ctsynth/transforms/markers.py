"""High-density (metal marker) replacement of the 3DGAUnet preprocessing.

The paper (3DGAUnet, Shi et al. 2023, Sec. 2.1): "pixels above 200 HU were replaced with the mean HU value of the entire
pancreas captured in each CT scan". Choices where it is silent:

- "entire pancreas" = the whole organ as segmented, i.e. pancreas **and** tumour labels (MSD labels 1 and 2): the
  tumour is part of the pancreas. ``organ_labels=(1,)`` gives pancreas-parenchyma only.
- the mean is taken over organ voxels that are themselves <= the threshold, because marker voxels inside the organ
  would bias the mean upwards (a marker at 2000 HU in a few voxels moves a ~40 HU mean noticeably).
- the replacement applies to every voxel of the scan above the threshold (bone included), as the sentence reads; the
  3DGAUnet window [-100, 170] clips bone to the window top anyway, and only the pancreas/tumour cubes are kept.
- it runs in HU, before windowing.

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

from ._utils import describe, spatial_numpy, to_spatial_mask

__all__ = ["ReplaceHighDensityd", "replace_high_density"]


def replace_high_density(
    image: NdarrayOrTensor,
    label: NdarrayOrTensor,
    threshold_hu: float = 200.0,
    organ_labels: Sequence[int] = (1, 2),
    name: str = "input",
) -> tuple[NdarrayOrTensor, float, int]:
    """Replace voxels above ``threshold_hu`` by the scan's mean organ HU.

    Args:
        image: HU volume, (x, y, z) or channel-first (1, x, y, z), numpy or torch.
        label: label map on the same grid.
        threshold_hu: voxels strictly above this are replaced.
        organ_labels: label values forming the organ whose mean is used (default pancreas + tumour).
        name: how to name the input in error messages.

    Returns:
        ``(replaced image, fill value in HU, number of replaced voxels)``; the image has the input's type and dtype.

    Raises:
        ValueError: when the label has no organ voxels, or none at or below the threshold, or shapes differ.
    """
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
    high = img > threshold_hu
    n = int(high.sum())
    out = img.copy()
    out[high] = fill
    out = out.reshape(np.shape(image))
    return convert_to_dst_type(out, dst=image, dtype=out.dtype)[0], fill, n


class ReplaceHighDensityd(MapTransform):
    """Dictionary transform: voxels above ``threshold_hu`` -> the scan's mean pancreas HU (see the module notes).

    Not invertible (the replaced values are lost). The fill value and the replaced-voxel count are written to the
    image MetaTensor's meta as ``high_density_fill_hu`` and ``high_density_replaced``.

    Args:
        image_key: key of the HU image.
        label_key: key of the label map.
        threshold_hu: voxels strictly above this are replaced (paper: 200 HU).
        organ_labels: labels whose voxels form "the entire pancreas" (default pancreas 1 + tumour 2).
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
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__((image_key, label_key), allow_missing_keys)
        self.image_key, self.label_key = image_key, label_key
        self.threshold_hu = float(threshold_hu)
        self.organ_labels = tuple(int(v) for v in organ_labels)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.allow_missing_keys and (self.image_key not in d or self.label_key not in d):
            return d
        name = f"{describe(d[self.image_key], self.image_key)} with {describe(d[self.label_key], self.label_key)}"
        out, fill, n = replace_high_density(
            d[self.image_key], d[self.label_key], self.threshold_hu, self.organ_labels, name=name
        )
        if isinstance(out, MetaTensor):
            out.meta["high_density_fill_hu"] = fill
            out.meta["high_density_replaced"] = n
        d[self.image_key] = out
        return d
