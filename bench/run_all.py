"""Run the benchmarks of this folder in turn (``make bench``); figures go into docs/performance.md by hand.

By default the quick ones (phantoms, evaluation suite, 3DGAUnet step: about a minute on the 2-core CPU). ``--all``
adds the bundle benchmarks with settings that fit a 24 GiB CPU machine (HA-GAN sampling and training, CT-SGAN
memory, SegResNet, LDM sampling phases and batch-1 training steps): about 25 minutes there. ``--device cuda`` is
passed to the benchmarks that take it.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python bench/run_all.py [--all] [--device cuda]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

QUICK = [["bench_phantoms.py"], ["bench_metrics.py"], ["bench_3dgaunet_step.py"]]
BUNDLES = [
    ["bench_hagan.py", "--cases", "sample", "--repeats", "5"],
    ["bench_hagan.py", "--cases", "train", "--repeats", "1"],
    ["bench_ctsgan.py"],
    ["bench_segresnet.py"],
    ["bench_ldm.py", "--phases", "unet_step", "decode", "decode_tiled", "--amp"],
    ["bench_ldm.py", "--phases", "dm_step", "ae_step", "--ae_batch_size", "1", "--dm_batch_size", "1"],
]
TAKES_DEVICE = {"bench_3dgaunet_step.py", "bench_hagan.py", "bench_ctsgan.py", "bench_segresnet.py", "bench_ldm.py"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="also the bundle benchmarks (about 25 min on 2 CPU cores)")
    parser.add_argument("--device", default=None, help="passed as --device to the benchmarks that take it")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    status = 0
    for name, *extra in QUICK + (BUNDLES if args.all else []):
        if args.device and name in TAKES_DEVICE:
            extra = [*extra, "--device", args.device]
        print(f"\n## {' '.join([name, *extra])}\n", flush=True)
        status |= subprocess.call([sys.executable, str(here / name), *extra])
    return status


if __name__ == "__main__":
    sys.exit(main())
