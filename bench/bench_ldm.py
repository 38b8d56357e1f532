"""Benchmark of the abdominal CT LDM bundle at the thesis's sizes (not a test).

Phases, each in a fresh spawned process so its peak memory is its own (CPU: peak RSS of the process; CUDA:
``torch.cuda.max_memory_allocated``):

- ``ae_step``: one stage-1 iteration (AutoencoderKL 64/128/256 + PatchDiscriminator, 112x128x80 patches, batch 2,
  5 discriminator updates + 1 autoencoder update, L1 + KL + adversarial; the perceptual term is left out because its
  ResNet-50 needs torchvision and downloaded weights);
- ``dm_step``: one stage-2 iteration (frozen encoder on 144x176x112, DiffusionModelUNet 256/256/512 on 8x36x44x28
  latents, batch 4 or ``--dm_batch_size``, MSE + Adam);
- ``unet_step``: one DDIM denoising step for one sample (UNet forward, batch 1); a 50-step sample is extrapolated as
  50 x this (stated as extrapolated in the output);
- ``decode`` / ``decode_tiled``: decoding one 8x36x44x28 latent to 144x176x112 at once, or with a sliding window of
  18x22x14 latent voxels (overlap 0.25, Gaussian blending), the memory-saving option of inference.json.

``--amp`` adds bf16-autocast runs of the sampling phases. Load averages (1 min) are printed before and after each
phase: the machine is shared and the times scale with it.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_ldm.py [--device cpu] [--amp] [--phases ae_step dm_step ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

PATCH, ROI, LATENT = (112, 128, 80), (144, 176, 112), (8, 36, 44, 28)
PHASES = ("unet_step", "decode", "decode_tiled", "ae_step", "dm_step")


def _autoencoder():
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(
        spatial_dims=3, in_channels=1, out_channels=1, latent_channels=8, channels=(64, 128, 256), num_res_blocks=2,
        norm_num_groups=32, norm_eps=1e-6, attention_levels=(False, False, False), with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False, include_fc=False,
    )  # fmt: skip


def _unet():
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=3, in_channels=8, out_channels=8, channels=(256, 256, 512), attention_levels=(False, True, True),
        num_head_channels=(0, 64, 64), num_res_blocks=2, include_fc=False, use_combined_linear=False,
    )  # fmt: skip


def _run_phase(phase: str, device_name: str, amp: bool, ae_batch: int = 2, dm_batch: int = 4) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from monai.inferers import SlidingWindowInferer
    from monai.losses import PatchAdversarialLoss
    from monai.networks.nets import PatchDiscriminator

    torch.manual_seed(0)
    device = torch.device(device_name)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if phase == "ae_step":
        ae, disc = _autoencoder().to(device), PatchDiscriminator(3, 32, 1, num_layers_d=3, norm="INSTANCE").to(device)
        opt_g, opt_d = torch.optim.Adam(ae.parameters(), 1e-5), torch.optim.Adam(disc.parameters(), 1e-5)
        adv = PatchAdversarialLoss(criterion="least_squares")
        x = torch.rand(ae_batch, 1, *PATCH, device=device)

        def step() -> None:
            with ctx:
                recon, mu, sigma = ae(x)
            for _ in range(5):
                with ctx:
                    logits = disc(torch.cat([recon.detach(), x]))[-1].float().split(ae_batch)
                    d_loss = 0.05 * (adv(logits[0], False, True) + adv(logits[1], True, True))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            with ctx:
                kl = (
                    0.5 * torch.sum(mu.float() ** 2 + sigma.float() ** 2 - torch.log(sigma.float() ** 2) - 1) / ae_batch
                )
                g_loss = F.l1_loss(recon.float(), x) + 1e-7 * kl + 0.1 * adv(disc(recon)[-1].float(), True, False)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()

    elif phase == "dm_step":
        from monai.inferers import LatentDiffusionInferer
        from monai.networks.schedulers import DDPMScheduler

        ae, unet = _autoencoder().to(device).eval(), _unet().to(device)
        inferer = LatentDiffusionInferer(
            DDPMScheduler(1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195), scale_factor=1.0
        )
        opt = torch.optim.Adam(unet.parameters(), 1e-5)
        x = torch.rand(dm_batch, 1, *ROI, device=device)

        def step() -> None:
            noise = torch.randn(dm_batch, *LATENT, device=device)
            t = torch.randint(0, 1000, (dm_batch,), device=device)
            with ctx:
                pred = inferer(x, ae, unet, noise, t)
            loss = F.mse_loss(pred.float(), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    elif phase == "unet_step":
        unet = _unet().to(device).eval()
        z = torch.randn(1, *LATENT, device=device)

        @torch.no_grad()
        def step() -> None:
            with ctx:
                unet(z, timesteps=torch.tensor([500], device=device))

    elif phase in ("decode", "decode_tiled"):
        ae = _autoencoder().to(device).eval()
        z = torch.randn(1, *LATENT, device=device)
        window = SlidingWindowInferer(roi_size=(18, 22, 14), sw_batch_size=1, overlap=0.25, mode="gaussian")

        @torch.no_grad()
        def step() -> None:
            with ctx:
                out = ae.decode_stage_2_outputs(z) if phase == "decode" else window(z, ae.decode_stage_2_outputs)
            assert tuple(out.shape[2:]) == ROI

    else:
        raise ValueError(f"unknown phase {phase!r}; one of {PHASES}")

    if device.type == "cuda":
        step()  # warm-up (kernels, allocator); on the CPU a single timed run keeps the benchmark within minutes
        torch.cuda.reset_peak_memory_stats()
    load_before = os.getloadavg()[0]
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    seconds = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {
        "phase": phase,
        "amp": "bf16" if amp else "fp32",
        "seconds": round(seconds, 2),
        "peak_gib": round(peak, 2),
        "peak_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
        "threads": torch.get_num_threads(),
        "batch": {"ae_step": ae_batch, "dm_step": dm_batch}.get(phase, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="also run the sampling phases under bf16 autocast")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--ae_batch_size", type=int, default=2, help="stage-1 batch (thesis bundle: 2)")
    parser.add_argument("--dm_batch_size", type=int, default=4, help="stage-2 batch (thesis: 4)")
    parser.add_argument("--bf16_only", action="store_true", help="only the bf16 runs of the sampling phases")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    runs = [] if args.bf16_only else [(p, False) for p in args.phases]
    if args.amp or args.bf16_only:
        runs += [(p, True) for p in args.phases if p in ("unet_step", "decode", "decode_tiled")]
    results = []
    for phase, amp in runs:
        # a fresh process per phase; a process killed by the kernel (out of memory) is reported, not waited for
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            future = pool.submit(_run_phase, phase, args.device, amp, args.ae_batch_size, args.dm_batch_size)
            try:
                res = future.result()
            except BrokenProcessPool:
                res = {"phase": phase, "amp": "bf16" if amp else "fp32", "error": "process died (out of memory?)"}
        results.append(res)
        print(json.dumps(res), flush=True)
    summary = {}
    for amp in ("fp32", "bf16"):
        by = {r["phase"]: r["seconds"] for r in results if r["amp"] == amp and "seconds" in r}
        if "unet_step" in by and "decode" in by:
            summary[f"sample_ddim50_{amp}_extrapolated_s"] = round(50 * by["unet_step"] + by["decode"], 1)
    print(json.dumps({"device": args.device, **summary}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"results": results, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
