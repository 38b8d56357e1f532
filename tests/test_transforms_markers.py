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


def test_mode_all_replaces_every_voxel_above_threshold_with_pancreas_mean(rng):
    img, lbl = _scan(rng)
    organ = (lbl == 1) | (lbl == 2)
    expected_mean = img[organ & (img <= 200)].astype(np.float64).mean()  # markers excluded from the mean
    d = ReplaceHighDensityd("image", "label", mode="all")({"image": MetaTensor(img), "label": MetaTensor(lbl)})
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
    out, fill, n = replace_high_density(torch.from_numpy(img), lbl, organ_labels=(1,), mode="all")
    assert isinstance(out, torch.Tensor) and fill == pytest.approx(expected) and n == 3
    out_np, _, _ = replace_high_density(img[0], lbl[0], threshold_hu=1000.0, mode="all")
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


def _abdomen_with_bone_vessel_and_marker(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """1 mm scan: pancreas + tumour, a vertebra-like block (450-1200 HU), a contrast-filled vessel along the pancreas
    (250 HU), a small calcification far from the pancreas and a metal fiducial (3071 HU, 2x2x3 voxels) beside it."""
    img = rng.normal(40, 10, size=(1, 64, 48, 40)).astype(np.float32)
    lbl = np.zeros(img.shape, dtype=np.uint8)
    lbl[0, 20:44, 20:30, 15:25] = 1
    lbl[0, 28:34, 22:27, 18:23] = 2
    parts = {
        "bone": (slice(10, 54), slice(36, 46), slice(5, 35)),
        "vessel": (slice(5, 60), slice(31, 34), slice(18, 21)),
        "calcification": (slice(2, 4), slice(2, 4), slice(2, 4)),
        "marker": (slice(24, 26), slice(18, 20), slice(26, 29)),
    }
    img[0][parts["bone"]] = rng.uniform(450, 1200, size=img[0][parts["bone"]].shape)
    img[0][parts["vessel"]] = 250.0
    img[0][parts["calcification"]] = 2500.0  # dense and small, but 40 mm from the pancreas
    img[0][parts["marker"]] = 3071.0
    return img, lbl, parts


def test_marker_mode_replaces_only_the_marker_near_the_pancreas(rng):
    img, lbl, parts = _abdomen_with_bone_vessel_and_marker(rng)
    d = ReplaceHighDensityd("image", "label")({"image": MetaTensor(img), "label": MetaTensor(lbl)})
    out = d["image"].numpy()[0]
    marker = np.zeros(out.shape, dtype=bool)
    marker[parts["marker"]] = True
    assert d["image"].meta["high_density_replaced"] == int(marker.sum()) == 12
    assert out[marker].max() < 200.0
    np.testing.assert_array_equal(out[~marker], img[0][~marker])  # bone, vessel, calcification untouched
    for name in ("bone", "vessel", "calcification"):
        np.testing.assert_array_equal(out[parts[name]], img[0][parts[name]], err_msg=name)


def test_marker_mode_limits_are_configurable(rng):
    img, lbl, parts = _abdomen_with_bone_vessel_and_marker(rng)
    far, _, n_far = replace_high_density(img, lbl, max_distance_mm=100.0)  # the calcification is now close enough
    assert n_far == 12 + 8 and far[0][parts["calcification"]].max() < 200
    _, _, n_dense = replace_high_density(img, lbl, min_peak_hu=4000.0)  # nothing is that dense
    assert n_dense == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        ReplaceHighDensityd(mode="bright")
