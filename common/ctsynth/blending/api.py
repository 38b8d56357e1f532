"""One entry point for the three blending methods, and blending whole folders of NIfTI cubes."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import ScaleIntensityRange

from ctsynth.blending.copy_paste import blend_copy_paste
from ctsynth.blending.placement import prepare_inputs
from ctsynth.blending.poisson import blend_poisson
from ctsynth.blending.result import BlendResult, to_label_map
from ctsynth.blending.style import blend_style_refined
from ctsynth.data.io import (
    is_nifti_file,
    list_volumes,
    load_volume,
    nifti_stem,
    save_volume,
    spacing_from_affine,
    write_json_atomic,
)

__all__ = ["BLEND_METHODS", "blend_folders", "blend_tumor", "list_nifti"]

logger = logging.getLogger(__name__)

#: Blend I, II and III of 3DGAUnet.
BLEND_METHODS: dict[str, Callable[..., BlendResult]] = {
    "copy_paste": blend_copy_paste,
    "poisson": blend_poisson,
    "style": blend_style_refined,
}

# Arguments of ``prepare_inputs`` that every method accepts; used to validate a folder before writing anything.
_PREPARE_KEYS = ("threshold", "offset", "mask", "keep_largest", "fill_holes")


def _method(method: str) -> Callable[..., BlendResult]:
    if method not in BLEND_METHODS:
        raise ValueError(f"unknown blending method {method!r}; choose one of {', '.join(BLEND_METHODS)}")
    return BLEND_METHODS[method]


def blend_tumor(tumor: Any, tissue: Any, method: str = "style", **kwargs: Any) -> BlendResult:
    """Insert a tumour cube into a tissue cube with one of the three methods of 3DGAUnet.

    Args:
        tumor: tumour cube (x, y, z) or (1, x, y, z), numpy or torch, [0, 1], tumour on a ~0 background.
        tissue: tissue cube, same layout, at least as large as ``tumor``, [0, 1].
        method: ``"copy_paste"`` (Blend I), ``"poisson"`` (Blend II) or ``"style"`` (Blend III, the paper's choice).
        kwargs: options of :func:`~ctsynth.blending.copy_paste.blend_copy_paste`,
            :func:`~ctsynth.blending.poisson.blend_poisson` or :func:`~ctsynth.blending.style.blend_style_refined`.

    Returns:
        :class:`~ctsynth.blending.result.BlendResult`.

    Raises:
        ValueError: on an unknown method or bad inputs.
    """
    return _method(method)(tumor, tissue, **kwargs)


def list_nifti(folder: str | os.PathLike) -> list[Path]:
    """Sorted ``*.nii`` / ``*.nii.gz`` files of a folder (hidden files skipped: :func:`~ctsynth.data.io.is_nifti_file`).

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when it holds no NIfTI file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    if not any(is_nifti_file(p) for p in folder.iterdir()):
        raise ValueError(f"{folder}: no NIfTI files (*.nii, *.nii.gz)")
    return list_volumes(folder, exclude_pattern=None)


def blend_folders(
    tumor_dir: str | os.PathLike,
    tissue_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str = "style",
    n: int | None = None,
    seed: int = 0,
    hu_window: Sequence[float] | None = (-100.0, 170.0),
    input_in_hu: bool = True,
    pancreas_value: int = 1,
    tumor_value: int = 2,
    **kwargs: Any,
) -> list[Path]:
    """Blend the i-th tumour cube of a folder into the i-th tissue cube of another (sorted by file name).

    Writes ``out_dir/imagesTr/blend_XXXX.nii.gz`` (float32; in HU when ``hu_window`` is given, else [0, 1]) and
    ``out_dir/labelsTr/blend_XXXX.nii.gz`` (uint8, pancreas / tumour labels, MSD Task07 convention), both with the
    tissue cube's affine, plus ``out_dir/blend_manifest.json`` (which files went into which output, offsets,
    options). Every pair is loaded and checked (shapes, spacing, non-empty tumour mask) before anything is written.

    Args:
        tumor_dir: folder of tumour cubes (NIfTI).
        tissue_dir: folder of tissue cubes (NIfTI).
        out_dir: output folder.
        method: ``"copy_paste"``, ``"poisson"`` or ``"style"``.
        n: number of pairs (default: as many as the smaller folder has).
        seed: pair i uses ``seed + i`` (random placement, style initialisation).
        hu_window: (min, max) HU of the [0, 1] window: inputs in HU are windowed with it, outputs are written back
            in HU with it. ``None`` keeps everything in [0, 1].
        input_in_hu: the input files are in HU (as the bundles write them); window them to [0, 1] first.
        pancreas_value: label of non-tumour voxels in the written label maps.
        tumor_value: label of tumour voxels in the written label maps.
        kwargs: options of the blending method (see :func:`blend_tumor`).

    Returns:
        Paths of the written images, in pair order.

    Raises:
        FileNotFoundError: when a folder does not exist.
        ValueError: on an unknown method, empty folders, ``n`` larger than the number of pairs, ``input_in_hu``
            without ``hu_window``, or a bad pair (the message names both files).
    """
    blend = _method(method)
    if input_in_hu and hu_window is None:
        raise ValueError("input_in_hu=True needs hu_window to convert HU to [0, 1]")
    tumors, tissues = list_nifti(tumor_dir), list_nifti(tissue_dir)
    available = min(len(tumors), len(tissues))
    n = available if n is None else int(n)
    if not 0 < n <= available:
        raise ValueError(
            f"n={n} pairs requested but {tumor_dir} has {len(tumors)} and {tissue_dir} has {len(tissues)} NIfTI files"
        )
    to_unit, to_hu = None, None
    if hu_window is not None:
        lo, hi = (float(v) for v in hu_window)
        if not hi > lo:
            raise ValueError(f"hu_window must be (min, max) with max > min; got {tuple(hu_window)}")
        to_unit = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
        to_hu = ScaleIntensityRange(a_min=0.0, a_max=1.0, b_min=lo, b_max=hi)

    pairs = []
    prepare_kwargs = {k: kwargs[k] for k in _PREPARE_KEYS if k in kwargs}
    for i, (tumor_path, tissue_path) in enumerate(zip(tumors[:n], tissues[:n], strict=True)):
        tumor, tumor_affine = load_volume(tumor_path, dtype=np.float32)
        tissue, tissue_affine = load_volume(tissue_path, dtype=np.float32)
        where = f"{tumor_path} + {tissue_path}"
        tumor_spacing, tissue_spacing = spacing_from_affine(tumor_affine), spacing_from_affine(tissue_affine)
        if not np.allclose(tumor_spacing, tissue_spacing, rtol=1e-3):
            raise ValueError(f"{where}: voxel spacings differ ({tumor_spacing} vs {tissue_spacing} mm)")
        if input_in_hu:
            tumor, tissue = np.asarray(to_unit(tumor)), np.asarray(to_unit(tissue))
        try:
            placed = prepare_inputs(tumor, tissue, seed=seed + i, **prepare_kwargs)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        pairs.append((tumor_path, tissue_path, tumor, tissue, tissue_affine, placed.offset))

    out_dir = Path(out_dir)
    written, manifest = [], []
    for i, (tumor_path, tissue_path, tumor, tissue, affine, offset) in enumerate(pairs):
        result = blend(tumor, tissue, seed=seed + i, **kwargs)
        image = np.asarray(result.image, dtype=np.float32)
        if to_hu is not None:
            image = np.asarray(to_hu(image), dtype=np.float32)
        name = f"blend_{i:04d}.nii.gz"
        image_path = save_volume(image, affine, out_dir / "imagesTr" / name, dtype=np.float32)
        labels = to_label_map(result.mask, pancreas_value=pancreas_value, tumor_value=tumor_value)
        save_volume(labels, affine, out_dir / "labelsTr" / name, dtype=np.uint8)
        written.append(image_path)
        manifest.append(
            {
                "image": f"imagesTr/{name}",
                "label": f"labelsTr/{name}",
                "tumor": str(tumor_path),
                "tissue": str(tissue_path),
                "offset": list(offset),
                "seed": seed + i,
            }
        )
        logger.info(
            "blended %s into %s -> %s (%d/%d)", nifti_stem(tumor_path), nifti_stem(tissue_path), image_path, i + 1, n
        )
    options = {k: v if isinstance(v, int | float | str | bool | None) else repr(v) for k, v in kwargs.items()}
    info = {"method": method, "hu_window": None if hu_window is None else list(hu_window), "options": options}
    write_json_atomic({**info, "pairs": manifest}, out_dir / "blend_manifest.json")
    return written
