"""Chest scans -> the CT-SGAN cube (``size^3``, RAS, isotropic, HU clipped to the window) written as NIfTI, with their
nodule label maps when present, and an MSD ``dataset.json``: the common grid of the evaluation, the nodule editing and
the classifier."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from ctsynth.data.io import datalist_image_entries, list_volumes, nifti_stem, save_volume, write_json_atomic
from ctsynth.transforms.chest import ChestTo224d

__all__ = ["chest_cases", "write_chest_cubes"]


def chest_cases(source: str | os.PathLike, max_volumes: int | None = None) -> list[dict[str, Any]]:
    """The scans of a chest dataset: ``[{"image", "label"?}, ...]`` with absolute paths.

    Args:
        source: an MSD ``dataset.json`` / datalist (labels kept), a folder holding one, or a folder of NIfTI scans
            (images only).
        max_volumes: first N scans only.
    """
    src = Path(source)
    if src.is_file() or not any(src.glob("*.nii*")):
        entries = [dict(e) for e in datalist_image_entries(src)]
    else:
        entries = [{"image": str(p)} for p in list_volumes(src)]
    return entries[: max_volumes or None]


def write_chest_cubes(
    source: str | os.PathLike | Sequence[Mapping[str, Any]],
    out: str | os.PathLike,
    size: int = 224,
    hu_window: Sequence[float] = (-1000.0, 400.0),
    spacing_range: Sequence[float] = (0.6, 2.0),
    max_volumes: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``imagesTr/`` (float32 HU) and, for entries with a ``label``, ``labelsTr/`` cubes plus ``dataset.json``.

    Every ``dataset.json`` entry carries its ``case`` (the scan's file name without ``.nii.gz``: one scan per
    patient), the id of the study's patient split.

    Args:
        source: the scans (:func:`chest_cases`), or what :func:`chest_cases` reads them from.
        out: destination folder.
        size: cube edge.
        hu_window: HU clipping range.
        spacing_range: isotropic spacing range of :class:`~ctsynth.transforms.chest.ChestTo224d`.
        max_volumes: first N scans only.
        overwrite: rewrite cubes that exist (otherwise a folder already holding every cube is kept as it is).

    Returns:
        Path of the written ``dataset.json``.
    """
    out = Path(out)
    if isinstance(source, str | os.PathLike):
        entries = chest_cases(source, max_volumes)
    else:
        entries = [dict(e) for e in source][: max_volumes or None]
    dataset = out / "dataset.json"
    if dataset.is_file() and not overwrite and len(list(out.glob("imagesTr/*.nii.gz"))) == len(entries):
        return dataset
    training = []
    for entry in entries:
        keys = ["image", "label"] if entry.get("label") else ["image"]
        load = Compose([LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys)])
        cube = ChestTo224d(
            keys,
            label_keys="label" if "label" in keys else (),
            spatial_size=size,
            hu_range=tuple(hu_window),
            out_range=tuple(hu_window),
            spacing_range=tuple(spacing_range),
        )
        d = cube(load({k: str(entry[k]) for k in keys}))
        name = f"{nifti_stem(entry['image'])}.nii.gz"
        item = {"image": f"./imagesTr/{name}", "case": nifti_stem(entry["image"])}
        save_volume(d["image"][0].numpy().astype(np.float32), d["image"].affine.numpy(), out / "imagesTr" / name)
        if "label" in keys:
            save_volume(d["label"][0].numpy().astype(np.uint8), d["label"].affine.numpy(), out / "labelsTr" / name)
            item["label"] = f"./labelsTr/{name}"
        training.append(item)
    write_json_atomic(
        {"name": "chest cubes", "size": int(size), "hu_window": list(hu_window), "training": training}, dataset
    )
    return dataset
