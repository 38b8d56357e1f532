"""Benchmark of the chest_ct_sgan bundle (not a test): the paper's memory claim (Sec. 1-2: a recurrent slice generator
"has a very small memory footprint" next to 3D convolutions), measured.

For each case one training iteration (n_critic = 1, WGAN-GP on every critic, Adam) runs in a fresh subprocess, after
one warm-up iteration, and the peak memory is read:

- ``ctsgan``: CT-SGAN at 224^3 with the bundle's default networks (R_v BiLSTM over 222 steps, G_slice 512-32 widths,
  D_slice, D_slab), batch 2, slabs of T = 16 slices, N = 4 slices per slab for D_slice;
- ``baseline224``: the 3D DCGAN baseline generating 224^3 directly, with the 128^3 baseline's top widths and one
  level more (generator 512-32, critic 32-512), batch 2;
- ``baseline224_narrow``: the same with half the widths (generator 256-16, critic 16-256), a lower bound;
- ``baseline128``: the paper's baseline at 128^3 (the bundle's baseline_3dgan.json defaults), batch 2;
- ``baseline224_ckpt``: ``baseline224`` with its whole generator under activation checkpointing (the same
  ``ctsynth.engines.checkpoint_module`` CT-SGAN's ``checkpoint_slices`` uses), for a like-for-like comparison.

Peak memory of a steady-state iteration (the figure compared; after the warm-up, which creates the Adam states):

- GPU: ``torch.cuda.max_memory_allocated`` over the iteration;
- CPU: the same quantity counted from the allocator: the bytes held when the iteration starts (weights, gradients,
  Adam states) plus the highest growth of allocated bytes during it, read from the ``[memory]`` events of
  ``torch.profiler`` (``profile_memory=True``; one extra iteration, not timed). Printed beside it: the growth of the
  process's peak resident set (``ru_maxrss``) over the resident set after building the networks, a coarser figure
  that also counts the warm-up and what the C allocator keeps after freeing.

``--checkpoint-slices`` decodes the CT-SGAN slab with activation checkpointing (the bundle's ``train.json`` default);
``--no-checkpoint-slices`` without. Also printed: the time per iteration (after the warm-up, without the profiler) and
the time to sample one 224^3 CT-SGAN volume (eval mode, 222 "3D slices" decoded in chunks of 16).

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python bench/bench_ctsgan.py [--device cpu] [--cases ...] [--batch 2] [--slab 16]
        [--no-checkpoint-slices]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "chest_ct_sgan"
CASES = ("ctsgan", "baseline224", "baseline224_narrow", "baseline128", "baseline224_ckpt")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def checkpointed(generator):
    """``generator`` with its whole forward pass under activation checkpointing (same ``random_inputs``)."""
    import torch

    from ctsynth.engines import checkpoint_module

    class CheckpointedGenerator(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def random_inputs(self, n: int, device):
            return self.inner.random_inputs(n, device)

        def forward(self, *inputs):
            return checkpoint_module(self.inner, *inputs)

    return CheckpointedGenerator(generator)


def build(case: str, device, batch_size: int = 2, slab: int = 16, checkpoint_slices: bool = True):
    """Networks, optimisers, a trainer and one batch for a case."""
    import torch

    from scripts import gan, networks

    n = networks
    if case == "ctsgan":
        nets = {
            "generator": n.CTSGANGenerator(checkpoint_slices=checkpoint_slices),
            "slice_critic": n.SliceCritic(),
            "slab_critic": n.SlabCritic(),
        }
        batch = {
            "image": torch.rand(batch_size, 1, 224, 224, slab + 2) * 2 - 1,
            "slab_start": torch.arange(batch_size) * 50,
        }
        cls, kwargs = gan.CTSGANTrainer, {"slices_per_slab": 4}
    else:
        size = 128 if case == "baseline128" else 224
        g_ch, d_ch = {
            "baseline128": ((256, 128, 64, 32), (32, 64, 128, 256)),  # baseline_3dgan.json defaults
            "baseline224": ((512, 256, 128, 64, 32), (32, 64, 128, 256, 512)),  # the same top widths, one level more
            "baseline224_narrow": ((256, 128, 64, 32, 16), (16, 32, 64, 128, 256)),  # half the widths
        }[case.removesuffix("_ckpt")]
        generator = n.Baseline3DGenerator(gen_size=size, output_size=size, channels=g_ch)
        nets = {
            "generator": checkpointed(generator) if case.endswith("_ckpt") else generator,
            "critic": n.Baseline3DCritic(size, d_ch),
        }
        batch = {"image": torch.rand(batch_size, 1, size, size, size) * 2 - 1}
        cls, kwargs = gan.Baseline3DGANTrainer, {}
    nets = {k: v.to(device) for k, v in nets.items()}
    opts = {k: torch.optim.Adam(v.parameters(), 1e-4, betas=(0.0, 0.9)) for k, v in nets.items()}
    batch = {k: v.to(device) for k, v in batch.items()}
    trainer = cls(device, 1, [batch], nets, opts, n_critic=1, **kwargs)
    return trainer, batch


def held_bytes(trainer) -> int:
    """Bytes of the tensors a trainer holds between iterations: weights, gradients and optimiser states."""
    import torch

    total = 0
    for net in trainer.networks.values():
        for p in net.parameters():
            total += p.numel() * p.element_size()
            if p.grad is not None:
                total += p.grad.numel() * p.grad.element_size()
    for opt in trainer.optimizers.values():
        for state in opt.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return total


def allocator_peak_growth(step) -> tuple[int, int]:
    """``(highest growth, final growth)`` in bytes of the CPU allocator's live bytes while ``step()`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak, live


