"""F3D (Frechet 3D distance, 3DGAUnet) feature network: the untrained, seed-42 3D CNN of the PDAC classifier.

3DGAUnet (Shi et al. 2023, Sec. 2.4 / Table 2) computes F3D on "a 3D CNN with 17 layers, including four 3D
convolutional blocks with a fixed random state 42, and the feature vector is the flattened layer after the last
convolutional block, having a length of 512", "extracted from an untrained, cold-started 3D CNN model". The 17-layer net
is, in our reading, the paper's PDAC classifier (Sec. 2.5), whose stated 1,351,873 learnable parameters match exactly
the layout::

    input (N, 1, 64, 64, 64)
    4 x [Conv3d(k=3, valid) -> ReLU -> MaxPool3d(2) -> BatchNorm3d], filters 64, 64, 128, 256
    global average pool -> 256     (the "flattened layer after the last block" of the text is 256-d in this layout)
    Linear(256, 512) -> ReLU       -> the 512-d F3D feature vector (this module's output)
    [classifier only: Dropout -> Linear(512, 1)]

So :class:`C3DClassifierBackbone` is that network up to the 512-d ReLU; the PDAC classifier bundle adds dropout and
``Linear(512, 1)`` on top (backbone 1,351,360 + head 513 = 1,351,873 learnable parameters).

Reproducible weights: the paper's Keras seed cannot be reproduced, so the weights are defined here by a NumPy
protocol that gives the same bytes on every machine and torch version, and never touches torch's global RNG:

- ``rng = numpy.random.default_rng(seed)`` (seed 42 by default; PCG64);
- parameters are drawn in this order: ``blocks.0.conv.weight, blocks.0.conv.bias, blocks.1.conv.weight, ...,
  blocks.3.conv.bias, dense.weight, dense.bias``; each with ``rng.uniform(-b, b, size=shape)`` in float64 over the
  PyTorch shape (``(out, in, kd, kh, kw)`` / ``(out, in)``, C order), then cast to float32;
- ``init="torch_default"`` (default): ``b = 1 / sqrt(fan_in)`` for weights and biases, ``fan_in = in * prod(kernel)``
  -- the distribution of PyTorch's default Conv/Linear init (``kaiming_uniform_(a=sqrt(5))``);
  ``init="keras"``: Glorot-uniform weights ``b = sqrt(6 / (fan_in + fan_out))``, ``fan_out = out * prod(kernel)``, and
  zero biases (not drawn) -- the defaults of the Keras layers the paper used;
- BatchNorm: gamma 1, beta 0, running mean 0, running variance 1 (not drawn); the network always runs in eval mode.

Inputs are ``(N, 1, D, H, W)`` intensities in [0, 1]; the HU window ([-100, 170] -> [0, 1] in 3DGAUnet) is the
caller's job. With valid padding a 32^3 tumour cube collapses in block 4 (32 -> 30 -> 15 -> 13 -> 6 -> 4 -> 2 -> 0), so
by default inputs with any edge below 64 are resized (trilinear) to 64^3 first; ``padding="same"`` is the other way out.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ctsynth.metrics.features.base import as_volume_batch, batched_inference, describe

__all__ = [
    "F3D_FEATURE_DIM",
    "C3DClassifierBackbone",
    "F3DFeatureExtractor",
    "F3DNet",
    "build_f3d_backbone",
    "init_f3d_weights",
]

F3D_FEATURE_DIM = 512
F3D_FILTERS = (64, 64, 128, 256)


class _ConvBlock(nn.Sequential):
    """Conv3d(k3) -> ReLU -> MaxPool3d(2) -> BatchNorm3d, the classifier's block (order as in the paper)."""

    def __init__(self, in_channels: int, out_channels: int, padding: str) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=0 if padding == "valid" else 1)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d(kernel_size=2)
        self.norm = nn.BatchNorm3d(out_channels)


