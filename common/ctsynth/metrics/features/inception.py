"""Inception-v3 pool3 features (2048-d) of 2D slices, for slice-wise FID (3DGAUnet Table 1, CT-SGAN Table 1).

The network is written out here because torchvision cannot be installed beside this torch build and MONAI has no
Inception-v3. Its module and parameter names follow torchvision's ``inception_v3`` (``Conv2d_1a_3x3.conv.weight``,
``Conv2d_1a_3x3.bn.running_mean``, ..., ``Mixed_5b.branch1x1.conv.weight``, ..., ``Mixed_7c...``; every
``BasicConv2d`` is a bias-free conv, ``BatchNorm2d(eps=0.001)`` and ReLU), so these state dicts load unchanged:

- pytorch-fid's FID Inception (``pt_inception-2015-12-05-6726825d.pth``, the TensorFlow FID graph ported to PyTorch;
  ``variant="fid"``, the default, as published FIDs use it);
- torchvision's ImageNet ``inception_v3_google-*.pth`` (``variant="torchvision"``).

The two variants differ only where the TensorFlow graph does: in ``variant="fid"`` the average pools inside
Mixed_5b-d, Mixed_6b-e and Mixed_7b exclude padding (``count_include_pad=False``) and Mixed_7c's pool branch is a max
pool. The classifier heads (``AuxLogits.*``, ``fc.*``) are not part of the feature network and are ignored on load.

Protocol of :func:`inception_preprocess`: a [0, 1] slice is replicated to 3 channels, resized to 299x299 (bilinear,
``align_corners=False``) and scaled to [-1, 1] (``2x - 1``), which is pytorch-fid's input convention; the output is the
2048-d global average pool after Mixed_7c ("pool3").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

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
    "INCEPTION_FEATURE_DIM",
    "Inception2DSliceFeatureExtractor",
    "InceptionV3Features",
    "inception_preprocess",
    "load_inception_weights",
]

INCEPTION_FEATURE_DIM = 2048
INCEPTION_WHERE = (
    "Get pytorch-fid's FID Inception weights (pt_inception-2015-12-05-6726825d.pth, from the pytorch-fid GitHub "
    "releases) or torchvision's inception_v3_google-*.pth yourself and pass the file's path."
)

_Pad = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """Bias-free conv -> BatchNorm(eps=0.001) -> ReLU, named ``conv`` / ``bn`` as in torchvision."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Pad, stride: int = 1, padding: _Pad = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_3x3(x: torch.Tensor, include_pad: bool) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=include_pad)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-d): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int, include_pad: bool) -> None:
        super().__init__()
        self.include_pad = include_pad
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x, self.include_pad))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """35 -> 17 reduction block (Mixed_6a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-e)."""

    def __init__(self, in_channels: int, channels_7x7: int, include_pad: bool) -> None:
        super().__init__()
        c7 = channels_7x7
        self.include_pad = include_pad
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_3x3(x, self.include_pad))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """17 -> 8 reduction block (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded filter banks (Mixed_7b, Mixed_7c); ``pool`` is "avg" or "max" for the pool branch."""

    def __init__(self, in_channels: int, pool: Literal["avg", "max"], include_pad: bool) -> None:
        super().__init__()
        self.pool, self.include_pad = pool, include_pad
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_3x3(x, self.include_pad)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3Features(nn.Module):
    """Inception-v3 trunk up to the 2048-d global average pool ("pool3"), torchvision key layout.

    Args:
        variant: ``"fid"`` (pytorch-fid's TensorFlow-FID graph, default) or ``"torchvision"`` (ImageNet model).
        num_classes: keep the classifier ``fc`` (1008 for pytorch-fid's weights, 1000 for torchvision's) so that
            :meth:`logits` works (Inception Score); ``None`` (default) builds the feature trunk only.

    Input: (N, 3, 299, 299) scaled to [-1, 1] (see :func:`inception_preprocess`). Output: (N, 2048).
    """

    def __init__(self, variant: Literal["fid", "torchvision"] = "fid", num_classes: int | None = None) -> None:
        super().__init__()
        if variant not in ("fid", "torchvision"):
            raise ValueError(f"variant must be 'fid' or 'torchvision', got {variant!r}.")
        self.variant = variant
        inc = variant == "torchvision"  # count_include_pad of the inner average pools
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32, include_pad=inc)
        self.Mixed_5c = InceptionA(256, pool_features=64, include_pad=inc)
        self.Mixed_5d = InceptionA(288, pool_features=64, include_pad=inc)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, include_pad=inc)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, include_pad=inc)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, include_pad=inc)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, include_pad=inc)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg", include_pad=inc)
        self.Mixed_7c = InceptionE(2048, pool="avg" if inc else "max", include_pad=inc)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = None if num_classes is None else nn.Linear(2048, num_classes)
        for m in self.modules():  # random-weights variant: He init keeps activations O(1) with identity BatchNorms
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 299, 299) in [-1, 1] -> (N, 2048) pool3 features."""
        for name, module in self.named_children():
            if name == "avgpool":
                break
            x = module(x)
        return torch.flatten(self.avgpool(x), 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 299, 299) in [-1, 1] -> (N, num_classes) classifier logits (softmax them for the IS)."""
        if self.fc is None:
            raise ValueError("this Inception-v3 was built without a classifier; pass num_classes (1008 or 1000).")
        return self.fc(self.forward(x))


