"""``sample_fn`` of :class:`ctsynth.engines.SeededSampler` for CT-SGAN and the 3D-GAN baseline.

Every random input of sample ``k`` (CT-SGAN: z_C, the R_v inputs and its initial state; baseline: z) is drawn from
``generators[k]`` alone, so a volume depends only on ``(seed, index)``, never on the batch size or the chunking.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ctsynth.engines import seeded_randn

__all__ = ["VolumeSampleFn"]


class VolumeSampleFn:
    """Draw a network's random inputs from per-sample generators and return whole volumes.

    The network exposes ``input_shapes()`` (name -> shape of one sample's input, in call order) and
    ``generate_volume(*inputs)`` (:class:`~scripts.networks.CTSGANGenerator`: R_v over every step, G_slice over the
    ``depth - 2`` 3D slices in chunks, assembly; :class:`~scripts.networks.Baseline3DGenerator`: generation at
    128^3 and resize).

    Args:
        network: the generator, in eval mode.
        chunk_size: 3D slices (CT-SGAN) or volumes (baseline) per forward pass; None keeps the network's.
        autocast_dtype: optional autocast dtype of the forward passes (``torch.bfloat16``).
    """

    def __init__(
        self, network: nn.Module, chunk_size: int | None = None, autocast_dtype: torch.dtype | None = None
    ) -> None:
        self.network = network
        if chunk_size is not None:
            network.chunk_size = max(1, int(chunk_size))
        self.autocast_dtype = autocast_dtype

    def __call__(self, generators: Sequence[torch.Generator], device: torch.device) -> torch.Tensor:
        inputs = [seeded_randn(generators, shape, device=device) for shape in self.network.input_shapes().values()]
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=torch.device(device).type,
                dtype=self.autocast_dtype or torch.float32,
                enabled=self.autocast_dtype is not None,
            ),
        ):
            return self.network.generate_volume(*inputs).float()
