"""Tests of ctsynth.transforms.spatial: IsotropicSpacingd."""

from __future__ import annotations

import numpy as np
import pytest
from monai.data import MetaTensor
from monai.transforms import Compose

from ctsynth.transforms import IsotropicSpacingd


def _pair() -> dict:
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    img = np.zeros((1, 8, 6, 4), dtype=np.float32)
    img[0, 2:6, 2:4, 1:3] = 100.0
    lbl = (img > 0).astype(np.uint8) * 2
    return {"image": MetaTensor(img, affine=affine), "label": MetaTensor(lbl, affine=affine)}


def test_resamples_to_isotropic_spacing_with_label_nearest():
    t = IsotropicSpacingd(("image", "label"), spacing_mm=1.5, label_keys="label")
    out = t(_pair())
    for key in ("image", "label"):
        np.testing.assert_allclose(out[key].pixdim[:3], [1.5, 1.5, 1.5])
        # MONAI keeps the extent between the first and last voxel centres: (n - 1) * 3 / 1.5 + 1
        assert tuple(out[key].shape) == (1, 15, 11, 7)
    labels = np.unique(out["label"].numpy())
    assert set(labels.tolist()) <= {0.0, 2.0}  # nearest: no interpolated label values
    img = out["image"].numpy()
    assert ((img > 0) & (img < 100)).any()  # bilinear: intermediate values at the edges


def test_inverse_restores_grid():
    t = Compose([IsotropicSpacingd(("image", "label"), spacing_mm=1.0, label_keys=("label",))])
    d = _pair()
    out = t(d)
    assert tuple(out["label"].shape) == (1, 22, 16, 10)
    back = t.inverse(out)
    assert tuple(back["label"].shape) == (1, 8, 6, 4)
    np.testing.assert_array_equal(back["label"].numpy(), _pair()["label"].numpy())
    np.testing.assert_allclose(back["image"].affine.numpy(), np.diag([3.0, 3.0, 3.0, 1.0]), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="spacing_mm must be positive"):
        IsotropicSpacingd("image", spacing_mm=0)
    with pytest.raises(ValueError, match="label_keys \\['mask'\\] are not among keys"):
        IsotropicSpacingd("image", label_keys="mask")
