"""Tests of ctsynth.transforms.chest: ChestTo224d (CT-SGAN preprocessing) on a small synthetic chest."""

from __future__ import annotations

import numpy as np
import pytest
from monai.data import MetaTensor
from monai.transforms import Compose

from ctsynth.transforms import ChestTo224d, chest_spacing


def _chest(rng: np.random.Generator) -> dict:
    shape = (50, 40, 30)
    g = np.indices(shape, dtype=np.float64)
    # body centred off the volume centre, 36 x 24 voxels across at 2 mm -> 72 mm x 48 mm
    body = ((g[0] - 20) / 18) ** 2 + ((g[1] - 22) / 12) ** 2 <= 1.0
    img = np.full(shape, -1024.0, dtype=np.float32)
    img[body] = rng.uniform(-100, 300, size=int(body.sum()))
    lungs = body & (((g[0] - 20) / 12) ** 2 + ((g[1] - 22) / 7) ** 2 <= 1.0)
    img[lungs] = -850.0
    lbl = np.zeros(shape, dtype=np.uint8)
    lbl[18:22, 20:24, 14:17] = 1  # a nodule
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return {"image": MetaTensor(img[None], affine=affine), "label": MetaTensor(lbl[None], affine=affine)}


def test_chest_spacing_rule():
    body = np.zeros((10, 10, 4), bool)
    body[1:9, 2:6, :] = True
    assert chest_spacing(body, (2.0, 2.0, 2.0), 8, (0.6, 2.0)) == pytest.approx(2.0)  # 16 mm / 8, clamped
    assert chest_spacing(body, (1.0, 1.0, 1.0), 8, (0.6, 2.0)) == pytest.approx(1.0)
    assert chest_spacing(body, (0.1, 0.1, 0.1), 8, (0.6, 2.0)) == pytest.approx(0.6)


def test_chest_cube_shape_range_spacing_and_centre(rng):
    d = _chest(rng)
    t = ChestTo224d(("image", "label"), label_keys="label", spatial_size=32)
    out = t(dict(d))
    img, lbl = out["image"], out["label"]
    assert tuple(img.shape) == tuple(lbl.shape) == (1, 32, 32, 32)
    v = img.numpy()[0]
    assert v.min() >= -1.0 and v.max() <= 1.0
    # body 37 voxels x 2 mm = 74 mm across -> 74 / 32 = 2.3125 mm, clamped to 2.0
    np.testing.assert_allclose(img.pixdim[:3], [2.0, 2.0, 2.0])
    body = v > -0.7
    centre = np.argwhere(body).mean(0)
    assert np.abs(centre[:2] - 15.5).max() <= 1.5  # body centred in x/y (not the volume centre)
    assert lbl.dtype == d["label"].dtype and int(lbl.sum()) == 4 * 4 * 3
    # HU window: lungs at -850 HU -> (-850 + 1000) / 1400 * 2 - 1
    assert np.isclose(v, 150 / 1400 * 2 - 1, atol=1e-5).sum() > 100


def test_chest_resamples_when_body_is_larger_and_inverts(rng):
    d = _chest(rng)
    t = Compose([ChestTo224d(("image", "label"), label_keys="label", spatial_size=16, hu_range=(-1024, 600))])
    out = t(dict(d))
    spacing = float(out["image"].pixdim[0])
    assert spacing == pytest.approx(min(2.0, 37 * 2.0 / 16)) and tuple(out["image"].shape) == (1, 16, 16, 16)
    t_same = Compose([ChestTo224d(("image", "label"), label_keys="label", spatial_size=64, hu_range=(-1024, 600))])
    out = t_same(dict(d))  # 74 / 64 = 1.16 mm: resampled; cube larger than the body: padded with air
    back = t_same.inverse(out)
    assert tuple(back["image"].shape) == (1, 50, 40, 30)
    np.testing.assert_allclose(back["image"].affine.numpy(), d["image"].affine.numpy(), atol=1e-6)
    orig = d["image"].numpy()
    inside = (orig > -1024) & (orig < 600)
    err = np.abs(back["image"].numpy() - orig)[inside]
    assert np.median(err) < 60  # two trilinear resamplings of uniform noise; the geometry round-trips
    assert (back["label"].numpy() == d["label"].numpy()).mean() > 0.999


def test_chest_errors(rng):
    d = _chest(rng)
    d["image"] = MetaTensor(np.full((1, 8, 8, 8), -1000.0, np.float32), meta={"filename_or_obj": "air.nii.gz"})
    with pytest.raises(ValueError, match="key 'image' \\(file air.nii.gz\\): no body voxel"):
        ChestTo224d("image")(d)
    with pytest.raises(ValueError, match="spacing_range"):
        ChestTo224d("image", spacing_range=(2.0, 1.0))
