"""PNG previews: the three orthogonal slices of a CT volume with its label map overlaid.

Users judge synthetic CT by looking at it; every bundle writes these next to its NIfTI outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctsynth.data.io import load_volume, spacing_from_affine

# Distinct overlay colours for label ids 1..10 (RGB); ids above wrap around.
_LABEL_COLOURS = np.array(
    [
        [0.90, 0.10, 0.10],
        [1.00, 0.85, 0.10],
        [0.10, 0.60, 1.00],
        [0.20, 0.85, 0.30],
        [0.85, 0.30, 0.95],
        [1.00, 0.55, 0.10],
        [0.10, 0.90, 0.90],
        [0.60, 0.40, 0.20],
        [0.95, 0.45, 0.65],
        [0.55, 0.55, 0.95],
    ]
)


def _centre_index(image: np.ndarray, label: np.ndarray | None) -> tuple[int, int, int]:
    """Slice indices through the label's foreground centroid, or the volume centre without a label."""
    if label is not None and np.any(label > 0):
        coords = np.argwhere(label > 0)
        return tuple(int(round(c)) for c in coords.mean(axis=0))  # type: ignore[return-value]
    return tuple(s // 2 for s in image.shape)  # type: ignore[return-value]


def _overlay(slice_hu: np.ndarray, slice_lbl: np.ndarray | None, window: Sequence[float], alpha: float) -> np.ndarray:
    lo, hi = float(window[0]), float(window[1])
    grey = np.clip((slice_hu.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if slice_lbl is not None:
        ids = slice_lbl.astype(np.int64)
        fg = ids > 0
        if np.any(fg):
            colours = _LABEL_COLOURS[(ids[fg] - 1) % len(_LABEL_COLOURS)]
            rgb[fg] = (1.0 - alpha) * rgb[fg] + alpha * colours
    return rgb


def orthogonal_slices(
    image: np.ndarray, label: np.ndarray | None = None, index: Sequence[int] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The axial, coronal and sagittal slices through one voxel, oriented for display.

    Args:
        image: 3D array indexed (x, y, z) with x = left-right, y = posterior-anterior, z = inferior-superior.
        label: optional label map of the same shape.
        index: voxel (x, y, z) the slices pass through; default: the label's centroid, else the centre.

    Returns:
        ``{"axial" | "coronal" | "sagittal": (image_slice, label_slice or None)}``, each slice transposed so that
        rows run top-to-bottom on screen.

    Raises:
        ValueError: when ``image`` is not 3D or ``label`` has another shape.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a 3D volume (x, y, z), got shape {image.shape}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != image.shape:
            raise ValueError(f"label shape {label.shape} differs from image shape {image.shape}")
    cx, cy, cz = index if index is not None else _centre_index(image, label)

    def take(arr: np.ndarray | None, axis: int, i: int) -> np.ndarray | None:
        if arr is None:
            return None
        s = np.take(arr, i, axis=axis)
        # display convention: rows = anterior->posterior (axial) or superior->inferior (coronal/sagittal)
        return np.flipud(s.T)

    return {
        "axial": (take(image, 2, cz), take(label, 2, cz)),
        "coronal": (take(image, 1, cy), take(label, 1, cy)),
        "sagittal": (take(image, 0, cx), take(label, 0, cx)),
    }


def save_orthogonal_preview(
    image: np.ndarray,
    out: str | os.PathLike,
    label: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    window: Sequence[float] = (-160.0, 240.0),
    title: str | None = None,
    alpha: float = 0.4,
) -> Path:
    """Save a PNG with the axial, coronal and sagittal slices, label overlaid, physical aspect ratio.

    Args:
        image: 3D array in HU indexed (x, y, z).
        out: destination PNG path (parent folders are created).
        label: optional label map on the same grid (ids > 0 are overlaid in distinct colours).
        spacing: voxel spacing in mm, used for the display aspect ratio.
        window: HU display window (lower, upper); e.g. (-160, 240) abdomen, (-1000, 400) chest.
        title: optional figure title.
        alpha: overlay opacity.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = orthogonal_slices(image, label)
    sx, sy, sz = (float(s) for s in spacing)
    aspects = {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), facecolor="black")
    for ax, (name, (img_s, lbl_s)) in zip(axes, slices.items(), strict=True):
        ax.imshow(_overlay(img_s, lbl_s, window, alpha), aspect=aspects[name], interpolation="nearest")
        ax.set_title(name, color="white", fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor="black")
    plt.close(fig)
    return out


def save_preview_from_files(
    image: str | os.PathLike,
    out: str | os.PathLike,
    label: str | os.PathLike | None = None,
    window: Sequence[float] = (-160.0, 240.0),
    title: str | None = None,
) -> Path:
    """Read a NIfTI image (and label) and save its orthogonal preview; see :func:`save_orthogonal_preview`.

    Raises:
        ValueError: when the label grid differs from the image grid (the message names both files).
    """
    img, affine = load_volume(image, dtype=np.float32)
    lbl = None
    if label is not None:
        lbl, _ = load_volume(label)
        if lbl.shape != img.shape:
            raise ValueError(f"{label}: label shape {lbl.shape} differs from image {image} shape {img.shape}")
    return save_orthogonal_preview(
        img, out, label=lbl, spacing=spacing_from_affine(affine), window=window, title=title or Path(image).name
    )