def inception_preprocess(slices: torch.Tensor, size: int = 299) -> torch.Tensor:
    """(B, 1, H, W) slices in [0, 1] -> (B, 3, size, size) in [-1, 1] (bilinear resize, channel replication)."""
    x = slices
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (2.0 * x - 1.0).expand(-1, 3, -1, -1).contiguous()


def load_inception_weights(net: InceptionV3Features, path: str | Path) -> LoadReport:
    """Load a torchvision-layout Inception-v3 state dict (pytorch-fid FID weights or torchvision ImageNet weights).

    ``module.`` prefixes are stripped; ``AuxLogits.*`` is ignored, and ``fc.*`` too unless ``net`` was built with
    ``num_classes`` (then the classifier is loaded and must match).

    Args:
        net: the network to load into.
        path: ``.pth`` file (a plain state dict, or one under ``"state_dict"``).

    Returns:
        A :class:`~ctsynth.metrics.features.base.LoadReport`.

    Raises:
        MissingWeightsError: when the file does not exist.
        ValueError: when keys or shapes do not match (the message lists them).
    """
    state = strip_prefixes(load_checkpoint_state_dict(path, "Inception-v3"), ("module.",))
    ignore = ("AuxLogits.",) if net.fc is not None else ("fc.", "AuxLogits.")
    report = load_state_dict_checked(net, state, "Inception-v3", source=path, ignore_prefixes=ignore)
    net.eval()
    return report


class Inception2DSliceFeatureExtractor(SliceFeatureExtractor):
    """Slice-wise Inception-v3 pool3 features per plane (3DGAUnet Table 1 with ``slices="centre"``, CT-SGAN with
    ``slices="all"``).

    Input volumes: (N, 1, X, Y, Z) intensities in [0, 1] (the HU window is the caller's job, as for F3D); every slice is
    replicated to 3 channels, resized to 299x299 (bilinear) and scaled to [-1, 1].

    Args:
        weights: Inception-v3 state dict file (pytorch-fid FID weights or torchvision's); required unless
            ``allow_random_weights``.
        variant: ``"fid"`` (default) or ``"torchvision"``, must match the weights (see :class:`InceptionV3Features`).
        allow_random_weights: run without weights (smoke tests); ``note`` then flags the numbers.
        kwargs: slice selection and batching options of
            :class:`~ctsynth.metrics.features.slices.SliceFeatureExtractor` (``planes``, ``slices``, ``every_k``,
            ``centre_ratio``, ``batch_size``, ``device``).
    """

    name = "inception2d"

    def __init__(
        self,
        weights: str | Path | None = None,
        variant: Literal["fid", "torchvision"] = "fid",
        allow_random_weights: bool = False,
        **kwargs: Any,
    ) -> None:
        path = resolve_weights(weights, allow_random_weights, "Inception-v3 (slice-wise FID)", INCEPTION_WHERE)
        net = seeded_torch_init(lambda: InceptionV3Features(variant=variant))
        if path is not None:
            load_inception_weights(net, path)
        self.weights, self.variant = None if path is None else str(path), variant
        kwargs.setdefault("batch_size", 8)
        super().__init__(
            net,
            INCEPTION_FEATURE_DIM,
            inception_preprocess,
            note=RANDOM_WEIGHTS_NOTE if path is None else None,
            **kwargs,
        )

    input_convention = "[0, 1] (HU window scaled)"

    def from_windowed(self, windowed: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
        """Inception takes the windowed volume in [0, 1] (it rescales slices to [-1, 1] itself; ``window`` unused)."""
        return windowed

    def describe(self) -> dict[str, Any]:
        """The protocol, for recording next to the metric values."""
        return {**super().describe(), "weights": self.weights, "variant": self.variant, "input": "[0,1] -> [-1,1]"}
