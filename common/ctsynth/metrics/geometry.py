"""Voxel geometry of the two sets (shape, spacing, orientation) read from the NIfTI headers, and its comparison.

Most metrics of the suite compare voxel arrays, so they cannot tell a 1 mm set from a 3 mm one: a set at the wrong
physical scale can score as close to the real set as one at the right scale. The suite therefore compares the header
geometry of the two sets and warns (console and ``metrics.json``) when spacing, orientation or shape differ.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compare_geometry", "read_geometry", "summarise_geometry"]


def read_geometry(files: Sequence[Path]) -> list[dict[str, Any]]:
    """Shape, spacing (mm) and orientation codes (e.g. ``"RAS"``) of each 3D NIfTI file, from its header only.

    Raises:
        ValueError: when a file cannot be read as NIfTI or is not 3D (the message names the file).
    """
    import nibabel as nib

    out = []
    for f in files:
        try:
            img = nib.load(str(f))
        except Exception as e:  # nibabel raises several types for corrupt files
            raise ValueError(f"{f}: cannot be read as NIfTI ({type(e).__name__}: {e})") from e
        shape = tuple(int(s) for s in img.shape)
        if len(shape) != 3:
            raise ValueError(f"{f}: expected a 3D volume, got shape {shape}.")
        affine = np.asarray(img.affine, dtype=np.float64)
        spacing = tuple(round(float(v), 4) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
        out.append({"file": f, "shape": shape, "spacing": spacing, "orientation": "".join(nib.aff2axcodes(affine))})
    return out


def summarise_geometry(geometry: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The distinct shapes, spacings and orientations of a set with their counts (most common first)."""

    def counts(key: str) -> list[dict[str, Any]]:
        c = Counter(g[key] for g in geometry)
        return [{key: list(v) if isinstance(v, tuple) else v, "n": n} for v, n in c.most_common()]

    return {"shapes": counts("shape"), "spacings_mm": counts("spacing"), "orientations": counts("orientation")}


def compare_geometry(
    real: Sequence[dict[str, Any]], synthetic: Sequence[dict[str, Any]], spacing_rtol: float = 0.01
) -> list[str]:
    """Warnings (one sentence each) for every way the two sets' geometries differ; empty when they agree.

    Args:
        real: :func:`read_geometry` of the real set.
        synthetic: :func:`read_geometry` of the synthetic set.
        spacing_rtol: relative tolerance of spacing comparisons.
    """
    warnings = []
    for key, what in (("spacing", "voxel spacing (mm)"), ("orientation", "orientation"), ("shape", "shape")):
        r, s = sorted({g[key] for g in real}), sorted({g[key] for g in synthetic})
        if key == "spacing":
            same = len(r) == len(s) and all(
                np.allclose(a, b, rtol=spacing_rtol, atol=0.0) for a, b in zip(r, s, strict=True)
            )
        else:
            same = r == s
        if not same:
            show = (lambda v: [list(x) for x in v]) if key != "orientation" else list
            warnings.append(
                f"real and synthetic volumes differ in {what}: real {show(r)}, synthetic {show(s)}; "
                + (
                    "voxel metrics compare arrays, so a set at another physical scale is not penalised for it"
                    if key == "spacing"
                    else "voxel and feature metrics compare arrays index by index"
                    if key == "orientation"
                    else "volumes are compared after resizing to one grid"
                )
                + "."
            )
        if len(r) > 1:
            warnings.append(f"the real volumes do not share one {what}: {len(r)} distinct values.")
        if len(s) > 1:
            warnings.append(f"the synthetic volumes do not share one {what}: {len(s)} distinct values.")
    return warnings
