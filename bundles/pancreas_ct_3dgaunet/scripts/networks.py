"""Networks of 3DGAUnet (Shi et al., Cancers 2023): a 3D U-Net generator, the 3D CNN discriminator, and the 3D-GAN
baseline the paper compares against (Tables 1-2), written from the paper's text (Sec. 2.2) and the authors' public
repository yshi20/3DGAUnet (file src/model.py).

Every discriminator returns *logits* of shape ``(B, 1)``; the losses apply the sigmoid (``BCEWithLogits``), which is
the paper's "sigmoid + binary cross-entropy" computed in one numerically stable step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = [
    "BATCHNORM_MODES",
    "UNetGenerator3D",
    "Discriminator3D",
    "ThreeDGANGenerator",
    "ThreeDGANDiscriminator",
    "batchnorm_eval_mode",
    "count_parameters",
]

NOISE_MODES = ("volume", "vector")


def count_parameters(net: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a network."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def _check_cube(spatial_size: int, divisor: int, what: str) -> int:
    size = int(spatial_size)
    if size < divisor or size % divisor:
        raise ValueError(f"{what}: spatial_size must be a positive multiple of {divisor}, got {spatial_size}")
    return size


class UNetGenerator3D(nn.Module):
    """3DGAUnet generator: noise -> MONAI 3D U-Net (kernel 3, stride 2, ReLU, skip connections) -> Sigmoid.

    The paper states only "3D U-Net, kernel 3x3x3, stride 2, ReLU, skip connections"; how noise enters is not
    stated, so it is configurable:

    - ``noise="volume"`` (default): the input is a noise volume ``(B, 1, S, S, S)``, ``N(0, 1)``;
    - ``noise="vector"``: the input is ``z`` of shape ``(B, latent_dim)``, ``N(0, 0.33^2)`` (the convention of
      yshi20/3DGAUnet), projected by one ``Linear`` to ``1 x S^3`` (``latent_dim * S^3`` weights: 8.4 M at S=32,
      67 M at S=64).

    Args:
        spatial_size: cube edge S (32 for tumours, 64 for pancreas); a multiple of ``prod(strides)``.
        noise: "volume" or "vector".
        latent_dim: length of ``z`` in vector mode.
        latent_std: standard deviation of the noise (default 1.0 for volumes, 0.33 for vectors); read by the
            configs to draw latents.
        channels: U-Net feature channels per level.
        strides: U-Net strides (default: 2 for every level but the last).
        kernel_size: convolution kernel size.
        up_kernel_size: transposed-convolution kernel size.
        num_res_units: residual units per level (0: plain conv blocks as in the paper's text).
        act: activation (MONAI name).
        norm: normalisation (MONAI name).
        dropout: dropout rate.

    Raises:
        ValueError: on an unknown noise mode, a cube size not divisible by the total stride, or mismatched
            channels/strides.
    """

    def __init__(
        self,
        spatial_size: int = 32,
        noise: str = "volume",
        latent_dim: int = 256,
        latent_std: float | None = None,
        channels: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] | None = None,
        kernel_size: int = 3,
        up_kernel_size: int = 3,
        num_res_units: int = 0,
        act: str | tuple = "RELU",
        norm: str | tuple = "BATCH",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
        channels = tuple(int(c) for c in channels)
        strides = (2,) * (len(channels) - 1) if strides is None else tuple(int(s) for s in strides)
        if len(strides) != len(channels) - 1:
            raise ValueError(f"need len(strides) == len(channels) - 1, got {len(strides)} and {len(channels)}")
        total_stride = 1
        for s in strides:
            total_stride *= s
        self.spatial_size = _check_cube(spatial_size, total_stride, "UNetGenerator3D")
        self.noise = noise
        self.latent_dim = int(latent_dim)
        self.latent_std = float(latent_std if latent_std is not None else (1.0 if noise == "volume" else 0.33))
        self.project = nn.Linear(self.latent_dim, self.spatial_size**3) if noise == "vector" else None
        self.unet = UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=channels,
            strides=strides,
            kernel_size=kernel_size,
            up_kernel_size=up_kernel_size,
            num_res_units=num_res_units,
            act=act,
            norm=norm,
            dropout=dropout,
        )

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample's input noise (without the batch dimension)."""
        return (self.latent_dim,) if self.noise == "vector" else (1,) + (self.spatial_size,) * 3

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map noise ``(B, *latent_shape)`` to volumes ``(B, 1, S, S, S)`` in [0, 1]."""
        if self.project is not None:
            z = self.project(z.flatten(1)).view(-1, 1, *(self.spatial_size,) * 3)
        return torch.sigmoid(self.unet(z))


class Discriminator3D(nn.Module):
    """3DGAUnet discriminator: three blocks of [Conv3d k2 s1 -> LeakyReLU -> MaxPool3d 2 -> BatchNorm3d], Flatten,
    Linear -> one logit.

    The block order and kernel/stride/pool follow the paper's text; filter counts, activation and padding (0) are
    not stated and are the defaults here. Spatial size per block: ``s -> (s - 1) // 2`` (64 -> 31 -> 15 -> 7,
    32 -> 15 -> 7 -> 3).

    Args:
        spatial_size: input cube edge S.
        in_channels: input channels.
        channels: filters of the three (or more) blocks.
        kernel_size: convolution kernel size (stride 1, no padding).
        negative_slope: LeakyReLU slope.

    Raises:
        ValueError: when the input is too small for the number of blocks.
    """

    def __init__(
        self,
        spatial_size: int = 32,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 2,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        size, c_in = int(spatial_size), int(in_channels)
        for c_out in channels:
            blocks += [
                nn.Conv3d(c_in, int(c_out), kernel_size=kernel_size, stride=1),
                nn.LeakyReLU(negative_slope),
                nn.MaxPool3d(2),
                nn.BatchNorm3d(int(c_out)),
            ]
            size = (size - kernel_size + 1) // 2
            c_in = int(c_out)
            if size < 1:
                raise ValueError(
                    f"Discriminator3D: spatial_size {spatial_size} is too small for {len(channels)} blocks"
                )
        self.features = nn.Sequential(*blocks)
        self.flat_features = c_in * size**3
        self.head = nn.Linear(self.flat_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1)`` (real > 0) for volumes ``(B, C, S, S, S)``."""
        return self.head(self.features(x).flatten(1))


