"""Tests for ctsynth.report.previews (orthogonal slices with label overlay)."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from ctsynth.data.io import save_volume
from ctsynth.report.previews import orthogonal_slices, save_orthogonal_preview, save_preview_from_files


def test_orthogonal_slices_pass_through_label_centroid():
    image = np.zeros((20, 16, 12), dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[4:7, 9:12, 2:5] = 2  # centroid (5, 10, 3)
    image[5, 10, 3] = 1000.0
    slices = orthogonal_slices(image, label)
    assert slices["axial"][0].shape == (16, 20)  # (y, x) after transpose
    assert slices["coronal"][0].shape == (12, 20)
    assert slices["sagittal"][0].shape == (12, 16)
    for name in ("axial", "coronal", "sagittal"):
        img_s, lbl_s = slices[name]
        assert img_s.max() == 1000.0, f"{name} slice misses the centroid voxel"
        assert lbl_s is not None and lbl_s.max() == 2


def test_orthogonal_slices_bad_input():
    with pytest.raises(ValueError, match="expected a 3D volume"):
        orthogonal_slices(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="label shape"):
        orthogonal_slices(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


def test_preview_png_shows_overlay_colour(tmp_path):
    image = np.full((32, 32, 32), -1000.0, dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[8:24, 8:24, 8:24] = 1
    out = save_orthogonal_preview(image, tmp_path / "p.png", label=label)
    rgb = mpimg.imread(out)[..., :3]
    # label 1 overlays red on black air: some pixels must be clearly red
    red = (rgb[..., 0] > 0.3) & (rgb[..., 1] < 0.1) & (rgb[..., 2] < 0.1)
    assert red.sum() > 100


def test_preview_from_files(tmp_path):
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    img = save_volume(np.zeros((24, 24, 10), np.int16), affine, tmp_path / "img.nii.gz")
    lbl = save_volume(np.ones((24, 24, 10), np.uint8), affine, tmp_path / "lbl.nii.gz")
    out = save_preview_from_files(img, tmp_path / "out" / "p.png", label=lbl)
    assert out.exists() and out.stat().st_size > 1000
    bad = save_volume(np.ones((24, 24, 11), np.uint8), affine, tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match="bad.nii.gz: label shape"):
        save_preview_from_files(img, tmp_path / "x.png", label=bad)
