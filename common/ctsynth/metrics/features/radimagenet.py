"""2.5D FID features (MAISI protocol): a RadImageNet 2D ResNet-50 on the slices of each plane, 2048-d.

Protocol (after MONAI tutorials' ``generation/maisi/scripts/compute_fid_2-5d_ct.py``, which MAISI's Table 1 uses):

1. volumes come in HU, (N, 1, X, Y, Z); clip to ``hu_window`` = [-1000, 1000];
2. per-volume min-max to [0, 1] (min and max of the clipped volume; a constant volume becomes 0);
3. slices along each plane (``xy``, ``yz``, ``zx``; see :mod:`ctsynth.metrics.features.slices`), optionally only the
   central ``centre_ratio`` of them (MAISI's ``--enable_center_slices_ratio``, e.g. 0.4); no resizing;
4. each slice replicated to 3 channels, RGB -> BGR (a no-op on replicated grey) and the RadImageNet channel means
   ``(0.406, 0.456, 0.485)`` subtracted, no division by a std -- RadImageNet's Keras ``caffe``-style preprocessing as
   MONAI's ``RadImageNetPerceptualSimilarity`` does it on [0, 1] inputs;
5. ResNet-50 trunk (no classifier) and a spatial global average pool -> 2048-d per slice;
6. FID per plane over all pooled slices of all volumes, and the mean of the three planes (the suite's job, with
   :func:`ctsynth.metrics.frechet.frechet_distance`).

The network is ``monai.networks.nets.resnet50(spatial_dims=2, n_input_channels=3, feed_forward=False,
conv1_t_stride=2, bias_downsample=False)``, whose parameter names already equal torchvision's (``conv1.weight``,
``bn1.*``, ``layer1.0.conv1.weight``, ..., ``layer1.0.downsample.0.weight``); :func:`load_radimagenet_weights` maps a
torchvision-layout state dict onto it (``fc.*`` ignored, ``module.`` / ``backbone.`` / ``model.`` prefixes stripped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import resnet50
from monai.networks.nets.resnet import ResNet

from ctsynth.metrics.features.base import (
    RANDOM_WEIGHTS_NOTE,
    LoadReport,
    load_checkpoint_state_dict,
    load_state_dict_checked,
    resolve_weights,
    seeded_torch_init,
    strip_prefixes,
)
from ctsynth.metrics.features.slices import SliceFeatureExtractor

__all__ = [
    "RADIMAGENET_FEATURE_DIM",
    "RADIMAGENET_MEAN_BGR",
    "RadImageNet25DFeatureExtractor",
    "build_radimagenet_resnet50",
    "load_radimagenet_weights",
    "normalize_hu_volumes",
    "radimagenet_preprocess",
]

RADIMAGENET_FEATURE_DIM = 2048
RADIMAGENET_MEAN_BGR = (0.406, 0.456, 0.485)
RADIMAGENET_WHERE = (
    "Get the RadImageNet ResNet-50 weights (RadImageNet project, e.g. the PyTorch port used by MONAI's perceptual "
    "loss) yourself, as a state dict in torchvision's ResNet-50 key layout, and pass the file's path."
)


def build_radimagenet_resnet50() -> ResNet:
    """The 2D ResNet-50 trunk (torchvision/RadImageNet layout: 7x7 stride-2 stem, bias-free shortcuts) -> 2048-d."""
    return resnet50(spatial_dims=2, n_input_channels=3, feed_forward=False, conv1_t_stride=2, bias_downsample=False)


def load_radimagenet_weights(net: ResNet, path: str | Path) -> LoadReport:
    """Load a torchvision-layout ResNet-50 state dict (RadImageNet weights) into :func:`build_radimagenet_resnet50`.

    Args:
        net: the MONAI ResNet-50.
        path: ``.pth``/``.pt`` file with a plain state dict (or one under ``"state_dict"``).

    Returns:
        A :class:`~ctsynth.metrics.features.base.LoadReport`.

    Raises:
        MissingWeightsError: when the file does not exist.
        ValueError: when keys or shapes do not match (the message lists them).
    """
    state = strip_prefixes(
        load_checkpoint_state_dict(path, "RadImageNet ResNet-50"), ("module.", "backbone.", "model.")
    )
    # torchvision and MONAI use the same names for every trunk parameter; only the classifier head is dropped.
    report = load_state_dict_checked(net, state, "RadImageNet ResNet-50", source=path, ignore_prefixes=("fc.",))
    net.eval()
    return report


def normalize_hu_volumes(
    volumes: torch.Tensor, hu_window: tuple[float, float] | None = (-1000.0, 1000.0)
) -> torch.Tensor:
    """Clip to ``hu_window`` (skipped when ``None``) and min-max each volume to [0, 1] (constant volumes -> 0)."""
    x = volumes if hu_window is None else volumes.clamp(float(hu_window[0]), float(hu_window[1]))
    flat = x.reshape(x.shape[0], -1)
    lo = flat.amin(dim=1).view(-1, 1, 1, 1, 1)
    hi = flat.amax(dim=1).view(-1, 1, 1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


def radimagenet_preprocess(slices: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) slices in [0, 1] -> (B, 3, H, W): replicated, BGR order, RadImageNet means subtracted."""
    mean = torch.tensor(RADIMAGENET_MEAN_BGR, dtype=slices.dtype, device=slices.device).view(1, 3, 1, 1)
    return (slices.expand(-1, 3, -1, -1) - mean).contiguous()


