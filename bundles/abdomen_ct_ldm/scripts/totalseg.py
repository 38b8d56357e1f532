"""Optional TotalSegmentator pieces (Wasserthal et al. 2023), used only when installed and asked for:

- :class:`TotalSegmentatorBodyd`: the ``body`` task's ``body_trunc`` mask for the semi crop (Drenth 2024, section 3.3);
- :class:`PancreasCheck`: the ``total`` task's pancreas on each volume -> found / volume (mL) / centroid (mm), the
  thesis's qualitative check (section 4.1.3) made numeric.

Classes are looked up by name (the pancreas id differs between TotalSegmentator versions). Without the package every
entry point raises one message saying how to install it or how to run without it.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform
from monai.utils import optional_import

from ctsynth.data.io import list_volumes, load_volume, nifti_stem, write_json_atomic

__all__ = ["require_totalsegmentator", "pancreas_stats", "TotalSegmentatorBodyd", "PancreasCheck"]

NOT_INSTALLED = (
    "TotalSegmentator is not installed (pip install TotalSegmentator; it downloads its own weights once, so run it "
    "once online). Without it: {fallback}"
)


def require_totalsegmentator(fallback: str) -> Any:
    """The ``totalsegmentator`` python API function, or ImportError naming the install and the fallback."""
    api, found = optional_import("totalsegmentator.python_api", name="totalsegmentator")
    if not found:
        raise ImportError(NOT_INSTALLED.format(fallback=fallback))
    return api


def _class_id(task: str, name: str) -> int:
    class_map = optional_import("totalsegmentator.map_to_binary", name="class_map")[0]
    for idx, cls in class_map[task].items():
        if cls == name:
            return int(idx)
    raise KeyError(f"TotalSegmentator task {task!r} has no class {name!r}")


def pancreas_stats(mask: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Found / volume in mL / centroid in world mm of a binary mask.

    Args:
        mask: (x, y, z) mask (nonzero = pancreas).
        affine: 4x4 voxel-to-world affine.

    Returns:
        ``{"found": bool, "voxels": int, "volume_ml": float, "centroid_mm": [x, y, z] | None}``.
    """
    fg = np.asarray(mask) > 0
    n = int(fg.sum())
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    centroid = None
    if n:
        ijk = np.argwhere(fg).mean(axis=0)
        centroid = (np.asarray(affine, dtype=np.float64) @ np.append(ijk, 1.0))[:3].round(2).tolist()
    return {"found": n > 0, "voxels": n, "volume_ml": n * voxel_ml, "centroid_mm": centroid}


def _segment(image: np.ndarray, affine: np.ndarray, task: str, device: str, fast: bool, **kwargs: Any) -> np.ndarray:
    nib = optional_import("nibabel")[0]
    api = require_totalsegmentator("see the fallback above")
    result = api(
        nib.Nifti1Image(np.asarray(image, dtype=np.float32), affine),
        None,
        ml=True,
        task=task,
        fast=fast,
        device=device,
        quiet=True,
        **kwargs,
    )
    return np.asarray(result.dataobj)


class TotalSegmentatorBodyd(MapTransform):
    """Add TotalSegmentator's ``body_trunc`` mask of ``key`` (HU, channel-first, RAS) as ``out_key``.

    Args:
        key: the image key.
        out_key: key of the mask (1, x, y, z).
        device: TotalSegmentator device (``"cpu"``, ``"gpu"``).
        fast: TotalSegmentator's 3 mm fast model.

    Raises:
        ImportError: at construction when TotalSegmentator is not installed.
    """

    def __init__(self, key: str = "image", out_key: str = "body", device: str = "cpu", fast: bool = True) -> None:
        super().__init__(key)
        require_totalsegmentator("use --semi_body_source threshold (the body mask of ctsynth.transforms.crops)")
        self.key, self.out_key, self.device, self.fast = key, out_key, device, fast

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d[self.key]
        affine = np.asarray(img.affine) if hasattr(img, "affine") else np.eye(4)
        labels = _segment(np.asarray(img[0]), affine, "body", self.device, self.fast)
        d[self.out_key] = (labels == _class_id("body", "body_trunc"))[None].astype(np.uint8)
        return d


class PancreasCheck:
    """TotalSegmentator pancreas on up to ``max_volumes`` volumes of each set -> ``pancreas_check.json``.

    Args:
        sets: ``{set name: folder of NIfTI volumes in HU}`` (e.g. ``{"real": ..., "synthetic": ...}``).
        out_dir: output folder.
        max_volumes: volumes per set (the thesis used 3 real and at least 1 synthetic per regime).
        device: TotalSegmentator device.
        fast: TotalSegmentator's fast model.

    Raises:
        ImportError: when TotalSegmentator is not installed (at :meth:`run`).
    """

    def __init__(
        self,
        sets: Mapping[str, str | os.PathLike],
        out_dir: str | os.PathLike,
        max_volumes: int = 10,
        device: str = "cpu",
        fast: bool = False,
    ) -> None:
        self.sets, self.out_dir = dict(sets), Path(out_dir)
        self.max_volumes, self.device, self.fast = int(max_volumes), device, fast

    def run(self) -> dict[str, Any]:
        require_totalsegmentator("run evaluate.json with --totalsegmentator false (the default)")
        pancreas = _class_id("total", "pancreas")
        report: dict[str, Any] = {"tool": "TotalSegmentator task total, class pancreas", "sets": {}}
        for name, folder in self.sets.items():
            rows = []
            for path in list_volumes(folder)[: self.max_volumes]:
                image, affine = load_volume(path, np.float32)
                labels = _segment(image, affine, "total", self.device, self.fast, roi_subset=["pancreas"])
                rows.append({"volume": nifti_stem(path), **pancreas_stats(labels == pancreas, affine)})
            found = [r["found"] for r in rows]
            report["sets"][name] = {"volumes": rows, "found_fraction": float(np.mean(found)) if found else None}
        write_json_atomic(report, self.out_dir / "pancreas_check.json")
        return report
