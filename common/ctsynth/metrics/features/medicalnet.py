"""3D FID features (HA-GAN and its thesis): MedicalNet (Med3D) ResNet-50, 2048-d global-average-pooled.

HA-GAN's ``evaluation/fid_score.py`` replaces MedicalNet's segmentation head by ``AdaptiveAvgPool3d(1)`` + flatten and
loads Tencent's ``resnet_50.pth`` (or ``resnet_50_23dataset.pth``), feeding the volumes as they are stored (HA-GAN:
[-1, 1]). This module builds the same network from MONAI's ResNet:

``monai.networks.nets.resnet50(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="B",
bias_downsample=False, conv1_t_size=7, conv1_t_stride=2)`` (the shortcut arguments are what
``monai.networks.nets.resnet.get_medicalnet_pretrained_resnet_args(50)`` returns) and then, with
``medicalnet_layout=True`` (default), turns layer3 and layer4 into MedicalNet's dilated stages: stride 1 instead of 2
(in the 3x3x3 conv and the 1x1x1 shortcut of their first block) and dilation/padding 2 (layer3) and 4 (layer4) in
every 3x3x3 conv. The weights are unchanged by this (dilation and stride do not change parameter shapes), so a
MedicalNet checkpoint loads either way, but only the dilated layout computes MedicalNet's features (MONAI's plain ResNet
downsamples 32x instead of 8x).

Intensities: ``normalization="none"`` (default, HA-GAN) feeds the caller's values; ``"zscore"`` standardises each
volume by its own mean and std (MedicalNet's training normalisation, computed over the whole volume here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.networks.nets import resnet50
from monai.networks.nets.resnet import ResNet, get_medicalnet_pretrained_resnet_args

from ctsynth.metrics.features.base import (
    RANDOM_WEIGHTS_NOTE,
    LoadReport,
    as_volume_batch,
    batched_inference,
    describe,
    load_checkpoint_state_dict,
    load_state_dict_checked,
    resolve_weights,
    seeded_torch_init,
    strip_prefixes,
)

__all__ = [
    "MEDICALNET_FEATURE_DIM",
    "MedicalNet3DFeatureExtractor",
    "build_medicalnet_resnet50",
    "load_medicalnet_weights",
]

MEDICALNET_FEATURE_DIM = 2048
MEDICALNET_WHERE = (
    "Get Tencent MedicalNet's resnet_50.pth or resnet_50_23dataset.pth (github.com/Tencent/MedicalNet, or the "
    "TencentMedicalNet/MedicalNet-Resnet50 model page) yourself and pass the file's path."
)


def _dilate_stage(stage: torch.nn.Sequential, dilation: int) -> None:
    """Make a MONAI ResNet stage stride-1 and dilated in place (MedicalNet's layer3/layer4)."""
    for block in stage:
        conv = block.conv2
        conv.stride = (1, 1, 1)
        conv.dilation = (dilation,) * 3
        conv.padding = (dilation,) * 3
        block.stride = 1
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1, 1)


def build_medicalnet_resnet50(medicalnet_layout: bool = True) -> ResNet:
    """The MedicalNet ResNet-50 trunk as a MONAI ResNet (2048-d pooled output; see the module docstring).

    Args:
        medicalnet_layout: apply MedicalNet's dilated layer3/layer4 (strides 1, dilations 2 and 4).
    """
    bias_downsample, shortcut_type = get_medicalnet_pretrained_resnet_args(50)
    net = resnet50(
        spatial_dims=3,
        n_input_channels=1,
        feed_forward=False,
        shortcut_type=shortcut_type,
        bias_downsample=bias_downsample,
        conv1_t_size=7,
        conv1_t_stride=2,
    )
    if medicalnet_layout:
        _dilate_stage(net.layer3, 2)
        _dilate_stage(net.layer4, 4)
    return net


