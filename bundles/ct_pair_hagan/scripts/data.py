"""Image + mask pair data of the HA-GAN thesis (Guttulsrud 2023, Sec. 3.4 and 4.6): the bundle's names of the mask
encodings, the optional per-source z-crop table, the ``channels`` pair mode and the training-pair list.

The z-stacked pair itself is :class:`ctsynth.transforms.pairs.StackImageMaskd` / ``SplitImageMaskd``; this module maps
the thesis's encoding names onto those and adds what the shared package does not have.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, SpatialCrop
from monai.utils import convert_to_tensor

from ctsynth.data.datalist import load_datalist
from ctsynth.transforms.pairs import StackImageMaskd, decode_mask, encode_mask

__all__ = [
    "MASK_ENCODINGS",
    "PAIR_MODES",
    "ChannelPaird",
    "ZCropTabled",
    "decode_pair",
    "pair_spacing",
    "pairing_transform",
    "shared_encoding",
    "training_pairs",
]

#: the thesis's mask encodings (Sec. 4.6.1 and 4.6.6) -> names in :mod:`ctsynth.transforms.pairs`.
MASK_ENCODINGS = {"binary_pm1": "binary", "interp_0_2": "scaled"}
#: ``z_stack``: the thesis's pairing (image and mask concatenated along z, one channel); ``channels``: two channels.
PAIR_MODES = ("z_stack", "channels")


def shared_encoding(mask_encoding: str) -> str:
    """The :mod:`ctsynth.transforms.pairs` name of a bundle mask encoding.

    Raises:
        ValueError: for an unknown encoding.
    """
    if mask_encoding not in MASK_ENCODINGS:
        raise ValueError(f"unknown mask_encoding {mask_encoding!r}; expected one of {sorted(MASK_ENCODINGS)}")
    return MASK_ENCODINGS[mask_encoding]


def _check_mode(pair_mode: str) -> None:
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"unknown pair_mode {pair_mode!r}; expected one of {PAIR_MODES}")


class ChannelPaird(MapTransform):
    """Image (windowed to [-1, 1]) and encoded mask as the two channels of ``out_key`` (the ``channels`` pair mode).

    Args:
        image_key: key of the windowed single-channel image.
        mask_key: key of the label map on the same grid.
        out_key: key of the two-channel volume.
        mask_encoding: ``binary_pm1`` or ``interp_0_2``.
        max_label: label mapped to 1 by ``interp_0_2``.

    Raises:
        ValueError: when image and mask grids differ (both shapes named) or the encoding is unknown.
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_key: str = "label",
        out_key: str = "pair",
        mask_encoding: str = "interp_0_2",
        max_label: int = 2,
    ) -> None:
        super().__init__((image_key, mask_key))
        self.image_key, self.mask_key, self.out_key = image_key, mask_key, out_key
        self.encoding = shared_encoding(mask_encoding)
        self.max_label = int(max_label)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        img, msk = convert_to_tensor(d[self.image_key]), convert_to_tensor(d[self.mask_key])
        if tuple(img.shape) != tuple(msk.shape):
            raise ValueError(
                f"{_name(d[self.image_key], self.image_key)} shape {tuple(img.shape)} and "
                f"{_name(d[self.mask_key], self.mask_key)} shape {tuple(msk.shape)} differ; image and mask must be on "
                "the same grid"
            )
        raw = img.as_tensor() if isinstance(img, MetaTensor) else img
        enc = encode_mask(msk.as_tensor() if isinstance(msk, MetaTensor) else msk, self.encoding, self.max_label)
        out = torch.cat([raw.float(), enc.to(raw.device)], 0)
        d[self.out_key] = MetaTensor(out, meta=img.meta) if isinstance(img, MetaTensor) else out
        return d


def _name(value: Any, key: str) -> str:
    meta = getattr(value, "meta", None) or {}
    return str(meta.get("filename_or_obj", key))


class ZCropTabled(MapTransform):
    """Drop the first ``n`` axial slices of selected cases (the thesis's per-source field-of-view crop, Sec. 3.4.2).

    The table maps shell-style patterns of the file name (``"CHUP-*"``, ``"MDA-001*"``) to the number of slices to
    drop from the start of the last axis; the first matching pattern wins; unmatched cases are left as they are. The
    crop is a MONAI ``SpatialCrop`` (affine updated), applied to every key with the same slices.

    Args:
        keys: keys to crop (image and label).
        table: ``{pattern: slices}``; empty: no crop.
        name_key: key whose file name is matched.

    Raises:
        ValueError: for a negative count, or a crop that leaves no slice (the file is named).
    """

    def __init__(self, keys: KeysCollection, table: Mapping[str, int] | None = None, name_key: str = "image") -> None:
        super().__init__(keys)
        self.table = {str(k): int(v) for k, v in (table or {}).items()}
        bad = {k: v for k, v in self.table.items() if v < 0}
        if bad:
            raise ValueError(f"z-crop counts must be >= 0, got {bad}")
        self.name_key = name_key

    def slices_for(self, filename: str) -> int:
        """Slices to drop for a file (0 when no pattern matches)."""
        name = Path(filename).name
        return next((n for pattern, n in self.table.items() if fnmatch.fnmatch(name, pattern)), 0)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        filename = _name(d[self.name_key], self.name_key)
        n = self.slices_for(filename)
        if n == 0:
            return d
        for key in self.key_iterator(d):
            depth = d[key].shape[-1]
            if n >= depth:
                raise ValueError(f"{filename}: z-crop of {n} slices leaves nothing of its {depth} slices")
            crop = SpatialCrop(roi_slices=[slice(None), slice(None), slice(n, None)])
            d[key] = crop(d[key])
        return d


