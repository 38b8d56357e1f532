"""Measurements that calibrate the phantoms against real CT: noise grain and lung-vessel density.

The same functions are applied to a phantom and to the real scans in ``shared/data`` (tests and
``bench/phantom_vs_real.py``), so the two figures are comparable by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: HU below which a voxel counts as aerated lung (and above which, inside the lung field, as vessel or wall).
LUNG_AIR_HU = -500.0
#: A connected air region is lung (not air outside the body or bowel gas) when its mean HU is above this.
LUNG_MIN_MEAN_HU = -960.0
#: ... and its volume is at least this many mL.
LUNG_MIN_ML = 20.0


def noise_grain(image: np.ndarray, mask: np.ndarray, erode: int = 2) -> tuple[float, list[float]]:
    """SD and per-axis neighbour correlation of an image inside a homogeneous region.

    Args:
        image: 3D image (HU).
        mask: boolean region (for example the liver); eroded by ``erode`` voxels to leave its edges out.
        erode: erosion iterations.

    Returns:
        ``(sd, [corr_x, corr_y, corr_z])``: the SD inside the eroded mask and the Pearson correlation of each
        voxel with its next neighbour along each axis (both inside the eroded mask).

    Raises:
        ValueError: when the eroded mask holds fewer than 10 voxel pairs along some axis.
    """
    m = ndimage.binary_erosion(mask, iterations=erode) if erode > 0 else mask.astype(bool)
    corr = []
    for ax in range(3):
        a, b = [slice(None)] * 3, [slice(None)] * 3
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        mm = m[tuple(a)] & m[tuple(b)]
        if mm.sum() < 10:
            raise ValueError(f"noise_grain: the eroded mask has {int(mm.sum())} neighbour pairs along axis {ax}")
        corr.append(float(np.corrcoef(image[tuple(a)][mm], image[tuple(b)][mm])[0, 1]))
    return float(image[m].std()), corr


def lung_field(image: np.ndarray, spacing: Sequence[float], close_mm: float = 5.0) -> np.ndarray:
    """Lung field of a CT: the aerated lungs with the vessels and airways inside them, without the mediastinum.

    The air below :data:`LUNG_AIR_HU` is split into connected regions; those with a mean above
    :data:`LUNG_MIN_MEAN_HU` (parenchyma, not the -1000 HU air around the body) and at least :data:`LUNG_MIN_ML` are
    lung. A morphological closing with a ball of ``close_mm`` brings in the vessels and bronchial walls narrower
    than about ``2 close_mm`` while leaving the mediastinum, the heart and the chest wall out. The volume's border
    is padded by repetition, so a crop through the lungs is not eroded at its faces.

    Args:
        image: 3D CT in HU.
        spacing: voxel size in mm.
        close_mm: radius of the closing ball in mm.

    Returns:
        Boolean lung-field mask.
    """
    air = image < LUNG_AIR_HU
    lab, n = ndimage.label(air)
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    idx = np.arange(1, n + 1)
    count = ndimage.sum_labels(np.ones(image.shape, np.float32), lab, idx)
    mean = ndimage.mean(image, lab, idx)
    ml = count * float(np.prod(spacing)) / 1000.0
    keep = idx[(mean > LUNG_MIN_MEAN_HU) & (ml >= LUNG_MIN_ML)]
    lungs = np.isin(lab, keep)
    r = [max(1, int(round(close_mm / s))) for s in spacing]
    g = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    ball = sum((gi / max(ki, 1e-6)) ** 2 for gi, ki in zip(g, r, strict=True)) <= 1.0
    pad = [(k, k) for k in r]
    closed = ndimage.binary_closing(np.pad(lungs, pad, mode="edge"), structure=ball)
    return closed[tuple(slice(k, -k) for k in r)]


def lung_dense_fraction(image: np.ndarray, spacing: Sequence[float], close_mm: float = 5.0) -> float:
    """Fraction of lung-field voxels above :data:`LUNG_AIR_HU` (vessels, airway walls, nodules): vessel density.

    Args:
        image: 3D CT in HU.
        spacing: voxel size in mm.
        close_mm: see :func:`lung_field`.

    Returns:
        The fraction in [0, 1].

    Raises:
        ValueError: when the image holds no lung.
    """
    field = lung_field(image, spacing, close_mm)
    if not field.any():
        raise ValueError("lung_dense_fraction: no lung found (no aerated region above -960 HU mean and >= 20 mL)")
    return float((image[field] > LUNG_AIR_HU).mean())
