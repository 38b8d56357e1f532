"""HA-GAN networks (Sun et al., IEEE JBHI 26(8) 2022, Sec. III; as used in Guttulsrud 2023, Sec. 3.6.5), 128^3 and
256^3 versions, layer for layer.

Tensor layout ``(B, C, D1, D2, D3)``. The high-resolution sub-volume is a slab of depth ``S/8`` along ``D1`` starting at
``crop_idx`` in ``[0, S - S/8]``; the generator's shared feature volume has a quarter of the resolution, so the slab of
the feature fed to ``G^H`` starts at ``crop_idx // 4`` with depth ``S/32``.

- :class:`HAGANGenerator`: ``G^A`` (latent -> 64-channel feature at ``S/4``), ``G^L`` (feature -> low-res volume) and
  ``G^H`` (feature or feature slab -> high-res volume or sub-volume). ``forward(z)`` generates the whole ``S^3``
  volume in one pass (inference); ``forward(z, crop_idx)`` returns ``(sub-volume, low-res volume)`` (training).
- :class:`HAGANDiscriminator`: ``D^H`` on the sub-volume with its position + ``D^L`` on the low-res volume, spectral
  norm on every layer, logits averaged.
- :class:`HAGANEncoder` (``E^H``) and :class:`HAGANSubEncoder` (``E^G``).

Normalisation is ``GroupNorm(8, C)`` everywhere; upsampling is nearest-neighbour x2. A nearest x2 upsampling followed
by a 3x3x3 convolution equals eight 2x2x2 convolutions on the low-resolution input, one per output parity, which is
also one stride-2 transposed convolution with a 4x4x4 kernel (:func:`upsample_conv3d`): 3.4x fewer multiply-adds and
no upsampled intermediate; ``fused_upsample=True`` (default) uses that form, ``False`` the literal
upsample-then-convolve (tests check they agree). Without gradients (sampling) the derived kernels are computed once
and reused until the weights change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "SIZES",
    "HAGANDiscriminator",
    "HAGANEncoder",
    "HAGANGenerator",
    "HAGANSubEncoder",
    "crop_range",
    "upsample_conv3d",
    "upsample_kernel",
]

SIZES = (128, 256)


def _check_size(size: int) -> int:
    if int(size) not in SIZES:
        raise ValueError(f"HA-GAN exists in the sizes {SIZES}, got size={size}")
    return int(size)


def crop_range(size: int) -> int:
    """Largest sub-volume start ``S - S/8`` (112 for 128^3, 224 for 256^3); also the position normaliser of ``D^H``."""
    return _check_size(size) * 7 // 8


TRANSPOSED_MIN_OUT_CHANNELS = 16
"""From this many output channels on, :func:`upsample_conv3d` runs one transposed convolution; below it (the generators'
1- or 2-channel output layers) eight phase convolutions, which oneDNN runs faster there (``bench/bench_hagan.py``)."""


def _phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """2x2x2 kernels of the eight output parities of ``conv3d(upsample_nearest_x2(x), weight, padding=1)``.

    Along one axis the upsampled input at output ``2i + a`` is low-res ``(i-1, i, i)`` for ``a = 0`` and
    ``(i, i, i+1)`` for ``a = 1``: the 3-tap kernel ``(w0, w1, w2)`` becomes ``(w0, w1 + w2)`` on ``(i-1, i)`` and
    ``(w0 + w1, w2)`` on ``(i, i+1)``.

    Returns:
        ``(8 * C_out, C_in, 2, 2, 2)``, parity ``(a, b, c)`` in block ``4a + 2b + c``.
    """
    taps = weight.new_tensor([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]])  # (parity, tap, kernel index)
    k = torch.einsum("apx,bqy,crz,oixyz->abcoipqr", taps, taps, taps, weight)
    return k.reshape(-1, weight.shape[1], 2, 2, 2)


def _transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """4x4x4 kernel ``K`` with ``conv_transpose3d(x, K, stride=2, padding=1) == conv3d(upsample_nearest_x2(x), weight,
    padding=1)``.

    A stride-2 transposed convolution with padding 1 sends low-res ``j`` to output ``2j - 1 + k``: output ``2i``
    gathers ``(i-1, i)`` through taps ``(3, 1)`` and output ``2i + 1`` gathers ``(i, i+1)`` through taps ``(2, 0)``.
    Matching the phase kernels of :func:`_phase_kernels` gives ``K = (w2, w1 + w2, w0 + w1, w0)`` along each axis.

    Returns:
        ``(C_in, C_out, 4, 4, 4)``.
    """
    taps = weight.new_tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]])  # (transposed tap, kernel index)
    return torch.einsum("kx,ly,mz,oixyz->ioklm", taps, taps, taps, weight).contiguous()


def upsample_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The kernel :func:`upsample_conv3d` convolves with for ``weight`` (transposed or phase form, by output width)."""
    if weight.shape[0] >= TRANSPOSED_MIN_OUT_CHANNELS:
        return _transposed_kernel(weight)
    return _phase_kernels(weight)


