"""Run every benchmark in this folder in turn (``make bench``); figures go into docs/performance.md by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["bench_phantoms.py", "bench_metrics.py", "bench_3dgaunet_step.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    status = 0
    for name in BENCHES:
        print(f"\n## {name}\n", flush=True)
        status |= subprocess.call([sys.executable, str(here / name)])
    return status


if __name__ == "__main__":
    sys.exit(main())