class RadImageNet25DFeatureExtractor(SliceFeatureExtractor):
    """2.5D FID features: RadImageNet ResNet-50 on the slices of the three planes (protocol in the module docstring).

    Input volumes: (N, 1, X, Y, Z) in HU (set ``hu_window=None`` for volumes already in [0, 1]; they are still
    min-max normalised per volume).

    Args:
        weights: RadImageNet ResNet-50 state dict in torchvision layout; required unless ``allow_random_weights``.
        hu_window: HU clip before the per-volume min-max ((-1000, 1000) as MAISI).
        allow_random_weights: run without weights (smoke tests); ``note`` then flags the numbers.
        kwargs: slice selection and batching options of
            :class:`~ctsynth.metrics.features.slices.SliceFeatureExtractor`; default ``slices="all"`` (MAISI pools
            every slice; add ``centre_ratio=0.4`` for its central-slices option).
    """

    name = "radimagenet25d"

    def __init__(
        self,
        weights: str | Path | None = None,
        hu_window: tuple[float, float] | None = (-1000.0, 1000.0),
        allow_random_weights: bool = False,
        **kwargs: Any,
    ) -> None:
        path = resolve_weights(weights, allow_random_weights, "RadImageNet ResNet-50 (2.5D FID)", RADIMAGENET_WHERE)
        net = seeded_torch_init(build_radimagenet_resnet50)
        if path is not None:
            load_radimagenet_weights(net, path)
        self.weights, self.hu_window = None if path is None else str(path), hu_window
        kwargs.setdefault("slices", "all")
        super().__init__(
            net,
            RADIMAGENET_FEATURE_DIM,
            radimagenet_preprocess,
            normalize_volumes=lambda v: normalize_hu_volumes(v, hu_window),
            note=RANDOM_WEIGHTS_NOTE if path is None else None,
            **kwargs,
        )

    input_convention = "HU (the [0, 1] windowed volume mapped back to the window)"

    def from_windowed(self, windowed: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
        """Back to HU: ``x (high - low) + low``; the extractor clips to ``hu_window`` and min-max normalises itself."""
        low, high = float(window[0]), float(window[1])
        return windowed * (high - low) + low

    def describe(self) -> dict[str, Any]:
        """The protocol, for recording next to the metric values."""
        return {
            **super().describe(),
            "weights": self.weights,
            "hu_window": None if self.hu_window is None else list(self.hu_window),
            "preprocess": "per-volume min-max, 3 channels, BGR, minus mean (0.406, 0.456, 0.485)",
        }
