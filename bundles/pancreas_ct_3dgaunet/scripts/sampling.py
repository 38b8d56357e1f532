"""Sampling of trained 3DGAUnet generators: N cubes as NIfTI in HU at 1 mm, deterministic per sample index,
with PNG previews of the first few.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ctsynth.data.io import save_volume, write_json_atomic
from ctsynth.engines.checkpoints import load_checkpoint
from ctsynth.engines.seeding import seeded_noise
from ctsynth.transforms.intensity import unwindow_hu

__all__ = ["load_generator", "CubeSampler"]

logger = logging.getLogger(__name__)


def load_generator(
    network: nn.Module, ckpt_path: str | os.PathLike, device: str | torch.device = "cpu", model: str = "tumor"
) -> nn.Module:
    """Load generator weights (key ``generator`` of a training checkpoint, or a bare state_dict) and set eval mode.

    Args:
        network: the generator, built from the same config as in training.
        ckpt_path: checkpoint file (``models/model_<model>.pt`` or a training ``checkpoint_epoch=<n>.pt``).
        device: device to move the network to.
        model: "tumor" or "pancreas" (for the error message).

    Returns:
        The network on ``device`` in eval mode.

    Raises:
        FileNotFoundError: when ``ckpt_path`` does not exist; the message says how to train and select weights.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained weights at {path.resolve()}; train first with `python -m monai.bundle run --config_file "
            f"configs/train.json --model {model}`, then pick a checkpoint with `python -m scripts.checkpoint_selection "
            f"--run_dir runs/{model} --out {path}` "
            f"(or pass --ckpt_path runs/{model}/checkpoints/checkpoint_epoch=<n>.pt)"
        )
    load_checkpoint(path, {"generator": network}, map_location="cpu")
    return network.to(device).eval()


class CubeSampler:
    """Draw ``num_samples`` cubes from a generator and write them as NIfTI in HU (affine diag(1, 1, 1) by default).

    Sample ``i`` uses noise from a generator seeded by ``(seed, i)``, so it is the same whatever ``batch_size``.

    Args:
        generator: the generator (input ``(B, *latent_shape)``, output ``(B, 1, S, S, S)`` in [0, 1]).
        output_dir: destination folder (``<prefix>_<i:04d>.nii.gz``, ``previews/``, ``samples.json``).
        num_samples: number of cubes.
        latent_shape: shape of one sample's noise.
        latent_std: standard deviation of the noise.
        seed: sampling seed.
        batch_size: cubes per forward pass.
        hu_window: the training window; outputs in [0, 1] are mapped back to it.
        spacing_mm: voxel spacing written to the affine.
        prefix: file-name prefix.
        num_previews: PNG previews of the first N samples (0: none).
        device: device of the forward passes.
    """

    def __init__(
        self,
        generator: nn.Module,
        output_dir: str | os.PathLike,
        num_samples: int = 500,
        latent_shape: Sequence[int] = (1, 32, 32, 32),
        latent_std: float = 1.0,
        seed: int = 0,
        batch_size: int = 8,
        hu_window: Sequence[float] = (-100.0, 170.0),
        spacing_mm: float = 1.0,
        prefix: str = "sample",
        num_previews: int = 4,
        device: str | torch.device = "cpu",
    ) -> None:
        if int(num_samples) < 1 or int(batch_size) < 1:
            raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}")
        self.generator = generator
        self.output_dir = Path(output_dir)
        self.num_samples = int(num_samples)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.latent_std = float(latent_std)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        self.spacing_mm = float(spacing_mm)
        self.prefix = prefix
        self.num_previews = int(num_previews)
        self.device = device

    @torch.no_grad()
    def run(self) -> list[Path]:
        """Generate and write all samples.

        Returns:
            The written NIfTI paths, in sample order.
        """
        self.generator.eval()
        affine = np.diag([self.spacing_mm] * 3 + [1.0])
        written: list[Path] = []
        for start in range(0, self.num_samples, self.batch_size):
            indices = list(range(start, min(start + self.batch_size, self.num_samples)))
            z = seeded_noise(self.latent_shape, self.seed, indices, std=self.latent_std, device=self.device)
            volumes = self.generator(z).float().cpu().numpy()
            for i, vol in zip(indices, volumes, strict=True):
                hu = unwindow_hu(np.clip(vol[0], 0.0, 1.0), *self.hu_window).astype(np.float32)
                written.append(save_volume(hu, affine, self.output_dir / f"{self.prefix}_{i:04d}.nii.gz"))
            logger.info("sampled %d/%d", indices[-1] + 1, self.num_samples)
        previews = self._previews(written[: self.num_previews])
        index = {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "hu_window": list(self.hu_window),
            "files": [p.name for p in written],
            "previews": [str(p.relative_to(self.output_dir)) for p in previews],
        }
        write_json_atomic(index, self.output_dir / "samples.json")
        return written

    def _previews(self, paths: Sequence[Path]) -> list[Path]:
        try:
            from ctsynth.report.previews import save_preview_from_files
        except ImportError:  # previews are optional extras of sampling
            logger.warning("ctsynth.report.previews not available: no PNG previews written")
            return []
        return [
            save_preview_from_files(
                p, self.output_dir / "previews" / p.name.replace(".nii.gz", ".png"), window=self.hu_window
            )
            for p in paths
        ]
