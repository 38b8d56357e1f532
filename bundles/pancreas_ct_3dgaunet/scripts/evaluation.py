"""Tables in the 3DGAUnet paper's layout (Tables 1-4) with the published numbers beside ours.

The published values are copied from the paper (Shi et al. 2023, Tables 1-3 and section 3.4; digest sections 5.2-5.4
and 6.3) and are always labelled ``(paper)``; nothing here computes them.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "PLANES",
    "format_value",
    "table_to_markdown",
    "write_table",
]

PLANES = ("sagittal", "axial", "coronal")
PLANE_ABBREV = {"sagittal": "Sag", "axial": "Ax", "coronal": "Cor"}

# Table 1: slice-wise FID and PSNR on the centre slice of 100 real and 100 synthetic volumes, per plane.
PAPER_TABLE1: dict[tuple[str, str], dict[str, float]] = {
    ("tumor", "3D-GAN"): {
        "FID-Sag": 249.32, "FID-Ax": 262.18, "FID-Cor": 244.27, "PSNR-Sag": 20.10, "PSNR-Ax": 18.63, "PSNR-Cor": 19.49,
    },
    ("tumor", "3DGAUNet"): {
        "FID-Sag": 198.23, "FID-Ax": 202.44, "FID-Cor": 188.66, "PSNR-Sag": 16.52, "PSNR-Ax": 17.76, "PSNR-Cor": 17.16,
    },
    ("pancreas", "3D-GAN"): {
        "FID-Sag": 293.62, "FID-Ax": 342.60, "FID-Cor": 335.20, "PSNR-Sag": 18.20, "PSNR-Ax": 16.31, "PSNR-Cor": 14.05,
    },
    ("pancreas", "3DGAUNet"): {
        "FID-Sag": 287.75, "FID-Ax": 435.72, "FID-Cor": 327.41, "PSNR-Sag": 12.73, "PSNR-Ax": 7.21, "PSNR-Cor": 9.42,
    },
}  # fmt: skip

# Table 2: F3D (untrained seed-42 classifier CNN), MMD^2, pairwise MS-SSIM among synthetic samples (lower = diverse).
PAPER_TABLE2: dict[tuple[str, str], dict[str, float]] = {
    ("tumor", "3D-GAN"): {"F3D": 472.64, "MMD^2": 5571.90, "MS-SSIM": 0.86},
    ("tumor", "3DGAUNet"): {"F3D": 271.31, "MMD^2": 5327.32, "MS-SSIM": 0.81},
    ("pancreas", "3D-GAN"): {"F3D": 889.40, "MMD^2": 8924.39, "MS-SSIM": 0.83},
    ("pancreas", "3DGAUNet"): {"F3D": 872.33, "MMD^2": 9122.40, "MS-SSIM": 0.77},
}

# Table 3: slice-wise FID of 100 blended cubes per method (reference set not stated by the paper).
PAPER_TABLE3: dict[str, dict[str, float]] = {
    "Blend I": {"FID-Sag": 42.10, "FID-Ax": 40.26, "FID-Cor": 32.94},
    "Blend II": {"FID-Sag": 21.01, "FID-Ax": 35.82, "FID-Cor": 12.62},
    "Blend III": {"FID-Sag": 13.21, "FID-Ax": 13.88, "FID-Cor": 10.06},
}


def format_value(value: Any, digits: int = 2) -> str:
    """Number with ``digits`` decimals; ``None``/NaN as ``n/a``; other values as ``str``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{float(value):.{digits}f}"
    return str(value)


def table_to_markdown(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    title: str = "",
    notes: Sequence[str] = (),
    digits: int = 2,
) -> str:
    """A GitHub-markdown table of ``rows`` (dicts) restricted to ``columns``, with an optional title and notes."""
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c), digits) for c in columns) + " |")
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines) + "\n"


def _strict_json(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict_json(v) for v in obj]
    return obj


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    out_dir: str | os.PathLike,
    name: str,
    title: str = "",
    notes: Sequence[str] = (),
    digits: int = 2,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write one table as ``<name>.md``, ``<name>.csv`` and ``<name>.json`` in ``out_dir``.

    Args:
        rows: one dict per row (keys = column names; missing cells print ``n/a``).
        columns: column order.
        out_dir: destination folder.
        name: file stem.
        title: markdown heading.
        notes: markdown bullet notes (provenance of the paper's numbers, flags such as random weights).
        digits: decimals in markdown (CSV/JSON keep full precision).
        extra: additional JSON fields (settings, flags).

    Returns:
        ``{"md": path, "csv": path, "json": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{name}.md", "csv": out / f"{name}.csv", "json": out / f"{name}.json"}
    paths["md"].write_text(table_to_markdown(rows, columns, title, notes, digits))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    payload = {"title": title, "columns": list(columns), "rows": [dict(r) for r in rows], "notes": list(notes)}
    payload.update(extra or {})
    paths["json"].write_text(json.dumps(_strict_json(payload), indent=2))
    return paths
