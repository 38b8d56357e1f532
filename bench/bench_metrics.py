"""Benchmark of the evaluation suite: F3D + MMD (linear, Gaussian) + MS-SSIM + histograms, 100 vs 100 volumes of 64^3.

Volumes (smoothed noise in HU, int16 NIfTI) are written to a temporary folder first; the timer covers everything after
the writing: one ``ctsynth.metrics.suite.evaluate`` call (reading, windowing, features, metrics, CSV/PNG/JSON output).
CPU time (user + system, all threads) is reported beside wall time: on a shared machine the wall time grows with other
processes' load, the CPU time much less. Peak memory is the process's ``ru_maxrss``, measured before and after the call
(the volumes are generated one at a time, so the writing phase does not dominate it).

Usage::

    .venv/bin/python bench/bench_metrics.py [--n 100] [--size 64] [--metrics f3d,mmd_linear,msssim,histogram]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ctsynth.data.io import save_volume
from ctsynth.metrics.suite import evaluate


def _write_set(folder: Path, n: int, size: int, seed: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    for i in range(n):
        v = ndimage.gaussian_filter(rng.normal(size=(size,) * 3).astype(np.float32), 2.0) * 3000.0 - 200.0 + shift
        save_volume(np.clip(v, -1024, 2000), affine, folder / f"vol_{i:04d}.nii.gz", dtype=np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="volumes per set")
    parser.add_argument("--size", type=int, default=64, help="cube edge")
    parser.add_argument("--metrics", default="f3d,mmd_linear,mmd_gaussian,msssim,histogram")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--msssim_max_pairs", type=int, default=300)
    parser.add_argument("--keep", default=None, help="folder to keep the outputs in (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        root = Path(args.keep or tmp)
        t0 = time.perf_counter()
        _write_set(root / "real", args.n, args.size, seed=0, shift=0.0)
        _write_set(root / "synthetic", args.n, args.size, seed=1, shift=50.0)
        t_write = time.perf_counter() - t0
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        rss_before = usage_before.ru_maxrss
        t0 = time.perf_counter()
        path = evaluate(
            root / "real",
            root / "synthetic",
            root / "out",
            metrics=args.metrics.split(","),
            batch_size=args.batch_size,
            msssim_max_pairs=args.msssim_max_pairs,
            progress=False,
        )
        elapsed = time.perf_counter() - t0
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        rss_after = usage_after.ru_maxrss
        cpu = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
        report = json.loads(Path(path).read_text())
    result = {
        "n_per_set": args.n,
        "size": args.size,
        "metrics": args.metrics,
        "evaluate_seconds": round(elapsed, 2),
        "evaluate_cpu_seconds": round(cpu, 2),
        "write_seconds": round(t_write, 2),
        "peak_rss_mib_before_evaluate": round(rss_before / 1024, 1),
        "peak_rss_mib": round(rss_after / 1024, 1),
        "timings_s": {k: round(v, 2) for k, v in report["timings_s"].items()},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
