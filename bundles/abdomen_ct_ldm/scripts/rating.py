"""Clinical rating kit (Drenth 2024, section 4.2, Tables 3-5): mid-slice PNGs per plane and sample, a CSV template
per rater with the thesis's 0-5 rubric, and the summary of filled CSVs (per-plane and per-sample means, Cohen's kappa
per plane between two raters).

Summary from the command line::

    python -m scripts.rating --ratings rater1.csv rater2.csv --out rating_summary.json
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctsynth.data.io import atomic_write, list_volumes, load_volume, nifti_stem, write_json_atomic

__all__ = ["RUBRIC", "PLANES", "mid_slices", "make_rating_kit", "read_ratings", "cohen_kappa", "summarise_ratings"]

# Thesis Table 3, verbatim.
RUBRIC = {
    0: "Extremely noisy and no organs are distinguishable",
    1: "Noisy and only a few organs are somewhat distinguishable",
    2: "Somewhat noisy and some organs are faintly distinguishable",
    3: "Somewhat realistic and some organs are distinguishable",
    4: "Realistic and most organs are as distinguishable as in a real scan",
    5: "Perfectly realistic and all the organs are as distinguishable as in a real scan",
}
PLANES = ("axial", "coronal", "sagittal")
FIELDS = ("sample", "plane", "score", "comment")


def mid_slices(volume: np.ndarray) -> dict[str, np.ndarray]:
    """The middle axial, coronal and sagittal slices of an RAS volume (x, y, z), oriented for display."""
    x, y, z = (s // 2 for s in volume.shape[:3])
    return {
        "axial": np.rot90(volume[:, :, z]),
        "coronal": np.rot90(volume[:, y, :]),
        "sagittal": np.rot90(volume[x, :, :]),
    }


def _save_png(slice_hu: np.ndarray, window: Sequence[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grey = np.clip((slice_hu - window[0]) / (window[1] - window[0]), 0.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: plt.imsave(tmp, grey, cmap="gray", vmin=0.0, vmax=1.0, format="png"), ".png")


def make_rating_kit(
    samples_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    raters: Sequence[str] = ("rater1", "rater2"),
    window: Sequence[float] = (-160.0, 240.0),
    reference: str | os.PathLike | None = None,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Write the kit: ``images/<sample>_<plane>.png``, ``ratings_<rater>.csv`` (score empty), ``rubric.md``.

    Args:
        samples_dir: folder of synthetic NIfTI volumes (HU).
        out_dir: kit folder.
        raters: one CSV per rater (the thesis had 2).
        window: HU display window.
        reference: optional real volume shown first (``reference_<plane>.png``), as the thesis showed a real scan.
        max_samples: rate only the first N samples (the thesis rated 6).

    Returns:
        ``{"samples": [...], "csv": [...], "rubric": path}``.

    Raises:
        FileNotFoundError: when ``samples_dir`` holds no NIfTI volume.
    """
    out = Path(out_dir)
    volumes = list_volumes(samples_dir)[: max_samples if max_samples else None]
    if not volumes:
        raise FileNotFoundError(f"{samples_dir}: no NIfTI volumes to rate")
    if reference is not None:
        ref, _ = load_volume(reference, np.float32)
        for plane, s in mid_slices(ref).items():
            _save_png(s, window, out / "images" / f"reference_{plane}.png")
    names = []
    for path in volumes:
        vol, _ = load_volume(path, np.float32)
        name = nifti_stem(path)
        names.append(name)
        for plane, s in mid_slices(vol).items():
            _save_png(s, window, out / "images" / f"{name}_{plane}.png")
    csvs = []
    for rater in raters:
        rows = [{"sample": n, "plane": p, "score": "", "comment": ""} for n in names for p in PLANES]
        csvs.append(_write_csv(rows, out / f"ratings_{rater}.csv"))
    rubric = "# Rating criteria (Drenth 2024, Table 3)\n\nScore each plane of each sample 0-5:\n\n"
    rubric += "| Score | Description |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in RUBRIC.items())
    rubric_path = atomic_write(out / "rubric.md", lambda tmp: Path(tmp).write_text(rubric), ".md")
    return {"samples": names, "csv": [str(p) for p in csvs], "rubric": str(rubric_path)}


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write, ".csv")


