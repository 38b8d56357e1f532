"""Sampling of image + mask pairs (Guttulsrud 2023, Sec. 4.7): z ~ N(0, I) -> whole volume in one pass -> image and
mask halves -> mask binarised, connected components below a size removed, empty masks rejected (the sampler redraws
them and counts the redraws) -> image back to HU by the inverse of the training window.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ctsynth.data.io import write_json_atomic
from ctsynth.engines import read_manifest, seeded_randn

from .data import decode_pair

__all__ = ["PairSampleFn", "RemoveSmallComponents", "remove_small_components", "write_msd_dataset"]


class PairSampleFn:
    """``sample_fn`` of :class:`ctsynth.engines.SeededSampler`: latents -> whole pair volume -> image and mask halves.

    Args:
        network: the HA-GAN generator (eval mode); ``network(z)`` returns ``(B, C, S, S, S)``.
        pair_mode: ``z_stack`` or ``channels`` (as trained).
        mask_encoding: ``interp_0_2`` or ``binary_pm1`` (as trained).
        max_label: label mapped to 1 by ``interp_0_2``.
        autocast_dtype: optional autocast dtype of the forward pass (``torch.bfloat16``).
        channels_last: run the generator in ``channels_last_3d`` memory format (faster convolutions on CPU).
    """

    def __init__(
        self,
        network: nn.Module,
        pair_mode: str = "z_stack",
        mask_encoding: str = "interp_0_2",
        max_label: int = 2,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = True,
    ) -> None:
        self.network = network.to(memory_format=torch.channels_last_3d) if channels_last else network
        self.pair_mode, self.mask_encoding, self.max_label = pair_mode, mask_encoding, int(max_label)
        self.autocast_dtype = autocast_dtype

    def __call__(self, generators: Sequence[torch.Generator], device: torch.device) -> dict[str, torch.Tensor]:
        z = seeded_randn(generators, self.network.latent_shape, self.network.latent_std, device=device)
        with torch.autocast(
            device_type=torch.device(device).type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            volume = self.network(z).float()
        pairs = [decode_pair(v, self.pair_mode, self.mask_encoding, self.max_label) for v in volume]
        return {"image": torch.stack([p[0] for p in pairs]), "label": torch.stack([p[1] for p in pairs])}


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Binary mask without its connected components (26-connectivity) of fewer than ``min_voxels`` voxels.

    Args:
        mask: binary array (any integer/bool dtype).
        min_voxels: smallest component kept (the thesis: 200).

    Returns:
        uint8 array, same shape.
    """
    labels, n = ndimage.label(mask > 0, structure=np.ones((3,) * mask.ndim))
    if n == 0:
        return np.zeros(mask.shape, np.uint8)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= int(min_voxels)
    keep[0] = False
    return keep[labels].astype(np.uint8)


class RemoveSmallComponents:
    """``postprocess`` of the sampler: drop mask components below ``min_voxels``; reject pairs left without a mask.

    Args:
        min_voxels: smallest component kept (200 in the thesis's clean-up); 0 or 1 keeps all.
        label_key: key of the mask.
    """

    def __init__(self, min_voxels: int = 200, label_key: str = "label") -> None:
        self.min_voxels, self.label_key = int(min_voxels), label_key

    def __call__(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        mask = remove_small_components(sample[self.label_key].numpy(), self.min_voxels)
        if not mask.any():
            return None
        return {**sample, self.label_key: torch.from_numpy(mask)}


def write_msd_dataset(folder: str | os.PathLike, name: str = "HAGAN_pairs", labels: dict | None = None) -> Path:
    """Write an MSD ``dataset.json`` listing the sampler's image/label files (read from ``samples.json``), so the
    sample folder is a datalist that segmentation bundles read directly.

    Args:
        folder: a sample folder written by :class:`ctsynth.engines.SeededSampler`.
        name: dataset name.
        labels: MSD label names (default ``{"0": "background", "1": "lesion"}``).

    Returns:
        The path of ``dataset.json``.

    Raises:
        FileNotFoundError: when the folder has no manifest.
    """
    manifest = read_manifest(folder)
    training = [{"image": f"./{r['image']}", "label": f"./{r['label']}"} for r in manifest["samples"] if "label" in r]
    data: dict[str, Any] = {
        "name": name,
        "description": "synthetic CT image + mask pairs (ct_pair_hagan)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": labels or {"0": "background", "1": "lesion"},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    return write_json_atomic(data, Path(folder) / "dataset.json")
