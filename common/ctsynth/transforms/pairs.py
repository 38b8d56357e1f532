"""Image + mask pairs stacked along z into one volume, and split back (HA-GAN thesis, Sec. 3.4.3, 3.8.2).

The thesis generates a pair as one single-channel volume: the windowed image ([-1024, 600] HU -> [-1, 1]) in the first
z-half and the encoded mask in the second (Sec. 3.4.3; ``np.concatenate((img, mask), axis=2)`` in the author's
repository Guttulsrud/generating-3d-ct-images-with-gans, file preprocessing/prepare_images.py); a generated volume
is cut in half along z and the mask half decoded (Sec. 3.8.2). Mask encodings (thesis variants, chronological:
Sec. 3.4.3, 4.6.1, 4.6.6):

- ``"hu_window"`` (variant a): the label values mapped with the image's HU window [-1024, 600] -> [-1, 1]. Labels
  0/1/2 all land near -0.74 and are nearly indistinguishable; the thesis reports poor results and mode collapse
  (Sec. 5.5.1).
- ``"scaled"`` (variant b): labels [0, max_label] -> [-1, 1] linearly (0 -> -1, 1 -> 0, 2 -> 1); "the deciding
  factor in avoiding mode collapse" (Sec. 5.5.1); the HPO17 model whose samples helped segmentation most.
- ``"binary"`` (variant c, Sec. 4.6.6): labels > 0 -> 1, background -> -1 (mask in {-1, 1}); best image FID, used
  for the Visual Turing Test (Sec. 4.7). Decoding: values >= ``threshold`` (0) -> 1, as in the author's repository
  (``mask >= 0`` in generate_images.py).
- ``"binary_scaled"`` (variant d): binary then [0, 2] -> [-1, 1], i.e. {0, 1} -> {-1, 0}; bad in the thesis.
  Decoding threshold -0.5.
- ``"raw"``: label values unchanged (not a thesis variant; for pipelines that encode masks elsewhere).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, KeepLargestConnectedComponent, MapTransform
from monai.transforms.utils import TraceKeys
from monai.utils import convert_to_tensor

from ._utils import describe
from .intensity import unwindow_hu, window_hu

__all__ = [
    "MASK_ENCODINGS",
    "SplitImageMaskd",
    "StackImageMaskd",
    "decode_mask",
    "encode_mask",
    "split_image_mask",
    "stack_image_mask",
]

MASK_ENCODINGS = ("binary", "scaled", "hu_window", "binary_scaled", "raw")
_DEFAULT_THRESHOLD = {"binary": 0.0, "binary_scaled": -0.5}
_HAGAN_WINDOW = (-1024.0, 600.0, -1.0, 1.0)
_RANGE_TOL = 1e-4


def _check_encoding(encoding: str) -> None:
    if encoding not in MASK_ENCODINGS:
        raise ValueError(f"unknown mask encoding {encoding!r}; expected one of {MASK_ENCODINGS}")


def encode_mask(mask: torch.Tensor, encoding: str = "binary", max_label: int = 2) -> torch.Tensor:
    """Encode a label map as float values for stacking with a [-1, 1] image (see the module notes).

    Args:
        mask: integer label map (any shape), torch tensor.
        encoding: one of :data:`MASK_ENCODINGS`.
        max_label: the label mapped to 1 by ``"scaled"``.

    Returns:
        float32 tensor of the same shape.

    Raises:
        ValueError: for an unknown encoding.
    """
    _check_encoding(encoding)
    m = mask.float()
    if encoding == "binary":
        return torch.where(m > 0, 1.0, -1.0)
    if encoding == "scaled":
        return m * (2.0 / max_label) - 1.0
    if encoding == "binary_scaled":
        return torch.where(m > 0, 0.0, -1.0)
    if encoding == "hu_window":
        return window_hu(m, *_HAGAN_WINDOW)
    return m


def decode_mask(
    values: torch.Tensor, encoding: str = "binary", threshold: float | None = None, max_label: int = 2
) -> torch.Tensor:
    """Decode encoded (possibly generated, noisy) mask values back to a uint8 label map.

    Binary encodings threshold (``"binary"``: >= 0 -> 1; ``"binary_scaled"``: >= -0.5 -> 1; ``threshold``
    overrides); the others invert the map and round to the nearest label in ``[0, max_label]``.

    Args:
        values: encoded mask values, torch tensor.
        encoding: one of :data:`MASK_ENCODINGS`.
        threshold: decision threshold for the binary encodings.
        max_label: largest label value.

    Returns:
        uint8 tensor of the same shape.

    Raises:
        ValueError: for an unknown encoding.
    """
    _check_encoding(encoding)
    v = values.float()
    if encoding in _DEFAULT_THRESHOLD:
        thr = _DEFAULT_THRESHOLD[encoding] if threshold is None else threshold
        return (v >= thr).to(torch.uint8)
    if encoding == "scaled":
        v = (v + 1.0) * (max_label / 2.0)
    elif encoding == "hu_window":
        v = unwindow_hu(v.double(), *_HAGAN_WINDOW)
    return torch.round(v).clamp(0, max_label if encoding != "raw" else 255).to(torch.uint8)


def _check_pair(image: torch.Tensor, mask: torch.Tensor, image_name: str, mask_name: str) -> None:
    if tuple(image.shape) != tuple(mask.shape):
        raise ValueError(
            f"{image_name} shape {tuple(image.shape)} and {mask_name} shape {tuple(mask.shape)} differ; "
            "image and mask must be on the same grid to be stacked"
        )
    lo, hi = float(image.min()), float(image.max())
    if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(
            f"{image_name} values span [{lo:g}, {hi:g}]; the image must be windowed to [-1, 1] first "
            "(e.g. HUWindowd(keys, -1024, 600, out_min=-1, out_max=1))"
        )


def stack_image_mask(
    image: NdarrayOrTensor, mask: NdarrayOrTensor, encoding: str = "binary", max_label: int = 2
) -> torch.Tensor:
    """Stack a [-1, 1] image and its encoded mask along the last (z) axis: (..., z) + (..., z) -> (..., 2z).

    Args:
        image: windowed image in [-1, 1], channel-first (C, x, y, z) or (x, y, z).
        mask: integer label map of the same shape.
        encoding: mask encoding, one of :data:`MASK_ENCODINGS`.
        max_label: largest label value (for ``"scaled"``).

    Returns:
        float32 tensor (a MetaTensor carrying the image's meta when the image is one).

    Raises:
        ValueError: when the shapes differ, the image is not in [-1, 1], or the encoding is unknown.
    """
    _check_encoding(encoding)
    img = convert_to_tensor(image, track_meta=get_track_meta())
    msk = convert_to_tensor(mask)
    _check_pair(img, msk, "image", "mask")
    enc = encode_mask(msk.as_tensor() if isinstance(msk, MetaTensor) else msk, encoding, max_label)
    raw = img.as_tensor() if isinstance(img, MetaTensor) else img
    out = torch.cat([raw.float(), enc.to(raw.device)], dim=-1)
    if isinstance(img, MetaTensor):
        out = MetaTensor(out, meta=img.meta, applied_operations=list(img.applied_operations))
    return out


def split_image_mask(
    pair: NdarrayOrTensor,
    encoding: str = "binary",
    threshold: float | None = None,
    max_label: int = 2,
    keep_largest_component: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a stacked pair in half along the last (z) axis and decode the mask half.

    Args:
        pair: stacked volume (C, x, y, 2z) or (x, y, 2z).
        encoding: mask encoding, one of :data:`MASK_ENCODINGS`.
        threshold: decision threshold of the binary encodings (defaults: 0 for ``"binary"``, -0.5 for
            ``"binary_scaled"``).
        max_label: largest label value.
        keep_largest_component: keep only the largest connected foreground component of the mask
            (MONAI ``KeepLargestConnectedComponent``, all labels as one foreground); needs channel-first input.

    Returns:
        ``(image, mask)``: the float image half and the uint8 label map (MetaTensors carrying the pair's meta when
        the pair is one).

    Raises:
        ValueError: when z is odd or the encoding is unknown.
    """
    _check_encoding(encoding)
    p = convert_to_tensor(pair, track_meta=get_track_meta())
    nz = p.shape[-1]
    if nz % 2:
        raise ValueError(f"cannot split a pair with an odd number of z slices ({nz}); shape {tuple(p.shape)}")
    raw = p.as_tensor() if isinstance(p, MetaTensor) else p
    image, enc = raw[..., : nz // 2].clone(), raw[..., nz // 2 :]
    mask = decode_mask(enc, encoding, threshold, max_label)
    if keep_largest_component:
        if mask.ndim != 4:
            raise ValueError(f"keep_largest_component needs a channel-first pair (C, x, y, 2z), got {tuple(p.shape)}")
        mask = KeepLargestConnectedComponent(independent=False)(mask).to(torch.uint8)
        mask = mask.as_tensor() if isinstance(mask, MetaTensor) else mask
    if isinstance(p, MetaTensor):
        image = MetaTensor(image, meta=p.meta, applied_operations=list(p.applied_operations))
        mask = MetaTensor(mask, meta=p.meta, applied_operations=list(p.applied_operations))
    return image, mask


class StackImageMaskd(MapTransform, InvertibleTransform):
    """Stack a windowed image and its encoded mask along z into ``out_key`` (HA-GAN pairing).

    The stacked volume carries the image's meta and history; the inverse splits it back (as
    :class:`SplitImageMaskd` would), restoring ``image_key`` and ``mask_key`` (the mask gets back its own transform
    history) and removing ``out_key``. The round trip is exact for the image and for masks the encoding can represent
    (every encoding but ``"binary"``/``"binary_scaled"`` for masks with labels > 1).

    Args:
        image_key: key of the image, already windowed to [-1, 1].
        mask_key: key of the label map.
        out_key: key of the stacked volume.
        mask_encoding: one of :data:`MASK_ENCODINGS` (thesis best models: ``"binary"`` or ``"scaled"``).
        max_label: largest label value (``"scaled"``).
        delete_inputs: remove ``image_key`` and ``mask_key`` from the output dictionary.

    Raises:
        ValueError: when the shapes differ (message with both shapes), the image is not in [-1, 1], or the
            encoding is unknown.
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_key: str = "label",
        out_key: str = "pair",
        mask_encoding: str = "binary",
        max_label: int = 2,
        delete_inputs: bool = False,
    ) -> None:
        super().__init__((image_key, mask_key))
        _check_encoding(mask_encoding)
        self.image_key, self.mask_key, self.out_key = image_key, mask_key, out_key
        self.mask_encoding = mask_encoding
        self.max_label = int(max_label)
        self.delete_inputs = delete_inputs

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        img = convert_to_tensor(d[self.image_key], track_meta=get_track_meta())
        msk = convert_to_tensor(d[self.mask_key], track_meta=get_track_meta())
        _check_pair(img, msk, describe(d[self.image_key], self.image_key), describe(d[self.mask_key], self.mask_key))
        out = stack_image_mask(img, msk, self.mask_encoding, self.max_label)
        if isinstance(out, MetaTensor):
            mask_ops = list(msk.applied_operations) if isinstance(msk, MetaTensor) else []
            mask_meta = dict(msk.meta) if isinstance(msk, MetaTensor) else {}
            self.push_transform(
                out,
                orig_size=tuple(img.shape[1:]),
                extra_info={
                    "mask_encoding": self.mask_encoding,
                    "max_label": self.max_label,
                    "mask_dtype": str(msk.dtype),
                    "mask_applied_operations": mask_ops,
                    "mask_meta": mask_meta,
                },
            )
        d[self.out_key] = out
        if self.delete_inputs:
            d.pop(self.image_key)
            d.pop(self.mask_key)
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Split ``out_key`` back into ``image_key`` and ``mask_key`` (the mask in its original dtype)."""
        d = dict(data)
        pair = d.pop(self.out_key)
        info = self.pop_transform(pair)[TraceKeys.EXTRA_INFO]
        image, mask = split_image_mask(pair, info["mask_encoding"], None, info["max_label"])
        dtype = getattr(torch, info["mask_dtype"].replace("torch.", ""))
        mask_t = MetaTensor(
            mask.as_tensor().to(dtype) if isinstance(mask, MetaTensor) else mask.to(dtype),
            meta=info["mask_meta"],
            applied_operations=info["mask_applied_operations"],
        )
        d[self.image_key] = image
        d[self.mask_key] = mask_t
        return d


class SplitImageMaskd(MapTransform):
    """Split a stacked pair (generated or real) in half along z and decode the mask (HA-GAN post-processing).

    Args:
        key: key of the stacked volume (C, x, y, 2z).
        image_key: output key of the image half (float, still in the [-1, 1] window).
        mask_key: output key of the uint8 label map.
        mask_encoding: one of :data:`MASK_ENCODINGS`; must match the encoding used for training.
        threshold: decision threshold of the binary encodings (defaults 0 / -0.5).
        max_label: largest label value.
        keep_largest_component: keep only the largest connected foreground component of the mask (the thesis's
            connected-component clean-up).
        allow_missing_keys: do not raise for a missing key.

    Raises:
        ValueError: when z is odd or the encoding is unknown.
    """

    def __init__(
        self,
        key: str = "pair",
        image_key: str = "image",
        mask_key: str = "label",
        mask_encoding: str = "binary",
        threshold: float | None = None,
        max_label: int = 2,
        keep_largest_component: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(key, allow_missing_keys)
        _check_encoding(mask_encoding)
        self.key, self.image_key, self.mask_key = key, image_key, mask_key
        self.mask_encoding = mask_encoding
        self.threshold = threshold
        self.max_label = int(max_label)
        self.keep_largest_component = keep_largest_component

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.key not in d and self.allow_missing_keys:
            return d
        image, mask = split_image_mask(
            d[self.key], self.mask_encoding, self.threshold, self.max_label, self.keep_largest_component
        )
        d[self.image_key] = image
        d[self.mask_key] = mask
        return d