def read_ratings(path: str | os.PathLike) -> dict[tuple[str, str], int]:
    """``{(sample, plane): score}`` of one rater's filled CSV.

    Raises:
        ValueError: for a missing column, an unknown plane, or a score that is empty or not an integer in 0-5
            (the message names the file and row).
    """
    out: dict[tuple[str, str], int] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("sample", "plane", "score") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected {list(FIELDS)}")
        for row_number, row in enumerate(reader, start=2):
            plane, raw = row["plane"].strip(), row["score"].strip()
            if plane not in PLANES:
                raise ValueError(f"{path}, row {row_number}: unknown plane {plane!r} (one of {PLANES})")
            if not raw.isdigit() or int(raw) not in RUBRIC:
                raise ValueError(f"{path}, row {row_number}: score {raw!r} is not an integer from 0 to 5")
            out[(row["sample"].strip(), plane)] = int(raw)
    return out


def cohen_kappa(a: Sequence[int], b: Sequence[int], categories: Sequence[int] = tuple(RUBRIC)) -> float:
    """Unweighted Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` of two raters' scores.

    Returns NaN when the expected agreement is 1 (both raters gave one and the same score throughout).

    Raises:
        ValueError: when the two lists differ in length or are empty.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"cohen_kappa needs two equally long, non-empty score lists, got {len(a)} and {len(b)}")
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for x, y in zip(a, b, strict=True):
        table[index[x], index[y]] += 1
    table /= table.sum()
    p_o = float(np.trace(table))
    p_e = float(table.sum(1) @ table.sum(0))
    return float("nan") if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)


def summarise_ratings(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Thesis Tables 4-5 from filled CSVs: per-sample per-plane means over raters, per-plane and per-sample means,
    and Cohen's kappa per plane between the first two raters.

    Args:
        paths: one filled CSV per rater.
        out: optional JSON file for the summary.

    Returns:
        ``{"per_sample": {sample: {plane: mean, "mean": mean}}, "per_plane_mean": {...}, "kappa": {...}}``.

    Raises:
        ValueError: when the raters did not rate the same (sample, plane) items.
    """
    ratings = [read_ratings(p) for p in paths]
    items = sorted(ratings[0])
    for p, r in zip(paths[1:], ratings[1:], strict=True):
        if sorted(r) != items:
            raise ValueError(f"{p} rates other (sample, plane) items than {paths[0]}")
    samples = sorted({s for s, _ in items})
    per_sample: dict[str, dict[str, float]] = {}
    for s in samples:
        planes = {p: float(np.mean([r[(s, p)] for r in ratings])) for p in PLANES if (s, p) in ratings[0]}
        per_sample[s] = {**planes, "mean": float(np.mean(list(planes.values())))}
    per_plane = {p: float(np.mean([per_sample[s][p] for s in samples if p in per_sample[s]])) for p in PLANES}
    kappa = {}
    if len(ratings) >= 2:
        for p in PLANES:
            keys = [(s, p) for s in samples if (s, p) in ratings[0]]
            kappa[p] = cohen_kappa([ratings[0][k] for k in keys], [ratings[1][k] for k in keys])
    summary = {"raters": [str(p) for p in paths], "per_sample": per_sample, "per_plane_mean": per_plane, "kappa": kappa}
    if out is not None:
        write_json_atomic(summary, out)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Summarise filled rating CSVs (per-plane means, Cohen's kappa)")
    parser.add_argument("--ratings", nargs="+", required=True, help="one filled ratings_<rater>.csv per rater")
    parser.add_argument("--out", default=None, help="JSON file for the summary")
    args = parser.parse_args(argv)
    summary = summarise_ratings(args.ratings, args.out)
    print("plane      mean   kappa")
    for p in PLANES:
        print(f"{p:<10} {summary['per_plane_mean'][p]:.2f}   {summary['kappa'].get(p, float('nan')):.2f}")


if __name__ == "__main__":
    main()
