"""Stage 2 and sampling: what MONAI's ``SupervisedTrainer`` and ``LatentDiffusionInferer`` need around them.

Training runs on MONAI's ``SupervisedTrainer`` (no custom trainer): ``prepare_batch`` is a
``monai.engines.DiffusionPrepareBatch`` whose noise has the *latent* shape (:class:`LatentNoisePrepareBatch`), and the
inferer is ``LatentDiffusionInferer`` with the frozen autoencoder bound to it (:class:`BoundLatentDiffusionInferer`),
because the trainer calls ``inferer(images, network, noise=..., timesteps=...)``.

The scale factor is ``1 / std(z)`` of the sampled latents of the first training batch (BraTS LDM bundle
``compute_scale_factor``), taken from the dataset in order with a fixed sampling seed so that every DDP rank and every
resume gets the same number; it is stored in the checkpoints' run info and a resumed run reads it back
(:func:`stored_run_info`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import DiffusionPrepareBatch
from monai.inferers import DiffusionInferer, LatentDiffusionInferer, SlidingWindowInferer
from torch import nn

from ctsynth.engines import find_latest_checkpoint, read_run_info, seeded_randn

__all__ = [
    "stored_run_info",
    "compute_scale_factor",
    "latent_shape_of",
    "LatentNoisePrepareBatch",
    "BoundLatentDiffusionInferer",
    "LatentDiffusionSampleFn",
]


def stored_run_info(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """Run info of the newest readable checkpoint in ``ckpt_dir`` (``{}`` for a fresh run)."""
    path = find_latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    return read_run_info(path) if path else {}


def latent_shape_of(latent_channels: int, roi_size: Sequence[int], autoencoder_channels: Sequence[int]) -> list[int]:
    """``[C, *roi / 2^(levels - 1)]``: the AutoencoderKL downsamples once between consecutive levels.

    Raises:
        ValueError: when the size is not divisible by the downsampling factor.
    """
    factor = 2 ** (len(autoencoder_channels) - 1)
    if any(int(s) % factor for s in roi_size):
        raise ValueError(f"roi_size {list(roi_size)} must be divisible by the autoencoder's downsampling {factor}")
    return [int(latent_channels)] + [int(s) // factor for s in roi_size]


@torch.no_grad()
def compute_scale_factor(
    autoencoder: nn.Module, dataset: Sequence[dict], device: str | torch.device, batch_size: int, seed: int = 0
) -> float:
    """``1 / std`` of the sampled latents of the first ``batch_size`` training volumes (in dataset order).

    Args:
        autoencoder: the frozen first stage.
        dataset: the training dataset (items with ``"image"``).
        device: device of the autoencoder.
        batch_size: number of volumes (the training batch size).
        seed: seed of the latent sampling.

    Raises:
        ValueError: when the dataset is empty or the latents have zero spread.
    """
    n = min(int(batch_size), len(dataset))
    if n < 1:
        raise ValueError("the training dataset is empty; cannot compute the latent scale factor")
    images = torch.stack([torch.as_tensor(dataset[i]["image"]).float() for i in range(n)]).to(device)
    device = torch.device(device)
    # the latents are sampled (mu + sigma * eps): a fixed seed, without touching the run's RNG streams, gives every
    # DDP rank (seeded seed + rank) and every resume the same number
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        z = autoencoder.encode_stage_2_inputs(images)
    std = float(torch.std(z))
    if not std > 0:
        raise ValueError(f"the first batch's latents have std {std}; cannot scale them")
    return 1.0 / std


class LatentNoisePrepareBatch(DiffusionPrepareBatch):
    """``DiffusionPrepareBatch`` whose noise (the regression target) has the latent shape, not the image's.

    Args:
        num_train_timesteps: timesteps drawn uniformly from ``[0, num_train_timesteps)``.
        latent_shape: ``[C, *spatial]`` of one latent.
    """

    def __init__(self, num_train_timesteps: int, latent_shape: Sequence[int]) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps)
        self.latent_shape = tuple(int(s) for s in latent_shape)

    def get_noise(self, images: torch.Tensor) -> torch.Tensor:
        return torch.randn((images.shape[0], *self.latent_shape), device=images.device, dtype=torch.float32)


class BoundLatentDiffusionInferer(LatentDiffusionInferer):
    """``LatentDiffusionInferer`` with its autoencoder bound, callable as ``inferer(images, diffusion, noise, t)``.

    Args:
        scheduler: the training scheduler (DDPM).
        autoencoder: the frozen first stage.
        scale_factor: latent scale factor.
        autocast_dtype: ``torch.bfloat16`` to run the UNet under autocast (MONAI's trainer AMP is CUDA fp16 only);
            the prediction is returned in float32 for the loss.
    """

    def __init__(
        self,
        scheduler: nn.Module,
        autoencoder: nn.Module,
        scale_factor: float = 1.0,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(scheduler=scheduler, scale_factor=scale_factor)
        self.autoencoder = autoencoder
        self.autocast_dtype = autocast_dtype

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: nn.Module,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor | None = None,
        mode: str = "crossattn",
        seg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with torch.autocast(
            device_type=inputs.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            pred = super().__call__(inputs, self.autoencoder, diffusion_model, noise, timesteps, condition, mode, seg)
        return pred.float()


class LatentDiffusionSampleFn:
    """``sample_fn`` of :class:`ctsynth.engines.SeededSampler`: latent noise from the per-sample generators, DDIM
    denoising, decoding.

    Row ``k`` of the noise comes from ``generators[k]`` only and DDIM with ``eta = 0`` adds no noise, so sample ``i``
    depends only on ``(seed, i)``.

    Args:
        autoencoder: the frozen first stage.
        diffusion: the trained UNet.
        scheduler: the sampling scheduler (``DDIMScheduler``, eta 0).
        latent_shape: ``[C, *spatial]`` of one latent.
        scale_factor: latent scale factor of the training run.
        divide_by_scale_factor: decode ``z / scale_factor`` (``LatentDiffusionInferer.sample``); False decodes ``z``
            as the BraTS bundle's ``LDMSampler`` the thesis ran.
        num_inference_steps: denoising steps (50).
        pair_mode: the network emits ``[image, mask]``; the mask channel is thresholded at ``label_threshold``.
        label_threshold: threshold of the mask channel (training encodes the mask as 0/1).
        decode_roi_size: decode with a sliding window of this latent size (less memory); None decodes at once.
        decode_overlap: overlap of the decoding windows.
        autocast_dtype: optional autocast dtype (``torch.bfloat16``).
        progress: show a progress bar over the denoising steps.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        diffusion: nn.Module,
        scheduler: nn.Module,
        latent_shape: Sequence[int],
        scale_factor: float,
        divide_by_scale_factor: bool = True,
        num_inference_steps: int = 50,
        pair_mode: bool = False,
        label_threshold: float = 0.5,
        decode_roi_size: Sequence[int] | None = None,
        decode_overlap: float = 0.25,
        autocast_dtype: torch.dtype | None = None,
        progress: bool = False,
    ) -> None:
        self.autoencoder, self.diffusion, self.scheduler = autoencoder, diffusion, scheduler
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.scale_factor = float(scale_factor)
        self.divide_by_scale_factor = bool(divide_by_scale_factor)
        self.num_inference_steps = int(num_inference_steps)
        self.pair_mode, self.label_threshold = bool(pair_mode), float(label_threshold)
        self.decoder = (
            None
            if decode_roi_size is None
            else SlidingWindowInferer(
                roi_size=list(decode_roi_size), sw_batch_size=1, overlap=decode_overlap, mode="gaussian"
            )
        )
        self.autocast_dtype = autocast_dtype
        self.progress = progress

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode latents (already unscaled) at once or window by window."""
        if self.decoder is None:
            return self.autoencoder.decode_stage_2_outputs(latent)
        return self.decoder(latent, self.autoencoder.decode_stage_2_outputs)

    @torch.no_grad()
    def __call__(self, generators: Sequence[torch.Generator], device: torch.device) -> Any:
        noise = seeded_randn(generators, self.latent_shape, device=device)
        self.scheduler.set_timesteps(num_inference_steps=self.num_inference_steps)
        with torch.autocast(
            device_type=torch.device(device).type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            latent = DiffusionInferer(self.scheduler).sample(
                input_noise=noise, diffusion_model=self.diffusion, scheduler=self.scheduler, verbose=self.progress
            )
            if self.divide_by_scale_factor:
                latent = latent / self.scale_factor
            decoded = self.decode(latent).float()
        if not self.pair_mode:
            return decoded
        return {"image": decoded[:, :1], "label": (decoded[:, 1:2] > self.label_threshold).to(torch.uint8)}
