"""Time the procedural phantoms (abdomen and chest) at several sizes; prints a markdown table.

Usage::

    python bench/bench_phantoms.py            # 64^3 and 128^3 (median of 5 runs), 256^3 once
    python bench/bench_phantoms.py --repeats 3 --no-256

Spacing is chosen so that the field of view is 256 mm at every size (the default abdominal tumour of 10 mm radius
fits), i.e. 4 mm at 64^3, 2 mm at 128^3 and 1 mm at 256^3; a separate row times 128^3 at 1 mm (the default call).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from ctsynth.data.phantoms import make_abdomen_phantom, make_chest_phantom


def time_call(fn, repeats: int) -> tuple[float, float]:
    """Median and minimum wall time (s) of ``fn(seed)`` over ``repeats`` seeds."""
    times = []
    for seed in range(repeats):
        t0 = time.perf_counter()
        fn(seed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-256", action="store_true", help="skip the 256^3 runs")
    args = parser.parse_args()

    make_abdomen_phantom(32, 8.0)  # warm-up: imports, allocator
    make_chest_phantom(32, 8.0)
    cases = [(64, 4.0, args.repeats), (128, 2.0, args.repeats), (128, 1.0, args.repeats)]
    if not args.no_256:
        cases.append((256, 1.0, 1))
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores")
    print()
    print("| phantom | shape | spacing (mm) | runs | median (s) | min (s) |")
    print("|---|---|---|---|---|---|")
    for size, spacing, reps in cases:
        for name, fn in (
            ("abdomen", lambda s, n=size, sp=spacing: make_abdomen_phantom(n, sp, seed=s)),
            ("chest", lambda s, n=size, sp=spacing: make_chest_phantom(n, sp, seed=s)),
        ):
            med, best = time_call(fn, reps)
            print(f"| {name} | {size}^3 | {spacing:g} | {reps} | {med:.3f} | {best:.3f} |")


if __name__ == "__main__":
    main()