class C3DClassifierBackbone(nn.Module):
    """The 3DGAUnet PDAC-classifier CNN up to its 512-d dense layer (the F3D feature network).

    Args:
        in_channels: input channels (1 for CT).
        filters: filters of the four conv blocks (paper-count-matched default 64, 64, 128, 256).
        dense_features: width of the dense layer (512).
        padding: ``"valid"`` (Keras default, the paper; needs >= 46 voxels per edge) or ``"same"``.

    The weights are torch's default init until :func:`init_f3d_weights` sets them (as :func:`build_f3d_backbone`
    does); a classifier being trained can keep either.
    """

    def __init__(
        self,
        in_channels: int = 1,
        filters: tuple[int, ...] = F3D_FILTERS,
        dense_features: int = F3D_FEATURE_DIM,
        padding: Literal["valid", "same"] = "valid",
    ) -> None:
        super().__init__()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}.")
        self.padding = padding
        chans = (in_channels, *filters)
        self.blocks = nn.Sequential(*[_ConvBlock(chans[i], chans[i + 1], padding) for i in range(len(filters))])
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.dense = nn.Linear(filters[-1], dense_features)
        self.dense_act = nn.ReLU(inplace=True)

    def output_spatial_size(self, size: int) -> int:
        """Edge length after the last block for an input edge ``size`` (0 means the input is too small)."""
        for _ in self.blocks:
            size = (size - 2 if self.padding == "valid" else size) // 2
            if size <= 0:
                return 0
        return size

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) -> (N, filters[-1]) global-average-pooled output of the last block (256-d)."""
        return torch.flatten(self.gap(self.blocks(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, D, H, W) -> (N, 512) ReLU output of the dense layer."""
        return self.dense_act(self.dense(self.forward_pooled(x)))


F3DNet = C3DClassifierBackbone


def init_f3d_weights(
    net: C3DClassifierBackbone, seed: int = 42, init: Literal["torch_default", "keras"] = "torch_default"
) -> C3DClassifierBackbone:
    """Set every parameter of ``net`` from ``numpy.random.default_rng(seed)`` (protocol in the module docstring).

    Args:
        net: the network to initialise in place.
        seed: NumPy seed (42 as in the paper).
        init: ``"torch_default"`` (U(+-1/sqrt(fan_in)) weights and biases) or ``"keras"`` (Glorot-uniform weights,
            zero biases).

    Returns:
        ``net``, in eval mode.
    """
    if init not in ("torch_default", "keras"):
        raise ValueError(f"init must be 'torch_default' or 'keras', got {init!r}.")
    rng = np.random.default_rng(seed)
    layers: list[nn.Conv3d | nn.Linear] = [block.conv for block in net.blocks] + [net.dense]
    with torch.no_grad():
        for layer in layers:
            shape = tuple(layer.weight.shape)
            receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
            if init == "torch_default":
                w_bound = b_bound = 1.0 / np.sqrt(fan_in)
            else:
                w_bound, b_bound = np.sqrt(6.0 / (fan_in + fan_out)), 0.0
            layer.weight.copy_(torch.from_numpy(rng.uniform(-w_bound, w_bound, size=shape).astype(np.float32)))
            if layer.bias is not None:
                if b_bound > 0:
                    bias = rng.uniform(-b_bound, b_bound, size=tuple(layer.bias.shape))
                else:
                    bias = np.zeros(tuple(layer.bias.shape))
                layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
        for block in net.blocks:
            block.norm.reset_parameters()  # gamma 1, beta 0, running mean 0, running var 1
    return net.eval()


def build_f3d_backbone(
    padding: Literal["valid", "same"] = "valid",
    seed: int = 42,
    init: Literal["torch_default", "keras"] = "torch_default",
) -> C3DClassifierBackbone:
    """The F3D network with its reproducible seeded weights, in eval mode (see the module docstring)."""
    with torch.random.fork_rng(devices=[]):  # the throw-away default init must not advance the caller's torch RNG
        net = C3DClassifierBackbone(padding=padding)
    return init_f3d_weights(net, seed=seed, init=init)


