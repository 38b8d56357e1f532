"""Benchmark of one 3DGAUnet GAN training iteration (D step + G step) at the paper's sizes, default widths.

Times the bundle's own ``GaUNetTrainer.train_step`` (the iteration ``configs/train.json`` runs on the shared
``ctsynth.engines.GenerativeTrainer``): generator forward on a noise volume, discriminator on real and fake batches,
BCE-with-logits losses, backward passes and Adam steps. Reports the median of ``--repeats`` iterations after one
warm-up, per cube size, on the chosen device (CPU here; pass ``--device cuda`` on a GPU machine, optionally ``--amp``
for bf16 autocast through the trainer's ``amp`` switch).

Usage::

    .venv/bin/python bench/bench_3dgaunet_step.py [--batch_size 8] [--repeats 3] [--device cpu] [--amp]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "pancreas_ct_3dgaunet"
sys.path.insert(0, str(BUNDLE))

from scripts.gan import GaUNetTrainer  # noqa: E402
from scripts.networks import Discriminator3D, UNetGenerator3D  # noqa: E402


def time_iteration(size: int, batch_size: int, repeats: int, device: torch.device, amp: bool) -> float:
    """Median seconds of one D + G iteration for ``size``^3 cubes."""
    torch.manual_seed(0)
    g, d = UNetGenerator3D(spatial_size=size).to(device), Discriminator3D(spatial_size=size).to(device)
    optimizers = {
        "generator": torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        "discriminator": torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999)),
    }
    reals = torch.rand(batch_size, 1, size, size, size, device=device)
    trainer = GaUNetTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=[{"image": reals}],
        networks={"generator": g, "discriminator": d},
        optimizers=optimizers,
        amp="bf16" if amp else None,
    )

    def step() -> None:
        trainer.train_step({"image": reals})

    step()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}")
    print("\n| model | cube | batch | s / iteration (median) |\n|---|---|---|---|")
    for model, size in (("tumor", 32), ("pancreas", 64)):
        seconds = time_iteration(size, args.batch_size, args.repeats, device, args.amp)
        print(f"| {model} | {size}^3 | {args.batch_size} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
