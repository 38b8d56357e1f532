"""Networks of CT-SGAN (Pesaranghader et al., MICCAI DGM workshop 2021, Sec. 2 and Fig. 2) and of the plain 3D GAN
baseline of its Table 1.

CT-SGAN has four sub-networks: the recurrent code network R_v (a BiLSTM fed with random inputs), the slice generator
G_slice (a 2D generator of "3D slices", 3 adjacent axial slices as channels, shared across positions), the slice critic
D_slice and the slab critic D_slab. The paper gives no layer list; the layers here follow DCGAN-style conventions and
every width is an argument (the bundle's ``docs/README.md`` lists the choices).

Volumes are channel-first RAS tensors ``(B, 1, X, Y, Z)`` with Z the axial (slice) axis, as written by
:class:`ctsynth.transforms.chest.ChestTo224d`. A "3D slice" at step ``j`` (0-based, ``j = 0 .. Z-3``) holds the axial
slices ``j, j+1, j+2`` as channels; its centre slice is ``j + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ctsynth.engines import checkpoint_module

__all__ = [
    "SliceCodeRNN",
    "SliceGenerator",
    "CTSGANGenerator",
    "SliceCritic",
    "SlabCritic",
    "Baseline3DGenerator",
    "Baseline3DCritic",
    "assemble_volume",
    "count_parameters",
]


def count_parameters(net: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a network."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def _power_of_two_base(size: int, n_up: int, what: str) -> int:
    """Edge of the first feature map so that ``n_up`` stride-2 up-samplings reach ``size``."""
    size = int(size)
    if n_up < 1 or size % (2**n_up) or size < 2**n_up:
        raise ValueError(f"{what}: size {size} must be a positive multiple of 2**{n_up} (one doubling per layer)")
    return size // 2**n_up


def assemble_volume(slices: torch.Tensor) -> torch.Tensor:
    """Pile "3D slices" into a volume: the centre channels, plus the outer channels of the first and the last.

    Sec. 2 of the paper: "the collection of center slices form a volume ... the first and the last 1D slices in the
    volumes are the neighbors of their associate 3D slices", so ``L`` 3D slices give ``L + 2`` axial slices.

    Args:
        slices: ``(B, L, 3, X, Y)`` 3D slices in step order.

    Returns:
        ``(B, 1, X, Y, L + 2)`` volume.

    Raises:
        ValueError: when the slices do not have 3 channels.
    """
    if slices.ndim != 5 or slices.shape[2] != 3:
        raise ValueError(f"expected 3D slices (B, L, 3, X, Y), got {tuple(slices.shape)}")
    stack = torch.cat([slices[:, :1, 0], slices[:, :, 1], slices[:, -1:, 2]], dim=1)  # (B, L + 2, X, Y)
    return stack.permute(0, 2, 3, 1).unsqueeze(1)


class SliceCodeRNN(nn.Module):
    """R_v: a one-layer bidirectional LSTM over the slice sequence, fed with random inputs ``eps_j`` and a random
    initial state ``(h_0, c_0)``; its output at step ``j`` (both directions concatenated) is the slice code.

    Args:
        noise_dim: size of ``eps_j``.
        hidden_size: hidden units per direction (the code has ``2 * hidden_size`` entries).
    """

    def __init__(self, noise_dim: int = 32, hidden_size: int = 32) -> None:
        super().__init__()
        self.noise_dim, self.hidden_size = int(noise_dim), int(hidden_size)
        self.lstm = nn.LSTM(self.noise_dim, self.hidden_size, num_layers=1, batch_first=True, bidirectional=True)

    @property
    def code_dim(self) -> int:
        return 2 * self.hidden_size

    def forward(self, noise: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """
        Args:
            noise: ``(B, L, noise_dim)`` random inputs.
            state: ``(B, 2, 2, hidden_size)``: ``[:, 0]`` = h_0, ``[:, 1]`` = c_0, each for both directions.

        Returns:
            ``(B, L, 2 * hidden_size)`` slice codes.
        """
        h0 = state[:, 0].transpose(0, 1).contiguous()
        c0 = state[:, 1].transpose(0, 1).contiguous()
        out, _ = self.lstm(noise, (h0, c0))
        return out


class SliceGenerator(nn.Module):
    """G_slice: code vector -> one "3D slice" ``(3, size, size)`` in [-1, 1] (DCGAN-style).

    ``Linear(in_dim -> c_0 * b * b)`` -> BatchNorm2d -> ReLU, then ``ConvTranspose2d(k4, s2, p1, bias=False)`` ->
    BatchNorm2d -> ReLU between consecutive ``channels``, then ``ConvTranspose2d(c_last -> out_channels, k4, s2, p1)``
    -> Tanh; ``b = size / 2**len(channels)`` (224 with 5 widths: 7 -> 14 -> 28 -> 56 -> 112 -> 224).

    Args:
        in_dim: length of the input code (patient code + slice code).
        size: output edge in pixels.
        channels: feature widths, one per up-sampling but the last.
        out_channels: channels of a "3D slice" (3 adjacent slices).

    Raises:
        ValueError: when ``size`` is not a multiple of ``2**len(channels)``.
    """

    def __init__(
        self, in_dim: int, size: int = 224, channels: Sequence[int] = (512, 256, 128, 64, 32), out_channels: int = 3
    ) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        self.size, self.base = int(size), _power_of_two_base(size, len(ch), "SliceGenerator")
        self.fc = nn.Linear(int(in_dim), ch[0] * self.base * self.base)
        layers: list[nn.Module] = [nn.BatchNorm2d(ch[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], int(out_channels), 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.first_channels = ch[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.first_channels, self.base, self.base)
        return self.net(x)


class CTSGANGenerator(nn.Module):
    """R_v + G_slice: random inputs -> "3D slices" at chosen steps (training) or a whole volume (sampling).

    The code of step ``j`` is ``[z_C ; R_v(eps)_j]``: the patient-specific code ``z_C ~ N(0, I)`` is drawn once per
    volume and repeated at every step (Sec. 2, "constant patient-specific subspace"); R_v always runs over all
    ``depth - 2`` steps (a few vectors), and G_slice decodes only the requested steps, so the training memory of a slab
    does not grow with the volume depth.

    Args:
        size: in-plane edge (224).
        depth: number of axial slices of the volume (224); ``depth - 2`` steps.
        content_dim: size of z_C.
        noise_dim: size of each random input of R_v.
        hidden_size: R_v hidden units per direction.
        channels: G_slice widths (see :class:`SliceGenerator`).
        chunk_size: steps decoded per G_slice call when a whole volume is generated.
        checkpoint_slices: in training, decode the slab with activation checkpointing
            (:func:`ctsynth.engines.checkpoint_module`): G_slice's activations are recomputed in the backward pass
            instead of kept, with its BatchNorm statistics updated once; same outputs and gradients, one extra
            G_slice forward per generator update, lower peak memory.

    Raises:
        ValueError: for a depth below 3 or an in-plane size G_slice cannot reach.
    """

    def __init__(
        self,
        size: int = 224,
        depth: int = 224,
        content_dim: int = 128,
        noise_dim: int = 32,
        hidden_size: int = 32,
        channels: Sequence[int] = (512, 256, 128, 64, 32),
        chunk_size: int = 16,
        checkpoint_slices: bool = False,
    ) -> None:
        super().__init__()
        if int(depth) < 3:
            raise ValueError(f"CTSGANGenerator: depth must be >= 3 (one 3D slice), got {depth}")
        self.size, self.depth, self.steps = int(size), int(depth), int(depth) - 2
        self.content_dim, self.chunk_size = int(content_dim), max(1, int(chunk_size))
        self.checkpoint_slices = bool(checkpoint_slices)
        self.rnn = SliceCodeRNN(noise_dim, hidden_size)
        self.slice_generator = SliceGenerator(self.content_dim + self.rnn.code_dim, size, channels)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of one sample's random inputs: z_C, the R_v inputs eps, and the R_v initial state (h_0, c_0)."""
        h = self.rnn.hidden_size
        return {"content": (self.content_dim,), "noise": (self.steps, self.rnn.noise_dim), "state": (2, 2, h)}

    def random_inputs(self, n: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
        """Gaussian random inputs ``(content, noise, state)`` for ``n`` volumes (global RNG)."""
        return tuple(torch.randn((n, *s), device=device) for s in self.input_shapes().values())

    def codes(self, content: torch.Tensor, noise: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``(B, depth - 2, content_dim + 2 * hidden)`` codes ``[z_C ; z_M,j]`` of every step."""
        motion = self.rnn(noise, state)
        return torch.cat([content[:, None, :].expand(-1, motion.shape[1], -1), motion], dim=-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, K, d)`` codes -> ``(B, K, 3, size, size)`` 3D slices (one G_slice call)."""
        b, k = codes.shape[:2]
        flat = codes.reshape(b * k, -1)
        if self.checkpoint_slices and self.training:
            slices = checkpoint_module(self.slice_generator, flat)
        else:
            slices = self.slice_generator(flat)
        return slices.view(b, k, -1, self.size, self.size)

    def forward(
        self, content: torch.Tensor, noise: torch.Tensor, state: torch.Tensor, steps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        Args:
            content: ``(B, content_dim)`` z_C.
            noise: ``(B, depth - 2, noise_dim)`` R_v inputs.
            state: ``(B, 2, 2, hidden)`` R_v initial state.
            steps: ``(B, K)`` step indices to decode (training); None for the whole volume.

        Returns:
            ``(B, K, 3, size, size)`` 3D slices when ``steps`` is given, else the ``(B, 1, size, size, depth)`` volume
            (decoded in chunks of ``chunk_size`` steps).
        """
        codes = self.codes(content, noise, state)
        if steps is not None:
            picked = torch.gather(codes, 1, steps[..., None].expand(-1, -1, codes.shape[-1]))
            return self.decode(picked)
        parts = [self.decode(codes[:, i : i + self.chunk_size]) for i in range(0, self.steps, self.chunk_size)]
        return assemble_volume(torch.cat(parts, dim=1))

    def generate_volume(self, content: torch.Tensor, noise: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The whole ``(B, 1, size, size, depth)`` volume (same interface as the baseline's)."""
        return self(content, noise, state)


class SliceCritic(nn.Module):
    """D_slice: one "3D slice" and its position -> score ("with respect to the slice position", Sec. 2).

    The position (step index scaled to [-1, 1]) enters as a constant extra input channel. ``Conv2d(k4, s2, p1)`` ->
    LeakyReLU(0.2) per width (no normalisation, as WGAN-GP requires), then ``Conv2d(c_last -> 1)`` with a kernel
    covering the remaining map.

    Args:
        size: input edge.
        channels: widths (224 with 5 widths: 224 -> 7, head kernel 7).
        in_channels: channels of a 3D slice.
        negative_slope: LeakyReLU slope.

    Raises:
        ValueError: when ``size`` is not a multiple of ``2**len(channels)``.
    """

    def __init__(
        self,
        size: int = 224,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        in_channels: int = 3,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        ch = [int(in_channels) + 1] + [int(c) for c in channels]
        last = _power_of_two_base(size, len(ch) - 1, "SliceCritic")
        layers: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(negative_slope, inplace=True)]
        layers.append(nn.Conv2d(ch[-1], 1, last))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, 3, size, size)`` 3D slices.
            position: ``(B,)`` positions in [-1, 1].

        Returns:
            ``(B, 1)`` scores.
        """
        pos = position.to(x.dtype).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return self.net(torch.cat([x, pos], dim=1)).flatten(1)


class SlabCritic(nn.Module):
    """D_slab: a slab of T consecutive axial slices ``(1, T, size, size)`` -> score.

    ``Conv3d(k (3, 4, 4), stride (1, 2, 2), p 1)`` -> LeakyReLU(0.2) per width (the slab depth is kept, the plane
    halves), then the mean over the remaining map and ``Linear(c_last -> 1)``; works for any T.

    Args:
        channels: widths.
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256, 512), negative_slope: float = 0.2) -> None:
        super().__init__()
        ch = [1] + [int(c) for c in channels]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            layers += [nn.Conv3d(c_in, c_out, (3, 4, 4), (1, 2, 2), 1), nn.LeakyReLU(negative_slope, inplace=True)]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(ch[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).mean(dim=(2, 3, 4)))