def load_medicalnet_weights(net: ResNet, path: str | Path) -> LoadReport:
    """Load a MedicalNet checkpoint (``{"state_dict": {"module.conv1.weight": ...}}``) into the MONAI ResNet-50.

    ``module.`` prefixes are stripped and the segmentation head ``conv_seg.*`` (absent from Tencent's files) is
    ignored; any other missing/unexpected key or shape mismatch raises with the list of offending keys.

    Args:
        net: network from :func:`build_medicalnet_resnet50`.
        path: the ``.pth`` file (read with ``torch.load(weights_only=True)``).

    Returns:
        A :class:`~ctsynth.metrics.features.base.LoadReport`.

    Raises:
        MissingWeightsError: when the file does not exist.
        ValueError: when keys or shapes do not match.
    """
    state = strip_prefixes(load_checkpoint_state_dict(path, "MedicalNet ResNet-50"), ("module.",))
    report = load_state_dict_checked(
        net, state, "MedicalNet ResNet-50", source=path, ignore_prefixes=("conv_seg.", "fc.")
    )
    net.eval()
    return report


class MedicalNet3DFeatureExtractor:
    """3D FID features: (N, 1, D, H, W) volumes -> (N, 2048) MedicalNet ResNet-50 pooled activations (float32).

    Args:
        weights: MedicalNet ``resnet_50*.pth``; required unless ``allow_random_weights``.
        normalization: ``"none"`` (HA-GAN: values as given) or ``"zscore"`` (per-volume standardisation).
        medicalnet_layout: dilated layer3/layer4 as MedicalNet (default); ``False`` keeps MONAI's strided stages.
        allow_random_weights: run without weights (smoke tests); ``note`` then flags the numbers.
        batch_size: volumes per forward pass (1-2 for 128^3 on a CPU).
        device: torch device.
    """

    name = "medicalnet3d"
    dim = MEDICALNET_FEATURE_DIM

    def __init__(
        self,
        weights: str | Path | None = None,
        normalization: Literal["none", "zscore"] = "none",
        medicalnet_layout: bool = True,
        allow_random_weights: bool = False,
        batch_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if normalization not in ("none", "zscore"):
            raise ValueError(f"normalization must be 'none' or 'zscore', got {normalization!r}.")
        path = resolve_weights(weights, allow_random_weights, "MedicalNet ResNet-50 (3D FID)", MEDICALNET_WHERE)
        net = seeded_torch_init(lambda: build_medicalnet_resnet50(medicalnet_layout))
        if path is not None:
            load_medicalnet_weights(net, path)
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.weights, self.normalization, self.medicalnet_layout = (
            None if path is None else str(path),
            normalization,
            medicalnet_layout,
        )
        self.batch_size = batch_size
        self.note: str | None = RANDOM_WEIGHTS_NOTE if path is None else None

    input_convention = "2 x - 1 of the [0, 1] windowed volume (HA-GAN's [-1, 1])"

    def from_windowed(self, windowed: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
        """HA-GAN feeds its [-1, 1] generator range: ``2 x - 1`` of the [0, 1] windowed volume (``window`` unused)."""
        return windowed * 2.0 - 1.0

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalization == "zscore":
            flat = x.reshape(x.shape[0], -1)
            mean = flat.mean(1).view(-1, 1, 1, 1, 1)
            std = flat.std(1).clamp_min(1e-8).view(-1, 1, 1, 1, 1)
            x = (x - mean) / std
        return self.net(x)

    def __call__(self, volumes: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, 1, D, H, W) volumes -> (N, 2048) float32 features."""
        return batched_inference(self._forward, as_volume_batch(volumes), self.batch_size, self.device)

    def describe(self) -> dict[str, Any]:
        """The protocol, for recording next to the metric values."""
        return describe(
            self.name,
            self.dim,
            self.note,
            weights=self.weights,
            normalization=self.normalization,
            medicalnet_layout=self.medicalnet_layout,
        )