def pairing_transform(pair_mode: str, mask_encoding: str, max_label: int = 2) -> MapTransform:
    """The pairing step of the preprocessing: ``StackImageMaskd`` (``z_stack``) or :class:`ChannelPaird`.

    Both read ``image`` (windowed) and ``label`` and write ``pair``.

    Raises:
        ValueError: for an unknown pair mode or encoding.
    """
    _check_mode(pair_mode)
    if pair_mode == "z_stack":
        return StackImageMaskd("image", "label", "pair", shared_encoding(mask_encoding), max_label, delete_inputs=True)
    return ChannelPaird("image", "label", "pair", mask_encoding, max_label)


def decode_pair(
    volume: torch.Tensor, pair_mode: str, mask_encoding: str, max_label: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a generated pair ``(C, S, S, S)`` into the image (still in [-1, 1]) and the binary mask (uint8 {0, 1}).

    ``z_stack``: the first and second halves along z; ``channels``: channel 0 and 1. The mask is binarised as the
    thesis does after generation (Sec. 4.7: ``interp_0_2`` values >= 0, i.e. label >= 1 after rounding, and
    ``binary_pm1`` values >= 0 are foreground).

    Returns:
        ``(image (1, S, S, S/2 or S), mask (1, ...))``.

    Raises:
        ValueError: for an unknown mode/encoding or a volume that does not fit the mode.
    """
    _check_mode(pair_mode)
    encoding = shared_encoding(mask_encoding)
    if pair_mode == "z_stack":
        if volume.shape[0] != 1 or volume.shape[-1] % 2:
            raise ValueError(f"a z-stacked pair has 1 channel and an even depth, got shape {tuple(volume.shape)}")
        half = volume.shape[-1] // 2
        image, enc = volume[..., :half], volume[..., half:]
    else:
        if volume.shape[0] != 2:
            raise ValueError(f"a channels pair has 2 channels, got shape {tuple(volume.shape)}")
        image, enc = volume[:1], volume[1:]
    mask = (decode_mask(enc, encoding, max_label=max_label) > 0).to(torch.uint8)
    return image, mask


def training_pairs(dataset_dir: str | os.PathLike, list_key: str = "training") -> list[dict[str, Any]]:
    """The labelled cases of a datalist (MSD ``dataset.json`` or ctsynth ``datalist.json``), absolute paths.

    Raises:
        FileNotFoundError: when the datalist or a listed file is missing (the file is named).
        ValueError: when a case has no label, or the list is empty.
    """
    datalist = load_datalist(dataset_dir)
    items = list(datalist.get(list_key, []))
    if not items:
        raise ValueError(f"{dataset_dir}: the datalist has no '{list_key}' cases")
    for item in items:
        if "label" not in item:
            raise ValueError(f"{item['image']}: no label in the datalist; HA-GAN pairs need image + mask")
        for key in ("image", "label"):
            if not Path(item[key]).is_file():
                raise FileNotFoundError(f"{item[key]}: listed in {dataset_dir} but not found")
    return [{"image": item["image"], "label": item["label"]} for item in items]


def pair_spacing(
    items: list[dict[str, Any]], size: int, pair_mode: str, z_crop_table: Mapping[str, int] | None = None
) -> list[float]:
    """Voxel spacing (mm) of the generated image half: the median over the training cases of field of view / grid.

    A case of shape ``(X, Y, Z)`` at spacing ``(sx, sy, sz)`` (after the z-crop) becomes an image of
    ``(S, S, S/2)`` (``z_stack``) or ``(S, S, S)`` (``channels``): spacing ``(X sx / S, Y sy / S, Z sz / S_z)``.
    Read from the NIfTI headers only.

    Returns:
        Three spacings in mm, written into the checkpoint's run info and the samples' affine.

    Raises:
        ValueError: for an empty list or an unknown mode.
    """
    import nibabel as nib
    import numpy as np

    _check_mode(pair_mode)
    if not items:
        raise ValueError("pair_spacing needs at least one case")
    cropper = ZCropTabled(["image"], z_crop_table)
    grid = np.array([size, size, size // 2 if pair_mode == "z_stack" else size], dtype=np.float64)
    spacings = []
    for item in items:
        header = nib.load(str(item["image"])).header
        shape = np.array(header.get_data_shape()[:3], dtype=np.float64)
        shape[2] -= cropper.slices_for(str(item["image"]))
        spacings.append(shape * np.array(header.get_zooms()[:3], dtype=np.float64) / grid)
    return [round(float(v), 4) for v in np.median(np.stack(spacings), axis=0)]