class Baseline3DGenerator(nn.Module):
    """The baseline of Table 1: a plain 3D DCGAN generating ``gen_size^3`` (128) volumes, resized to
    ``output_size^3`` (224) for sampling ("at the cost of losing details and diversity", Sec. 3).

    ``Linear(latent_dim -> c_0 b^3)`` -> BatchNorm3d -> ReLU, ``ConvTranspose3d(k4, s2, p1, bias=False)`` ->
    BatchNorm3d -> ReLU between widths, ``ConvTranspose3d(c_last -> 1, k4, s2, p1)`` -> Tanh;
    ``b = gen_size / 2**len(channels)``. Training runs at ``gen_size`` (:meth:`forward`); :meth:`generate_volume`
    adds the trilinear resize.

    Args:
        latent_dim: size of z.
        gen_size: generated edge.
        output_size: edge after the resize.
        channels: widths.
        chunk_size: volumes per forward pass in :meth:`generate_volume`.

    Raises:
        ValueError: when ``gen_size`` is not a multiple of ``2**len(channels)``.
    """

    def __init__(
        self,
        latent_dim: int = 200,
        gen_size: int = 128,
        output_size: int = 224,
        channels: Sequence[int] = (256, 128, 64, 32),
        chunk_size: int = 1,
    ) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        self.latent_dim, self.gen_size, self.output_size = int(latent_dim), int(gen_size), int(output_size)
        self.base, self.chunk_size = _power_of_two_base(gen_size, len(ch), "Baseline3DGenerator"), int(chunk_size)
        self.fc = nn.Linear(self.latent_dim, ch[0] * self.base**3)
        layers: list[nn.Module] = [nn.BatchNorm3d(ch[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            layers += [nn.ConvTranspose3d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose3d(ch[-1], 1, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.first_channels = ch[0]

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one sample's random input z."""
        return {"z": (self.latent_dim,)}

    def random_inputs(self, n: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
        return (torch.randn((n, self.latent_dim), device=device),)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> ``(B, 1, gen_size, gen_size, gen_size)``."""
        b = self.base
        return self.net(self.fc(z).view(z.shape[0], self.first_channels, b, b, b))

    def generate_volume(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> ``(B, 1, output_size^3)``: generated at ``gen_size`` then trilinearly resized."""
        out = [self(z[i : i + self.chunk_size]) for i in range(0, z.shape[0], self.chunk_size)]
        size = (self.output_size,) * 3
        return F.interpolate(torch.cat(out), size=size, mode="trilinear", align_corners=False).clamp(-1, 1)


class Baseline3DCritic(nn.Module):
    """Critic of the 3D-GAN baseline: ``Conv3d(k4, s2, p1)`` -> LeakyReLU(0.2) per width, then
    ``Conv3d(c_last -> 1)`` over the remaining map.

    Args:
        size: input edge.
        channels: widths.
        negative_slope: LeakyReLU slope.

    Raises:
        ValueError: when ``size`` is not a multiple of ``2**len(channels)``.
    """

    def __init__(
        self, size: int = 128, channels: Sequence[int] = (32, 64, 128, 256), negative_slope: float = 0.2
    ) -> None:
        super().__init__()
        ch = [1] + [int(c) for c in channels]
        last = _power_of_two_base(size, len(ch) - 1, "Baseline3DCritic")
        layers: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            layers += [nn.Conv3d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(negative_slope, inplace=True)]
        layers.append(nn.Conv3d(ch[-1], 1, last))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)
