"""Tests of ctsynth.transforms.crops: body mask, inscribed square, LDM pancreas and semi crops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from monai.data import MetaTensor
from monai.transforms import Compose

from ctsynth.transforms import PancreasBBoxCropd, SemiCropd, body_mask, largest_inscribed_square


def _phantom(rng: np.random.Generator, shape=(48, 40, 20)) -> dict:
    g = np.indices(shape, dtype=np.float64)
    body = ((g[0] - 24) / 20) ** 2 + ((g[1] - 20) / 15) ** 2 <= 1.0  # elliptic cylinder along z
    img = np.full(shape, -1000.0, dtype=np.float32)
    img[body] = rng.uniform(-50, 50, size=int(body.sum()))
    gas = ((g[0] - 24) ** 2 + (g[1] - 20) ** 2 <= 9) & (g[2] > 5)  # bowel gas inside, open at the top
    img[gas] = -900.0
    img[2:46, 38:40, :] = 100.0  # a table, detached from the body by air
    lbl = np.zeros(shape, dtype=np.uint8)
    lbl[20:30, 14:22, 6:12] = 1
    lbl[24:27, 16:19, 8:10] = 2
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    return {"image": MetaTensor(img[None], affine=affine), "label": MetaTensor(lbl[None], affine=affine)}, body


def test_body_mask_fills_gas_and_drops_table(rng):
    d, body = _phantom(rng)
    mask = body_mask(d["image"])
    assert mask.shape == (48, 40, 20)
    np.testing.assert_array_equal(mask, body)


def test_body_mask_components_are_face_connected():
    # docs: "largest 6-connected (face) component": a bigger block touching the kept one only at a corner is separate
    img = np.full((12, 12, 12), -1000.0, dtype=np.float32)
    img[0:3, 0:3, 0:3] = 40.0  # 27 voxels
    img[3:5, 3:5, 3:5] = 40.0  # 8 voxels, corner contact only
    img[6:10, 6:10, 6:10] = 40.0  # 64 voxels, corner contact with the 8-voxel block only
    mask = body_mask(img, fill_holes=False)
    assert int(mask.sum()) == 64 and mask[7, 7, 7]


def _brute_square(mask: np.ndarray) -> int:
    best = 0
    for i, j in itertools.product(range(mask.shape[0]), range(mask.shape[1])):
        s = best + 1
        while i + s <= mask.shape[0] and j + s <= mask.shape[1] and mask[i : i + s, j : j + s].all():
            best, s = s, s + 1
    return best


def test_largest_inscribed_square_matches_brute_force(rng):
    for _ in range(6):
        mask = rng.random((15, 13)) < 0.85
        r, c, s = largest_inscribed_square(mask)
        assert s == _brute_square(mask)
        assert mask[r : r + s, c : c + s].all()
    with pytest.raises(ValueError, match="non-empty 2D mask"):
        largest_inscribed_square(np.zeros((4, 4), bool))


def test_pancreas_bbox_crop_and_inverse(rng):
    d, _ = _phantom(rng)
    t = Compose([PancreasBBoxCropd(("image", "label"), label_key="label")])
    out = t(dict(d))
    assert tuple(out["image"].shape) == (1, 10, 8, 6)
    np.testing.assert_array_equal(out["image"].numpy(), d["image"].numpy()[:, 20:30, 14:22, 6:12])
    np.testing.assert_allclose(out["image"].affine.numpy()[:3, 3], [20 * 0.8, 14 * 0.8, 6 * 2.5])
    back = t.inverse(out)
    assert tuple(back["image"].shape) == (1, 48, 40, 20)
    np.testing.assert_array_equal(back["image"].numpy()[:, 20:30, 14:22, 6:12], out["image"].numpy())
    np.testing.assert_array_equal(back["label"].numpy(), d["label"].numpy())  # label lies inside the box


def test_pancreas_bbox_margin_keep_z_and_resize(rng):
    d, _ = _phantom(rng)
    out = PancreasBBoxCropd(("image", "label"), margin_mm=1.6, crop_z=False)(dict(d))
    assert tuple(out["image"].shape) == (1, 14, 12, 20)  # 1.6 mm = 2 voxels at 0.8 mm; z kept
    t = PancreasBBoxCropd(("image", "label"), spatial_size="original")
    out = t(dict(d))
    assert tuple(out["image"].shape) == tuple(out["label"].shape) == (1, 48, 40, 20)
    assert set(np.unique(out["label"].numpy()).tolist()) <= {0, 1, 2} and out["label"].dtype == d["label"].dtype
    back = t.inverse(out)
    assert tuple(back["label"].shape) == (1, 48, 40, 20)
    np.testing.assert_array_equal(back["label"].numpy(), d["label"].numpy())


def test_pancreas_bbox_keep_spacing(rng):
    d, _ = _phantom(rng)
    t = PancreasBBoxCropd(("image", "label"), spatial_size=(20, 16, 12), keep_spacing=True)
    out = t(dict(d))
    np.testing.assert_allclose(out["image"].pixdim[:3], [0.8, 0.8, 2.5])
    plain = PancreasBBoxCropd(("image", "label"), spatial_size=(20, 16, 12))(dict(d))
    np.testing.assert_allclose(plain["image"].pixdim[:3], [0.4, 0.4, 1.25])
    back = t.inverse(out)
    np.testing.assert_allclose(back["image"].affine.numpy(), d["image"].affine.numpy(), atol=1e-6)


def test_pancreas_bbox_no_label_error(rng):
    d, _ = _phantom(rng)
    d["label"] = MetaTensor(np.zeros((1, 48, 40, 20), np.uint8), meta={"filename_or_obj": "p9.nii.gz"})
    with pytest.raises(ValueError, match="key 'label' \\(file p9.nii.gz\\): no pancreas voxel \\(labels > 0\\)"):
        PancreasBBoxCropd(("image", "label"))(d)


def test_semi_crop_square_inside_body_and_inverse(rng):
    d, body = _phantom(rng)
    t = SemiCropd(("image", "label"), spatial_size=None)
    out = t(dict(d))
    _, nx, ny, nz = out["image"].shape
    assert nx == ny == _brute_square(body[:, :, 0]) and nz == 20
    x0, y0 = (np.round(out["image"].affine.numpy()[:2, 3] / 0.8)).astype(int)
    assert body[x0 : x0 + nx, y0 : y0 + ny, :].all()
    assert out["image"].numpy().min() > -1000  # no air inside the square
    t2 = SemiCropd(("image", "label"), spatial_size=(24, 24, 10))
    out2 = t2(dict(d))
    assert tuple(out2["image"].shape) == tuple(out2["label"].shape) == (1, 24, 24, 10)
    back = t2.inverse(out2)
    assert tuple(back["image"].shape) == (1, 48, 40, 20)


def test_semi_crop_with_given_body_mask_and_errors(rng):
    d, body = _phantom(rng)
    sq = np.zeros_like(body)
    sq[10:20, 12:22, 4:15] = True
    d["body"] = MetaTensor(sq[None].astype(np.uint8))
    out = SemiCropd(("image",), body_key="body", spatial_size=None)(dict(d))
    assert tuple(out["image"].shape) == (1, 10, 10, 11)
    d["body"] = MetaTensor(np.zeros((1, 48, 40, 20), np.uint8))
    with pytest.raises(ValueError, match="key 'body': the body mask is empty"):
        SemiCropd(("image",), body_key="body")(d)
    with pytest.raises(ValueError, match="axial_fraction"):
        SemiCropd("image", axial_fraction=0.0)
    with pytest.raises(ValueError, match="spatial_size must be"):
        PancreasBBoxCropd("image", spatial_size="same")


def test_invertd_takes_a_prediction_back_through_window_and_crop(rng):
    from monai.transforms import Invertd

    from ctsynth.transforms import HUWindowd

    d, _ = _phantom(rng)
    t = Compose(
        [
            HUWindowd("image", -100, 170),
            PancreasBBoxCropd(("image", "label"), margin_mm=1.6, spatial_size=(24, 20, 20)),
        ]
    )
    out = t(dict(d))
    out["pred"] = out["image"].clone()
    inv = Invertd("pred", transform=t, orig_keys="image", nearest_interp=False)(out)
    pred = inv["pred"]
    assert tuple(pred.shape) == (1, 48, 40, 20)
    np.testing.assert_allclose(pred.affine.numpy(), d["image"].affine.numpy(), atol=1e-6)
    box = (slice(None), slice(18, 32), slice(12, 24), slice(6, 12))
    hu = np.clip(d["image"].numpy()[box], -100, 170)
    err = np.abs(pred.numpy()[box] - hu)
    assert np.median(err) < 25 and float(pred.numpy()[:, :10].max()) == -100.0  # outside the crop: 0 -> -100 HU