def worker(case: str, device_name: str, batch_size: int = 2, slab: int = 16, checkpoint_slices: bool = True) -> dict:
    """One case in this process: setup, warm-up iteration, timed iteration, peak memory."""
    import torch

    torch.manual_seed(0)
    device = torch.device(device_name)
    trainer, batch = build(case, device, batch_size, slab, checkpoint_slices)
    trainer.state.device = device
    rss_setup = _rss_mb()
    params = {k: sum(p.numel() for p in v.parameters()) for k, v in trainer.networks.items()}
    trainer.train_step(batch)  # warm-up (allocator, Adam states)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {"case": case, "device": device_name, "batch": batch_size, "parameters": params}
    out["slab_slices"] = slab if case == "ctsgan" else None
    out["checkpoint_slices"] = checkpoint_slices if case == "ctsgan" else None
    out["iteration_s"] = round(seconds, 2)
    if device.type == "cuda":
        out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        out["setup_rss_mb"] = round(rss_setup, 1)
        out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        out["peak_rss_growth_mb"] = round(_peak_rss_mb() - rss_setup, 1)
        held = held_bytes(trainer)
        growth, final = allocator_peak_growth(lambda: trainer.train_step(batch))
        out["held_mb"] = round(held / 2**20, 1)
        out["step_peak_growth_mb"] = round(growth / 2**20, 1)
        out["peak_memory_mb"] = round((held + growth) / 2**20, 1)
    if case == "ctsgan":
        gen = trainer.networks["generator"].eval()
        with torch.no_grad():
            inputs = gen.random_inputs(1, device)
            gen(*inputs)  # warm-up
            t0 = time.perf_counter()
            volume = gen(*inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
        out["sample_224_volume_s"] = round(time.perf_counter() - t0, 2)
        out["sample_shape"] = list(volume.shape)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    parser.add_argument("--batch", type=int, default=2, help="volumes per batch (every case)")
    parser.add_argument("--slab", type=int, default=16, help="CT-SGAN slab length T")
    parser.add_argument(
        "--checkpoint-slices",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CT-SGAN slab decoding with activation checkpointing (train.json's default)",
    )
    args = parser.parse_args(argv)
    if args.worker:
        sys.path[:0] = [str(BUNDLE), str(REPO / "common")]
        print(json.dumps(worker(args.worker, args.device, args.batch, args.slab, args.checkpoint_slices)))
        return 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BUNDLE), str(REPO / "common")]))
    results = []
    for case in args.cases:
        load = os.getloadavg()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", case, "--device", args.device, "--batch", str(args.batch)]
            + ["--slab", str(args.slab), "--checkpoint-slices" if args.checkpoint_slices else "--no-checkpoint-slices"],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            print(f"{case}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["load_average_before"] = [round(v, 2) for v in load]
        results.append(result)
        print(json.dumps(result))
    by = {r["case"]: r for r in results}
    if "ctsgan" in by and "baseline224" in by:
        ratio = by["ctsgan"]["peak_memory_mb"] / by["baseline224"]["peak_memory_mb"]
        print(f"CT-SGAN / 3D GAN at 224^3 peak training memory: {ratio:.3f} (goal: <= 0.25)")
        if "peak_rss_growth_mb" in by["ctsgan"]:
            rss = by["ctsgan"]["peak_rss_growth_mb"] / by["baseline224"]["peak_rss_growth_mb"]
            print(f"the same from the peak resident-set growth (coarser): {rss:.3f}")
    print(f"load average after: {[round(v, 2) for v in os.getloadavg()]}, cpus: {os.cpu_count()}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
