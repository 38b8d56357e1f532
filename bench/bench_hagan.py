"""Benchmark of the ct_pair_hagan HA-GAN (full-size networks): sampling one volume in eval mode, and one training
iteration, each with its peak memory (not a test).

Sampling variants of one ``S^3`` volume (batch 1, latent 1024, channel 32), before and after the optimisations:

- ``reference``: upsample-then-convolve as written in the HA-GAN code, fp32, ``torch.no_grad``;
- ``fused``: nearest x2 upsampling + 3x3x3 convolution as eight 2x2x2 sub-pixel convolutions
  (``scripts.networks.upsample_conv3d``), ``torch.inference_mode``;
- ``fused_cl``: + ``channels_last_3d`` memory format;
- ``fused_cl_bf16``: + bf16 autocast.

Training: one iteration of ``HAGANTrainer.train_step`` (D, G, E^H, E^G updates) at 128 and 256, batch 1, against a
plain 3D GAN step (the same generator producing the whole ``S^3`` volume, a 6-layer strided SN-conv discriminator on the
whole volume, D and G updates), which is what HA-GAN avoids; ``*_literal`` variants use the literal
upsample-then-convolve generator of the HA-GAN code instead of the sub-pixel form.

Every case runs in its own process, so the peak resident memory (``ru_maxrss``) is that case's alone; on a GPU
(``--device cuda``) the peak is ``torch.cuda.max_memory_allocated``. The 1-minute load average is printed with every
figure.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_hagan.py [--cases sample,train] [--size 256] [--repeats 3]
        [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ct_pair_hagan"
SAMPLE_VARIANTS = ("reference", "fused", "fused_cl", "fused_cl_bf16")
TRAIN_VARIANTS = ("hagan_128", "hagan_256", "plain_256", "hagan_256_literal", "plain_256_literal")


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB -> GB (Linux)


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak(device) -> dict:
    import torch

    if torch.device(device).type == "cuda":
        return {"peak_cuda_gb": torch.cuda.max_memory_allocated() / 1024**3, "peak_rss_gb": _peak_gb()}
    return {"peak_rss_gb": _peak_gb()}


def run_sample(variant: str, size: int, repeats: int, device: str = "cpu") -> dict:
    import torch

    from scripts.networks import HAGANGenerator

    torch.manual_seed(0)
    g = HAGANGenerator(size, fused_upsample=variant != "reference").eval().to(device)
    z = torch.randn(1, 1024, device=device)
    if variant.startswith("fused_cl"):
        g = g.to(memory_format=torch.channels_last_3d)
    ctx = torch.no_grad if variant == "reference" else torch.inference_mode
    amp = variant.endswith("bf16")
    base = _peak_gb()

    def once() -> float:
        _sync(device)
        t0 = time.perf_counter()
        with ctx(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            out = g(z)
        _sync(device)
        assert out.shape == (1, 1, size, size, size)
        return time.perf_counter() - t0

    once()  # warm-up
    times = [once() for _ in range(repeats)]
    return {"median_s": statistics.median(times), "times_s": times, **_peak(device), "rss_before_gb": base}


class PlainDiscriminator3D(__import__("torch").nn.Module):
    """Strided SN-conv discriminator on a whole S^3 volume (k4 s2 p1, 1->16->...->512, then k4 -> 1 logit)."""

    def __init__(self, size: int) -> None:
        import torch
        from torch.nn.utils.parametrizations import spectral_norm

        super().__init__()
        chans, layers, side = [1, 16, 32, 64, 128, 256, 512], [], size
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [spectral_norm(torch.nn.Conv3d(cin, cout, 4, 2, 1)), torch.nn.LeakyReLU(0.2)]
            side //= 2
        layers += [spectral_norm(torch.nn.Conv3d(512, 1, side, 1, 0)), torch.nn.Flatten()]
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def run_train(variant: str, repeats: int, device: str = "cpu") -> dict:
    import torch
    import torch.nn.functional as F

    from scripts.hagan import HAGANTrainer
    from scripts.networks import HAGANDiscriminator, HAGANEncoder, HAGANGenerator, HAGANSubEncoder

    torch.manual_seed(0)
    kind, size, *form = variant.split("_")
    size, fused = int(size), form != ["literal"]
    real = torch.rand(1, 1, size, size, size, device=device) * 2 - 1
    if kind == "hagan":
        nets = {
            "generator": HAGANGenerator(size, fused_upsample=fused),
            "discriminator": HAGANDiscriminator(size),
            "encoder": HAGANEncoder(),
            "sub_encoder": HAGANSubEncoder(size),
        }
        nets = {k: v.to(device) for k, v in nets.items()}
        opts = {k: torch.optim.Adam(v.parameters(), lr=1e-4, betas=(0.0, 0.999)) for k, v in nets.items()}
        trainer = HAGANTrainer(device=device, max_epochs=1, train_data_loader=[], networks=nets, optimizers=opts)
        trainer.state.device = torch.device(device)

        def step() -> None:
            trainer.train_step({"pair": real})

    else:
        g, d = HAGANGenerator(size, fused_upsample=fused).to(device), PlainDiscriminator3D(size).to(device)
        opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), lr=4e-4, betas=(0.0, 0.999))

        def bce(logits, target):
            return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

        def step() -> None:
            with torch.no_grad():
                fake = g(torch.randn(1, 1024, device=device))
            loss_d = bce(d(real), 1.0) + bce(d(fake), 0.0)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            for p in d.parameters():
                p.requires_grad_(False)
            loss_g = bce(d(g(torch.randn(1, 1024, device=device))), 1.0)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            for p in d.parameters():
                p.requires_grad_(True)

    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times[1:]), "times_s": times[1:], "warmup_s": times[0], **_peak(device)}


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BUNDLE))
    import torch

    load = os.getloadavg()[0]
    if args.case == "sample":
        result = run_sample(args.variant, args.size, args.repeats, args.device)
    else:
        result = run_train(args.variant, args.repeats, args.device)
    result.update(
        case=args.case,
        variant=args.variant,
        device=args.device,
        threads=torch.get_num_threads(),
        load_1min_before=load,
        load_1min_after=os.getloadavg()[0],
    )
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="sample,train")
    parser.add_argument("--size", type=int, default=256, help="sampling volume side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=None, help="comma-separated subset of the variants")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    results = []
    wanted = None if args.variants is None else set(args.variants.split(","))
    for case in args.cases.split(","):
        variants = SAMPLE_VARIANTS if case == "sample" else TRAIN_VARIANTS
        for variant in variants:
            if wanted is not None and variant not in wanted:
                continue
            cmd = [sys.executable, __file__, "--case", case, "--variant", variant, "--size", str(args.size),
                   "--repeats", str(args.repeats), "--device", args.device]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                result = {"case": case, "variant": variant, "error": (proc.stdout + proc.stderr)[-2000:]}
            else:
                result = json.loads(line[len("RESULT ") :])
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
