"""Time the procedural phantoms (abdomen and chest) at 128^3 and 256^3 and 1 mm; prints a markdown table.

Usage::

    python bench/bench_phantoms.py                 # median and minimum of 3 seeds per row
    python bench/bench_phantoms.py --repeats 5 --sizes 128 256 --spacing 1.0

Each row also gives the CPU time of the process (``time.process_time``, what the wall time would be on an idle
core with one thread) and the 1-minute load average before and after it (``os.getloadavg``): on a machine shared
with other jobs the wall time grows with the load, so a wall time is only meaningful together with it. The issue's
target is a 256^3 abdomen at 1 mm in under 5 s on the project's 2-core machine. Set ``OMP_NUM_THREADS=1`` to time
one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

from ctsynth.data.phantoms import make_abdomen_phantom, make_chest_phantom


def time_call(fn: Callable[[int], object], repeats: int) -> tuple[float, float, float]:
    """Median and minimum wall time and median CPU time of this process (s) of ``fn(seed)`` over ``repeats`` seeds."""
    wall, cpu = [], []
    for seed in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(seed)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--spacing", type=float, default=1.0)
    args = parser.parse_args()

    make_abdomen_phantom(32, 8.0)  # warm-up: imports, allocator
    make_chest_phantom(32, 8.0, nodules=0)
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print()
    print("| phantom | shape | spacing (mm) | runs | wall median (s) | wall min (s) | CPU median (s) | load |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for name, make in (("abdomen", make_abdomen_phantom), ("chest", make_chest_phantom)):
            before = os.getloadavg()[0]
            med, best, cpu = time_call(lambda s, m=make, n=size: m(n, args.spacing, seed=s), args.repeats)
            after = os.getloadavg()[0]
            print(
                f"| {name} | {size}^3 | {args.spacing:g} | {args.repeats} | {med:.2f} | {best:.2f} | {cpu:.2f} | "
                f"{before:.1f}, {after:.1f} |"
            )


if __name__ == "__main__":
    main()