class F3DFeatureExtractor:
    """F3D features of whole volumes: (N, 1, D, H, W) in [0, 1] -> (N, 512) float32 (or (N, 256) with ``layer="gap"``).

    Args:
        padding: ``"valid"`` (paper) or ``"same"``.
        resize_to: ``"auto"`` (default): volumes with any edge below 64 are resized to 64^3 (trilinear,
            ``align_corners=False``), others are used as they are; an int ``s``: always resize to ``s^3``; ``None``:
            never resize (valid padding then needs >= 46 voxels per edge).
        seed: NumPy seed of the weights (42).
        init: weight distribution, ``"torch_default"`` or ``"keras"`` (see :func:`init_f3d_weights`).
        layer: ``"dense"`` (512-d, default, the paper's length) or ``"gap"`` (256-d pooled last block).
        batch_size: volumes per forward pass (bounds memory: ~0.4 GB per 64^3 volume at float32).
        device: torch device.
        channels_last: run with ``torch.channels_last_3d`` memory format (faster convolutions on CPU).
        input_scale: factor applied to the windowed [0, 1] volume before the network (``from_windowed``): 1 (default)
            feeds [0, 1]; 255 feeds 0-255 grey values, the scale the 3DGAUnet paper's Table 2 F3D magnitudes fit (the
            untrained network is piecewise linear with BatchNorm at its initial statistics, so the Frechet distance
            grows with the square of the scale: about 65,000 times larger at 255).

    The features are deterministic: the same bytes in every process on a given machine, torch build and thread count;
    the weights are the same bytes everywhere.
    """

    name = "f3d"

    def __init__(
        self,
        padding: Literal["valid", "same"] = "valid",
        resize_to: int | Literal["auto"] | None = "auto",
        seed: int = 42,
        init: Literal["torch_default", "keras"] = "torch_default",
        layer: Literal["dense", "gap"] = "dense",
        batch_size: int = 4,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
        input_scale: float = 1.0,
    ) -> None:
        if not float(input_scale) > 0:
            raise ValueError(f"input_scale must be positive, got {input_scale!r}.")
        self.input_scale = float(input_scale)
        if layer not in ("dense", "gap"):
            raise ValueError(f"layer must be 'dense' or 'gap', got {layer!r}.")
        if resize_to is not None and resize_to != "auto" and (not isinstance(resize_to, int) or resize_to < 1):
            raise ValueError(f"resize_to must be 'auto', None or a positive int, got {resize_to!r}.")
        self.padding, self.resize_to, self.seed, self.init, self.layer = padding, resize_to, seed, init, layer
        self.batch_size, self.device, self.channels_last = batch_size, torch.device(device), channels_last
        self.net = build_f3d_backbone(padding=padding, seed=seed, init=init).to(self.device)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        self.dim = F3D_FEATURE_DIM if layer == "dense" else F3D_FILTERS[-1]
        self.note: str | None = None

    untrained_by_definition = True  # F3D is defined on a seeded, never-trained network (3DGAUnet Sec. 2.4)

    @property
    def input_convention(self) -> str:
        """What the network is fed, recorded in the suite's report."""
        if self.input_scale == 1.0:
            return "[0, 1] (HU window scaled)"
        return f"[0, {self.input_scale:g}] (HU window scaled, times input_scale {self.input_scale:g})"

    def from_windowed(self, windowed: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
        """F3D takes the windowed volume in [0, 1] times ``input_scale`` (1 by default; ``window`` unused)."""
        scale = getattr(self, "input_scale", 1.0)  # also callable unbound, as the other extractors' converters
        return windowed if scale == 1.0 else windowed * scale

    def _target_size(self, spatial: tuple[int, ...]) -> tuple[int, ...] | None:
        if self.resize_to == "auto":
            return (64, 64, 64) if min(spatial) < 64 else None
        if self.resize_to is None:
            return None
        return (self.resize_to,) * 3

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self._target_size(tuple(x.shape[2:]))
        if size is not None and tuple(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.net(x) if self.layer == "dense" else self.net.forward_pooled(x)

    def __call__(self, volumes: torch.Tensor | np.ndarray) -> np.ndarray:
        """Features of a batch of volumes.

        Args:
            volumes: (N, 1, D, H, W) intensities in [0, 1].

        Returns:
            (N, dim) float32 array.

        Raises:
            ValueError: on a wrong shape, or volumes too small for valid padding without resizing.
        """
        x = as_volume_batch(volumes)
        size = self._target_size(tuple(x.shape[2:])) or tuple(x.shape[2:])
        too_small = [s for s in size if self.net.output_spatial_size(s) == 0]
        if too_small:
            raise ValueError(
                f"volumes of spatial size {tuple(x.shape[2:])} vanish in the F3D network with {self.padding} padding; "
                "resize them (resize_to=64) or use padding='same'."
            )
        return batched_inference(self._forward, x, self.batch_size, self.device)

    def describe(self) -> dict[str, Any]:
        """The protocol, for recording next to the metric values."""
        return describe(
            self.name,
            self.dim,
            self.note,
            padding=self.padding,
            resize_to=self.resize_to,
            seed=self.seed,
            init=self.init,
            layer=self.layer,
            input_scale=self.input_scale,
        )