class ThreeDGANGenerator(nn.Module):
    """3D-GAN baseline generator (Wu et al. 2016 as in the 3DGAUnet repository): ``z`` (B, latent_dim) seen as a
    1-voxel volume -> 4 x [ConvTranspose3d k4 s2 -> BatchNorm3d -> ReLU] -> ConvTranspose3d k4 s2 -> Sigmoid.

    Spatial sizes 1 -> 4 -> 8 -> 16 -> 32 -> 64 for S=64 (first layer padding 0) and 1 -> 2 -> 4 -> 8 -> 16 -> 32 for
    S=32 (first layer padding 1).

    Args:
        spatial_size: 32 or 64.
        latent_dim: length of ``z``.
        latent_std: standard deviation of ``z`` (repository: 0.33).
        channels: output channels of the four hidden layers.

    Raises:
        ValueError: when ``spatial_size`` is not 32 or 64.
    """

    def __init__(
        self,
        spatial_size: int = 64,
        latent_dim: int = 256,
        latent_std: float = 0.33,
        channels: Sequence[int] = (256, 128, 64, 32),
    ) -> None:
        super().__init__()
        if int(spatial_size) not in (32, 64):
            raise ValueError(f"ThreeDGANGenerator: spatial_size must be 32 or 64, got {spatial_size}")
        self.spatial_size = int(spatial_size)
        self.latent_dim = int(latent_dim)
        self.latent_std = float(latent_std)
        self.noise = "vector"
        layers: list[nn.Module] = []
        c_in = self.latent_dim
        for i, c_out in enumerate(channels):
            padding = (0 if self.spatial_size == 64 else 1) if i == 0 else 1
            layers += [
                nn.ConvTranspose3d(c_in, int(c_out), kernel_size=4, stride=2, padding=padding, bias=False),
                nn.BatchNorm3d(int(c_out)),
                nn.ReLU(inplace=True),
            ]
            c_in = int(c_out)
        layers += [nn.ConvTranspose3d(c_in, 1, kernel_size=4, stride=2, padding=1, bias=False), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample's latent vector."""
        return (self.latent_dim,)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` (B, latent_dim) to volumes ``(B, 1, S, S, S)`` in [0, 1]."""
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1, 1))


class ThreeDGANDiscriminator(nn.Module):
    """3D-GAN baseline discriminator: 4 x [Conv3d k4 s2 p1 -> BatchNorm3d -> LeakyReLU 0.2] -> Conv3d k4 s2 -> logit.

    Spatial sizes 64 -> 32 -> 16 -> 8 -> 4 -> 1 (last padding 0) or 32 -> ... -> 2 -> 1 (last padding 1).

    Args:
        spatial_size: 32 or 64.
        channels: output channels of the four hidden layers.
        negative_slope: LeakyReLU slope.

    Raises:
        ValueError: when ``spatial_size`` is not 32 or 64.
    """

    def __init__(
        self, spatial_size: int = 64, channels: Sequence[int] = (32, 64, 128, 256), negative_slope: float = 0.2
    ) -> None:
        super().__init__()
        if int(spatial_size) not in (32, 64):
            raise ValueError(f"ThreeDGANDiscriminator: spatial_size must be 32 or 64, got {spatial_size}")
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            layers += [
                nn.Conv3d(c_in, int(c_out), kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm3d(int(c_out)),
                nn.LeakyReLU(negative_slope, inplace=True),
            ]
            c_in = int(c_out)
        layers.append(nn.Conv3d(c_in, 1, kernel_size=4, stride=2, padding=0 if int(spatial_size) == 64 else 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1)`` for volumes ``(B, 1, S, S, S)``."""
        return self.net(x).flatten(1)


BATCHNORM_MODES = ("eval", "train")


def batchnorm_eval_mode(bn_mode: str) -> bool:
    """Whether a generator samples with BatchNorm in eval mode (running statistics; ``"eval"``) or with each batch's
    statistics (``"train"``), the ``bn_mode`` option of ``configs/inference.json``.

    Raises:
        ValueError: for another value.
    """
    if bn_mode not in BATCHNORM_MODES:
        raise ValueError(f"bn_mode must be one of {BATCHNORM_MODES}, got {bn_mode!r}")
    return bn_mode == "eval"
