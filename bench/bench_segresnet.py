"""Benchmark of the ct_segresnet_downstream pipeline pieces on the CPU.

Times (median of ``--repeats`` after one warm-up): one training iteration of the ctsegresnet template's SegResNetDS
(DiceCE with deep supervision, AdamW step) on a ``--roi``^3 crop at the official template's width (32 filters,
blocks [1, 2, 2, 4, 4]) and at the smoke width (4 filters, [1, 1]); and the input checks of a study (reading and
checking ``--n`` real and ``--n`` synthetic 32^3 phantom pairs). A whole smoke study is timed by the test suite's
slow test and by ``make demo`` (see the bundle README).

Usage::

    .venv/bin/python bench/bench_segresnet.py [--roi 64] [--repeats 3] [--n 6] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks.nets import SegResNetDS

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ct_segresnet_downstream"
sys.path.insert(0, str(BUNDLE))

from scripts.datalists import prepare_inputs  # noqa: E402


def time_train_step(roi: int, filters: int, blocks: tuple[int, ...], repeats: int, device: torch.device) -> float:
    """Median seconds of one forward/backward/AdamW step on one ``roi``^3 crop with 3 classes."""
    torch.manual_seed(0)
    net = SegResNetDS(init_filters=filters, blocks_down=blocks, in_channels=1, out_channels=3, dsdepth=4).to(device)
    loss_fn = DeepSupervisionLoss(DiceCELoss(softmax=True, to_onehot_y=True, squared_pred=True), weight_mode="exp")
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, weight_decay=1e-5)
    image = torch.randn(1, 1, roi, roi, roi, device=device)
    label = torch.randint(0, 3, (1, 1, roi, roi, roi), device=device).float()

    def step() -> None:
        opt.zero_grad()
        loss_fn(net(image), label).backward()
        opt.step()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_input_checks(n: int) -> float:
    """Seconds to read and check ``n`` real and ``n`` synthetic phantom pairs (no split recorded)."""
    from ctsynth.data.phantoms import write_phantom_dataset

    with tempfile.TemporaryDirectory() as tmp:
        write_phantom_dataset(Path(tmp) / "real", kind="abdomen", n=n, size=32, spacing=4.0, seed=0)
        write_phantom_dataset(Path(tmp) / "syn", kind="abdomen", n=n, size=32, spacing=4.0, seed=1000)
        t0 = time.perf_counter()
        prepare_inputs(Path(tmp) / "real", [{"path": str(Path(tmp) / "syn"), "trained_on": []}], Path(tmp) / "s.json")
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    for name, filters, blocks in (("official width", 32, (1, 2, 2, 4, 4)), ("smoke width", 4, (1, 1))):
        seconds = time_train_step(args.roi, filters, blocks, args.repeats, device)
        print(f"train step {name} ({filters} filters, blocks {list(blocks)}), roi {args.roi}^3: {seconds:.3f} s")
    print(f"input checks, {args.n} real + {args.n} synthetic 32^3 pairs: {time_input_checks(args.n):.2f} s")


if __name__ == "__main__":
    main()
