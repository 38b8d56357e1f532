"""``evaluate.json``'s own steps around the shared metric suite (Drenth 2024, section 4).

- :func:`preprocess_reference`: the real reference volumes on the samples' grid (RAS, 1.1 mm, centre crop/pad to
  144 x 176 x 112, still in HU), so that the histograms compare the same field of view (the thesis's 144 x 176 x 112
  outputs are "zoomed in" against whole real scans, section 4.3.2).
- :func:`mark_fid_unreliable`: records in ``metrics.json`` that FID on 2D Inception features is not a quality measure
  for these 3D volumes (thesis Table 2: 4837.313 at epoch 200 vs 4839.994 at epoch 4600, against visual progress).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Compose, LoadImage, Orientation, ResizeWithPadOrCrop, Spacing

from ctsynth.data.io import list_volumes, nifti_stem, save_volume, write_json_atomic

__all__ = ["FID_NOTE", "preprocess_reference", "mark_fid_unreliable"]

FID_NOTE = (
    "unreliable for 3D CT: FID on 2D Inception-v3 features did not follow visual quality in the LDM thesis (Drenth "
    "2024, Table 2: 4837.313 at epoch 200 vs 4839.994 at epoch 4600; section 5); report it, do not rank models by it"
)


def preprocess_reference(
    real: str | os.PathLike,
    out_dir: str | os.PathLike,
    spacing: Sequence[float] = (1.1, 1.1, 1.1),
    roi_size: Sequence[int] | None = (144, 176, 112),
    max_volumes: int | None = None,
) -> Path:
    """Write the real reference volumes in HU on the samples' grid.

    Args:
        real: folder of NIfTI volumes or a datalist / ``dataset.json``.
        out_dir: destination folder (one NIfTI per volume, same stems).
        spacing: voxel spacing in mm.
        roi_size: centre crop/pad size (padding with the volume's minimum); None keeps the resampled volume.
        max_volumes: first N volumes only.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: when ``real`` holds no volume.
    """
    paths = list_volumes(real)[: max_volumes if max_volumes else None]
    if not paths:
        raise FileNotFoundError(f"{real}: no real reference volumes")
    steps: list[Any] = [
        LoadImage(image_only=True, ensure_channel_first=True),
        Orientation(axcodes="RAS"),
        Spacing(pixdim=tuple(spacing), mode="bilinear"),
    ]
    if roi_size is not None:
        steps.append(ResizeWithPadOrCrop(tuple(roi_size), mode="minimum"))
    chain = Compose(steps)
    out = Path(out_dir)
    for path in paths:
        image = chain(str(path))
        affine = np.asarray(image.affine)
        save_volume(np.asarray(image[0], dtype=np.float32), affine, out / f"{nifti_stem(path)}.nii.gz")
    return out


def mark_fid_unreliable(metrics_json: str | os.PathLike, metrics: Sequence[str] = ("fid2d_slices",)) -> dict:
    """Add ``{"ldm_notes": {metric: FID_NOTE}}`` to a suite's ``metrics.json`` (for the FID metrics it holds).

    Returns:
        The updated document.
    """
    path = Path(metrics_json)
    doc = json.loads(path.read_text())
    notes = {m: FID_NOTE for m in metrics if m in doc.get("metrics", doc)}
    doc["ldm_notes"] = {**doc.get("ldm_notes", {}), **notes}
    write_json_atomic(doc, path)
    return doc
