"""Tumour-free abdominal phantoms for the demo's classifier study (``demo.json``).

The shared demo data are tumour-bearing abdominal phantoms; the PDAC-vs-healthy classifier needs healthy scans too,
as the paper's healthy pancreas data. This writes a second phantom dataset in the same MSD layout without tumours
(pancreas label only, as NIH Pancreas-CT), which ``prepare_data.json`` (``healthy_dataset_dir``) and
``train_classifier.json`` (``healthy_ct_dir``) take as their healthy source. File names get a ``healthy_`` prefix so
that their case ids differ from the shared phantoms' (``phantom_abdomen_000``...): a case id names one patient.

    python -m scripts.demo_data --out <folder> --n 4 --size 128 --spacing 1.0 --seed 100
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ctsynth.data.io import write_json_atomic
from ctsynth.data.phantoms import write_phantom_dataset

__all__ = ["main", "prefix_case_names"]


def prefix_case_names(dataset_json: str | Path, prefix: str) -> Path:
    """Rename every file of an MSD-style dataset's ``training`` entries to ``<prefix><name>`` and rewrite its
    ``dataset.json`` accordingly; returns the ``dataset.json`` path."""
    path = Path(dataset_json)
    dataset = json.loads(path.read_text())
    for entry in dataset["training"]:
        for key, rel in list(entry.items()):
            old = path.parent / rel
            new = old.with_name(prefix + old.name)
            old.rename(new)
            entry[key] = str(Path(rel).with_name(new.name))
    write_json_atomic(dataset, path)
    return path


def main(argv: Sequence[str] | None = None) -> str:
    """Write ``--n`` tumour-free abdominal phantoms to ``--out``; returns the ``dataset.json`` path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=4, help="number of phantoms")
    parser.add_argument("--size", type=int, default=128, help="cube edge in voxels")
    parser.add_argument("--spacing", type=float, default=1.0, help="isotropic spacing in mm")
    parser.add_argument("--seed", type=int, default=100, help="base seed (distinct from the shared demo data's)")
    args = parser.parse_args(argv)
    path = write_phantom_dataset(
        args.out, kind="abdomen", n=args.n, size=args.size, spacing=args.spacing, seed=args.seed, tumor_fraction=0.0
    )
    path = prefix_case_names(path, "healthy_")
    print(f"wrote {args.n} tumour-free abdominal phantoms: {path}")
    return str(path)


if __name__ == "__main__":
    main()
