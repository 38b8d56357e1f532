"""Write phantoms as an MSD-style dataset folder, so the same loaders serve phantoms and real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ctsynth.data.io import save_volume, write_json_atomic
from ctsynth.data.phantoms.abdomen import make_abdomen_phantom
from ctsynth.data.phantoms.chest import make_chest_phantom
from ctsynth.data.phantoms.volume import PhantomVolume

KINDS = ("abdomen", "chest")


def has_tumor(i: int, n: int, tumor_fraction: float) -> bool:
    """Whether volume ``i`` of ``n`` carries a tumour: ``floor(n * f)`` volumes, spread evenly, no randomness.

    Volume ``i`` gets one when ``floor((i + 1) f) > floor(i f)``, so ``f = 1`` marks all, ``f = 0.5`` every second
    (1, 3, 5, ...), ``f = 0`` none.
    """
    return int(np.floor((i + 1) * tumor_fraction + 1e-9)) > int(np.floor(i * tumor_fraction + 1e-9))


def write_phantom_dataset(
    out: str | os.PathLike,
    kind: str = "abdomen",
    n: int = 8,
    size: int = 128,
    spacing: float = 1.0,
    seed: int = 0,
    tumor_fraction: float = 1.0,
    nodules: int = 1,
    tumor_radius_mm: float = 10.0,
) -> Path:
    """Write ``n`` phantoms as ``imagesTr/``, ``labelsTr/``, ``organsTr/`` and an MSD ``dataset.json``.

    Images are int16 HU with the phantom's RAS affine; ``labelsTr`` hold only the MSD ids (abdomen: pancreas = 1,
    tumour = 2 as in MSD Task07; chest: nodule = 1) so that MSD loaders and metrics work unchanged; ``organsTr``
    hold the full organ maps (:data:`~ctsynth.data.labels.ABDOMEN_LABELS` / ``CHEST_LABELS``), referenced from each
    training entry as ``"organs"`` and described in the extra ``"organ_labels"`` key of ``dataset.json``.

    Args:
        out: output folder (created).
        kind: "abdomen" or "chest".
        n: number of volumes; volume ``i`` uses seed ``seed + i``.
        size: cube edge in voxels.
        spacing: isotropic voxel spacing in mm.
        seed: base seed.
        tumor_fraction: abdomen only, fraction in [0, 1] of volumes with a PDAC tumour (see :func:`has_tumor`).
        nodules: chest only, nodules per volume.
        tumor_radius_mm: abdomen only, nominal tumour radius; where a small field of view leaves a pancreas too thin
            for it, the tumour shrinks to 80 % of the largest ball that fits (the phantom info records the radius used).

    Returns:
        Path of the written ``dataset.json``.

    Raises:
        ValueError: for an unknown kind or bad counts, sizes, spacing or fraction (before anything is written).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {KINDS}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size must be an integer >= 8 (voxels), got {size!r}")
    if isinstance(spacing, bool) or not isinstance(spacing, int | float | np.number) or not spacing > 0:
        raise ValueError(f"spacing must be a positive number (mm), got {spacing!r}")
    if not 0.0 <= float(tumor_fraction) <= 1.0:
        raise ValueError(f"tumor_fraction must be in [0, 1], got {tumor_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(out)
    shape = (int(size),) * 3
    sp = (float(spacing),) * 3
    training = []
    names: dict[str, int] = {}
    organ_names: dict[str, int] = {}
    for i in range(int(n)):
        if kind == "abdomen":
            vol: PhantomVolume = make_abdomen_phantom(
                shape,
                sp,
                seed=seed + i,
                tumor=has_tumor(i, n, tumor_fraction),
                tumor_radius_mm=tumor_radius_mm,
                shrink_tumor_to_fit=True,
            )
        else:
            vol = make_chest_phantom(shape, sp, seed=seed + i, nodules=nodules)
        names, organ_names = vol.label_names, vol.organ_names
        case = f"phantom_{kind}_{i:03d}.nii.gz"
        hu = np.clip(np.rint(vol.image), -1024, 3071).astype(np.int16)  # the usual 12-bit CT range
        save_volume(hu, vol.affine, out / "imagesTr" / case)
        save_volume(vol.label.astype(np.uint8), vol.affine, out / "labelsTr" / case)
        save_volume(vol.organs.astype(np.uint8), vol.affine, out / "organsTr" / case)
        training.append({"image": f"./imagesTr/{case}", "label": f"./labelsTr/{case}", "organs": f"./organsTr/{case}"})
    msd_names = {"abdomen": {"tumor": "cancer"}, "chest": {}}[kind]
    labels = {str(v): msd_names.get(k, k) for k, v in sorted(names.items(), key=lambda kv: kv[1])}
    description = (
        f"Procedural {kind} CT phantoms from ctsynth (seed {seed}..{seed + n - 1}, {size}^3 voxels at {spacing:g} mm). "
        "labelsTr hold the MSD ids listed in 'labels'; organsTr hold the full organ maps listed in 'organ_labels'."
    )
    dataset = {
        "name": f"ctsynth_phantom_{kind}",
        "description": description,
        "reference": "ctsynth procedural phantom (docs/phantoms.md)",
        "licence": "CC0 (synthetic data)",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": labels,
        "organ_labels": {str(v): k for k, v in sorted(organ_names.items(), key=lambda kv: kv[1])},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    return write_json_atomic(dataset, out / "dataset.json")
