"""Tests of ctsynth.transforms.markers: high-density marker replacement (3DGAUnet)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from ctsynth.transforms import ReplaceHighDensityd, replace_high_density


def _scan(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img = rng.normal(40, 15, size=(1, 20, 18, 12)).astype(np.float32)
    lbl = np.zeros(img.shape, dtype=np.uint8)
    lbl[0, 5:15, 6:12, 3:9] = 1
    lbl[0, 9:12, 8:10, 5:7] = 2
    img[0, 10, 9, 6] = 2500.0  # marker inside the tumour/pancreas
    img[0, 6, 7, 4] = 900.0  # marker inside the pancreas
    img[0, 1, 1, 1] = 1200.0  # bone-like voxel outside
    return img, lbl


def test_replaces_every_voxel_above_threshold_with_pancreas_mean(rng):
    img, lbl = _scan(rng)
    organ = (lbl == 1) | (lbl == 2)
    expected_mean = img[organ & (img <= 200)].astype(np.float64).mean()  # markers excluded from the mean
    d = ReplaceHighDensityd("image", "label")({"image": MetaTensor(img), "label": MetaTensor(lbl)})
    out = d["image"].numpy()
    assert out.max() <= 200.0
    high = img > 200
    np.testing.assert_allclose(out[high], expected_mean, rtol=1e-6)
    np.testing.assert_array_equal(out[~high], img[~high])
    assert d["image"].meta["high_density_replaced"] == int(high.sum()) == 3
    assert d["image"].meta["high_density_fill_hu"] == pytest.approx(expected_mean)


def test_pancreas_only_labels_and_numpy_torch(rng):
    img, lbl = _scan(rng)
    expected = img[(lbl == 1) & (img <= 200)].astype(np.float64).mean()
    out, fill, n = replace_high_density(torch.from_numpy(img), lbl, organ_labels=(1,))
    assert isinstance(out, torch.Tensor) and fill == pytest.approx(expected) and n == 3
    out_np, _, _ = replace_high_density(img[0], lbl[0], threshold_hu=1000.0)
    assert out_np.shape == img[0].shape and int((out_np != img[0]).sum()) == 2


def test_no_pancreas_error_names_key_and_file(rng):
    img, lbl = _scan(rng)
    label = MetaTensor(np.zeros_like(lbl), meta={"filename_or_obj": "case_007_label.nii.gz"})
    with pytest.raises(ValueError, match="key 'label' \\(file case_007_label.nii.gz\\).*no pancreas voxels"):
        ReplaceHighDensityd()({"image": MetaTensor(img), "label": label})


def test_all_pancreas_above_threshold_error(rng):
    img, lbl = _scan(rng)
    img[lbl > 0] = 500.0
    with pytest.raises(ValueError, match="every pancreas voxel is above 200.0 HU"):
        replace_high_density(img, lbl)


def test_not_invertible():
    from monai.transforms import InvertibleTransform

    assert not isinstance(ReplaceHighDensityd(), InvertibleTransform)