def upsample_conv3d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel: torch.Tensor | None = None
) -> torch.Tensor:
    """``conv3d(interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)`` for a 3x3x3 kernel,
    computed on the low-resolution input: one stride-2 transposed convolution (:func:`_transposed_kernel`) for at
    least :data:`TRANSPOSED_MIN_OUT_CHANNELS` output channels, otherwise eight phase convolutions
    (:func:`_phase_kernels`) interleaved.

    Args:
        x: ``(B, C_in, d, h, w)``.
        weight: ``(C_out, C_in, 3, 3, 3)``.
        bias: ``(C_out,)`` or None.
        kernel: ``upsample_kernel(weight)`` when the caller keeps it (sampling); derived here when None.

    Returns:
        ``(B, C_out, 2d, 2h, 2w)``.
    """
    c_out = weight.shape[0]
    kernel = upsample_kernel(weight) if kernel is None else kernel
    if c_out >= TRANSPOSED_MIN_OUT_CHANNELS:
        return F.conv_transpose3d(x, kernel, bias, stride=2, padding=1)
    kernels = kernel.to(x.dtype)
    b = None if bias is None else bias.to(x.dtype).repeat(8)
    y = F.conv3d(x, kernels, b, padding=1)  # (B, 8 C_out, d+1, h+1, w+1): zero padding of 1, kernel 2
    n, _, d, h, w = x.shape
    y = y.view(n, 2, 2, 2, c_out, d + 1, h + 1, w + 1)
    # interleave the parities in one pass: out[..., 2i + a, 2j + b, 2k + c] = phase (a, b, c) at (i, j, k)
    fmt = torch.channels_last_3d if x.is_contiguous(memory_format=torch.channels_last_3d) else torch.contiguous_format
    out = torch.empty((n, c_out, 2 * d, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=fmt)
    grid = out.view(n, c_out, d, 2, h, 2, w, 2)
    for a in (0, 1):
        for b_ in (0, 1):
            for c in (0, 1):
                grid[:, :, :, a, :, b_, :, c] = y[:, a, b_, c, :, a : a + d, b_ : b_ + h, c : c + w]
    return out


class _ConvGNReLU(nn.Sequential):
    """Conv3d(k3, s1, p1, bias) -> GroupNorm(8) -> ReLU, optionally preceded by a nearest x2 upsampling."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool = False, norm: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv3d(in_channels, out_channels, 3, 1, 1, bias=True)]
        if norm:
            layers += [nn.GroupNorm(8, out_channels), nn.ReLU()]
        super().__init__(*layers)
        self.upsample = upsample
        self.fused = True
        self._kernel_cache: tuple[tuple, torch.Tensor] | None = None

    def _upsample_kernel(self) -> torch.Tensor:
        """``upsample_kernel(weight)``; without gradients, reused while the weight tensor and its version are the same
        (``load_state_dict``, optimiser steps and ``.to()`` all change one of them)."""
        weight = self[0].weight
        if torch.is_grad_enabled() and weight.requires_grad:
            return upsample_kernel(weight)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            with torch.no_grad():
                self._kernel_cache = (key, upsample_kernel(weight))
        return self._kernel_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[0]
        if not self.upsample:
            x = conv(x)
        elif self.fused:
            x = upsample_conv3d(x, conv.weight, conv.bias, kernel=self._upsample_kernel())
        else:
            x = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        if conv.weight.is_contiguous(memory_format=torch.channels_last_3d):
            # a model moved to channels-last stays so: torch's small-volume conv path returns NCDHW, and every later
            # layer would inherit it
            x = x.contiguous(memory_format=torch.channels_last_3d)
        for layer in list(self)[1:]:
            x = layer(x)
        return x


class HAGANGenerator(nn.Module):
    """HA-GAN generator: ``G^A`` + ``G^L`` + ``G^H`` (HA-GAN Sec. III-A; the thesis's Sec. 3.6.5).

    ``G^A``: Linear(latent, 512*4^3) -> (512, 4, 4, 4) -> conv 512->512 -> x2 -> conv 512->512 -> x2 -> conv 512->256
    -> x2 -> conv 256->128 -> [256 model: x2] -> conv 128->64 (each conv + GroupNorm + ReLU; channels scale with
    ``channel``/32). ``G^L``: conv 64->32 -> conv 32->16 -> conv 16->out, tanh. ``G^H``: x2 -> conv 64->32 -> x2 ->
    conv 32->out, tanh.

    Args:
        size: 128 or 256 (the side ``S`` of the generated volume).
        latent_dim: length of the latent vector (1024).
        channel: base width ``c`` (32): ``G^A`` uses 16c, 16c, 8c, 4c, 2c, ``G^H`` c, ``G^L`` c and c/2.
        out_channels: 1 (z-stacked pair) or 2 (image and mask as channels).
        fused_upsample: compute upsample+conv as sub-pixel convolutions (same result, fewer operations).

    Raises:
        ValueError: for a size other than 128/256, or channels that GroupNorm(8) cannot divide.
    """

    def __init__(
        self,
        size: int = 128,
        latent_dim: int = 1024,
        channel: int = 32,
        out_channels: int = 1,
        fused_upsample: bool = True,
    ) -> None:
        super().__init__()
        self.size = _check_size(size)
        if channel % 16:
            raise ValueError(f"channel must be a multiple of 16 (GroupNorm(8) of channel/2), got {channel}")
        c = int(channel)
        self.latent_dim = int(latent_dim)
        self.latent_shape = (self.latent_dim,)
        self.latent_std = 1.0
        self.out_channels = int(out_channels)
        self.feature_channels = 2 * c
        self.fc = nn.Linear(self.latent_dim, 16 * c * 4 * 4 * 4)
        self.common = nn.Sequential(
            _ConvGNReLU(16 * c, 16 * c),
            _ConvGNReLU(16 * c, 16 * c, upsample=True),
            _ConvGNReLU(16 * c, 8 * c, upsample=True),
            _ConvGNReLU(8 * c, 4 * c, upsample=True),
            _ConvGNReLU(4 * c, 2 * c, upsample=self.size == 256),
        )
        self.low = nn.Sequential(
            _ConvGNReLU(2 * c, c), _ConvGNReLU(c, c // 2), _ConvGNReLU(c // 2, out_channels, norm=False), nn.Tanh()
        )
        self.high = nn.Sequential(
            _ConvGNReLU(2 * c, c, upsample=True), _ConvGNReLU(c, out_channels, upsample=True, norm=False), nn.Tanh()
        )
        self.set_fused_upsample(fused_upsample)

    def set_fused_upsample(self, fused: bool) -> None:
        """Switch every upsample+conv between the sub-pixel form and the literal one."""
        for m in self.modules():
            if isinstance(m, _ConvGNReLU):
                m.fused = bool(fused)

    @property
    def slab_depth(self) -> int:
        """Depth of the feature slab under one high-res sub-volume (``S/32``: 4 or 8)."""
        return self.size // 32

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """``G^A``: ``(B, latent)`` -> ``(B, 2c, S/4, S/4, S/4)``."""
        h = self.fc(z).view(z.shape[0], -1, 4, 4, 4)
        return self.common(h)

    def low_res(self, features: torch.Tensor) -> torch.Tensor:
        """``G^L``: feature -> low-res volume ``(B, out, S/4, S/4, S/4)`` in [-1, 1]."""
        return self.low(features)

    def high_res(self, features: torch.Tensor) -> torch.Tensor:
        """``G^H``: feature (slab) -> high-res volume (slab) at 4x the resolution, in [-1, 1]."""
        return self.high(features)

    def feature_slab(self, features: torch.Tensor, crop_idx: int) -> torch.Tensor:
        """The feature slab under the sub-volume starting at ``crop_idx`` along ``D1``."""
        start = int(crop_idx) // 4
        return features[:, :, start : start + self.slab_depth]

    def forward(self, z: torch.Tensor, crop_idx: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Whole volume ``(B, out, S, S, S)`` when ``crop_idx`` is None; otherwise ``(sub-volume of depth S/8 at
        crop_idx, low-res volume)``.

        Raises:
            ValueError: for ``crop_idx`` outside ``[0, S - S/8]``.
        """
        h = self.features(z)
        if crop_idx is None:
            return self.high(h)
        if not 0 <= int(crop_idx) <= crop_range(self.size):
            raise ValueError(f"crop_idx must be in [0, {crop_range(self.size)}], got {crop_idx}")
        return self.high(self.feature_slab(h, crop_idx)), self.low(h)


def _sn_conv(cin: int, cout: int, kernel, stride, padding) -> nn.Module:
    return spectral_norm(nn.Conv3d(cin, cout, kernel, stride, padding, bias=True), eps=1e-12)


class HAGANDiscriminator(nn.Module):
    """HA-GAN discriminator: ``D^H`` (sub-volume + position) and ``D^L`` (low-res volume), logits averaged.

    ``D^H`` (128): SN-conv 1->c/16 (k4 s2 p1) -> c/16->c/8 (k4 s2 p1) -> c/8->c/4 (k(2,4,4) s2 p(0,1,1)) -> c/4->c/2
    (same) -> c/2->c (k(1,4,4) s(1,2,2) p(0,1,1)) -> c->c/4 (k(1,4,4) s1 p0) -> concat position -> SN-linear
    (c/4+1)->c/8 -> c/8->1; the 256 version prepends SN-conv 1->c/32 (k4 s2 p1). ``D^L`` (width 256): SN-conv
    1->64 -> 64->128 -> 128->256 (k4 s2 p1) -> 256->1 (k4 s1 p0); the 256 version prepends 1->32. LeakyReLU(0.2)
    after every layer but the outputs.

    Args:
        size: 128 or 256.
        channel: width ``c`` of ``D^H`` (512).
        low_channel: width of ``D^L`` (256).
        in_channels: 1 (z-stacked pair) or 2 (channels pair).
    """

    def __init__(self, size: int = 128, channel: int = 512, low_channel: int = 256, in_channels: int = 1) -> None:
        super().__init__()
        self.size = _check_size(size)
        c, cl = int(channel), int(low_channel)
        high: list[nn.Module] = []
        first = in_channels
        if self.size == 256:
            high.append(_sn_conv(in_channels, c // 32, 4, 2, 1))
            first = c // 32
        high += [
            _sn_conv(first, c // 16, 4, 2, 1),
            _sn_conv(c // 16, c // 8, 4, 2, 1),
            _sn_conv(c // 8, c // 4, (2, 4, 4), 2, (0, 1, 1)),
            _sn_conv(c // 4, c // 2, (2, 4, 4), 2, (0, 1, 1)),
            _sn_conv(c // 2, c, (1, 4, 4), (1, 2, 2), (0, 1, 1)),
            _sn_conv(c, c // 4, (1, 4, 4), 1, 0),
        ]
        self.high = nn.ModuleList(high)
        self.fc1 = spectral_norm(nn.Linear(c // 4 + 1, c // 8), eps=1e-12)
        self.fc2 = spectral_norm(nn.Linear(c // 8, 1), eps=1e-12)
        low: list[nn.Module] = []
        first = in_channels
        if self.size == 256:
            low.append(_sn_conv(in_channels, cl // 8, 4, 2, 1))
            first = cl // 8
        low += [_sn_conv(first, cl // 4, 4, 2, 1), _sn_conv(cl // 4, cl // 2, 4, 2, 1), _sn_conv(cl // 2, cl, 4, 2, 1)]
        self.low = nn.ModuleList(low)
        self.low_out = _sn_conv(cl, 1, 4, 1, 0)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, sub_volume: torch.Tensor, low_res: torch.Tensor, crop_idx: int) -> torch.Tensor:
        """Logits ``(B, 1)``: mean of ``D^H(sub_volume, crop_idx / (S - S/8))`` and ``D^L(low_res)``."""
        h = sub_volume
        for layer in self.high:
            h = self.act(layer(h))
        h = h.flatten(1)
        position = torch.full((h.shape[0], 1), float(crop_idx) / crop_range(self.size), dtype=h.dtype, device=h.device)
        h = self.act(self.fc1(torch.cat([h, position], 1)))
        logit_high = self.fc2(h)
        g = low_res
        for layer in self.low:
            g = self.act(layer(g))
        logit_low = self.low_out(g).flatten(1)
        return (logit_high + logit_low) / 2.0


def _conv_gn_relu(cin: int, cout: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride, padding, bias=True), nn.GroupNorm(8, cout), nn.ReLU()]


class HAGANEncoder(nn.Sequential):
    """``E^H``: high-res sub-volume -> feature slab (the inverse of ``G^H``).

    conv in->c/2 (k4 s2 p1) -> conv c/2->c/2 (k3 s1 p1) -> conv c/2->c (k4 s2 p1), each + GroupNorm(8) + ReLU:
    ``(S/8, S, S)`` -> ``(c, S/32, S/4, S/4)``.

    Args:
        channel: output width ``c`` (64 = the generator's feature channels).
        in_channels: 1 or 2.
    """

    def __init__(self, channel: int = 64, in_channels: int = 1) -> None:
        c = int(channel)
        super().__init__(
            *_conv_gn_relu(in_channels, c // 2, 4, 2, 1),
            *_conv_gn_relu(c // 2, c // 2, 3, 1, 1),
            *_conv_gn_relu(c // 2, c, 4, 2, 1),
        )


class HAGANSubEncoder(nn.Module):
    """``E^G``: the whole feature volume (``E^H`` of every slab, concatenated along ``D1``) -> latent vector.

    128: conv 64->64 -> 64->128 -> 128->256 (k4 s2 p1, + GroupNorm + ReLU) -> conv 256->latent (k4 s1 p0).
    256: conv 64->32 -> 32->64 -> 64->128 -> 128->256 -> 256->latent.

    Args:
        size: 128 or 256.
        channel: width ``c`` (256); the input has ``c/4`` channels.
        latent_dim: output length (1024).
    """

    def __init__(self, size: int = 128, channel: int = 256, latent_dim: int = 1024) -> None:
        super().__init__()
        self.size = _check_size(size)
        c = int(channel)
        layers: list[nn.Module] = []
        first = c // 4
        if self.size == 256:
            layers += _conv_gn_relu(c // 4, c // 8, 4, 2, 1)
            first = c // 8
        layers += _conv_gn_relu(first, c // 4, 4, 2, 1)
        layers += _conv_gn_relu(c // 4, c // 2, 4, 2, 1)
        layers += _conv_gn_relu(c // 2, c, 4, 2, 1)
        layers.append(nn.Conv3d(c, int(latent_dim), 4, 1, 0, bias=True))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, c/4, S/4, S/4, S/4)`` -> ``(B, latent)``."""
        return self.net(features).flatten(1)
