"""The ctsynth transforms on the shared real abdominal CT (3 mm, HU, TotalSegmentator masks; skips when absent).

The CT is cropped around the pancreas and resampled to 1 mm once per module; there is no tumour label in this
scan, so the tumour tests mark a sphere inside the pancreas as label 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from ctsynth.data.io import load_volume
from ctsynth.transforms import (
    ChestTo224d,
    ExtractPancreasCubed,
    ExtractTumorCubed,
    HUWindowd,
    IsotropicSpacingd,
    PancreasBBoxCropd,
    ReplaceHighDensityd,
    SemiCropd,
    SplitImageMaskd,
    StackImageMaskd,
    body_mask,
    unwindow_hu,
    window_hu,
)

pytestmark = pytest.mark.realct


@pytest.fixture(scope="module")
def real_3mm(real_ct_dir: Path) -> dict:
    ct, affine = load_volume(real_ct_dir / "ct.nii.gz", dtype=np.float32)
    pancreas, _ = load_volume(real_ct_dir / "masks" / "pancreas.nii.gz", dtype=np.uint8)
    meta = {"filename_or_obj": str(real_ct_dir / "ct.nii.gz")}
    return {
        "image": MetaTensor(ct[None], affine=affine, meta=meta),
        "label": MetaTensor((pancreas > 0).astype(np.uint8)[None], affine=affine),
    }


@pytest.fixture(scope="module")
def real_1mm(real_3mm: dict) -> dict:
    """The pancreas region (+ 30 mm) resampled to 1 mm isotropic, computed once."""
    d = PancreasBBoxCropd(("image", "label"), margin_mm=30.0)(dict(real_3mm))
    return IsotropicSpacingd(("image", "label"), spacing_mm=1.0, label_keys="label")(d)


def _copy(d: dict) -> dict:
    return {k: v.clone() for k, v in d.items()}


def test_window_roundtrip_on_real_hu(real_3mm):
    hu = real_3mm["image"].numpy()
    w = window_hu(hu, -1024, 600, -1, 1)
    back = unwindow_hu(w, -1024, 600, -1, 1)
    inside = (hu >= -1024) & (hu <= 600)
    assert np.abs(back[inside] - hu[inside]).max() < 1e-4
    assert w.min() == -1.0 and w.max() == 1.0


def test_resampled_region_is_1mm(real_1mm):
    for key in ("image", "label"):
        np.testing.assert_allclose(real_1mm[key].pixdim[:3], [1.0, 1.0, 1.0], atol=1e-6)
    assert set(np.unique(real_1mm["label"].numpy()).tolist()) == {0, 1}
    assert int(real_1mm["label"].sum()) > 818 * 20  # 818 voxels at 3 mm ~ 22 mL ~ 22000 voxels at 1 mm


def test_marker_replacement_on_real_ct(real_1mm):
    d = _copy(real_1mm)
    hu, lbl = d["image"].numpy()[0], d["label"].numpy()[0]
    assert (hu > 200).any()  # vertebrae in the region
    expected = hu[(lbl > 0) & (hu <= 200)].astype(np.float64).mean()
    out = ReplaceHighDensityd("image", "label", mode="all")(d)["image"].numpy()[0]
    assert out.max() <= 200.0
    np.testing.assert_allclose(out[hu > 200], expected, rtol=1e-5)
    assert -40 < expected < 20  # README: pancreas mean -10 HU


def test_tumour_cube_on_real_ct(real_1mm):
    d = _copy(real_1mm)
    lbl = d["label"].numpy()[0].copy()
    coords = np.argwhere(lbl > 0)
    centre = coords[len(coords) // 2]  # a pancreas voxel
    g = np.indices(lbl.shape)
    sphere = (sum((g[i] - centre[i]) ** 2 for i in range(3)) <= 16) & (lbl > 0)
    lbl[sphere] = 2
    d["label"] = MetaTensor(lbl[None], affine=d["label"].affine)
    t = Compose([HUWindowd("image", -100, 170), ExtractTumorCubed(cube_size=32)])
    out = t(d)
    m = out["label"].numpy()[0].astype(bool)
    assert out["image"].shape == (1, 32, 32, 32) and m.sum() == sphere.sum()
    assert np.abs(np.argwhere(m).mean(0) - 15.5).max() <= 1.0
    v = out["image"].numpy()[0]
    assert v.min() >= 0 and v.max() <= 1 and (v[~m] == 0).all()


def test_pancreas_cube_on_real_ct(real_1mm):
    t = ExtractPancreasCubed(cube_size=64)
    out = t(_copy(real_1mm))
    img, lbl = out["image"], out["label"]
    assert tuple(img.shape) == (1, 64, 64, 64)
    fill = img.meta["pancreas_fill_fraction"]
    assert fill == pytest.approx(float((lbl.numpy() == 1).sum()) / 64**3)
    assert 0.02 < fill < 0.5  # a real pancreas cannot fill a 64^3 cube at 1 mm
    np.testing.assert_allclose(img.pixdim[:3], [1.0, 1.0, 1.0], atol=1e-6)


def test_stack_split_on_real_ct(real_3mm):
    d = HUWindowd("image", -1024, 600, -1, 1)(_copy(real_3mm))
    image, mask = d["image"].clone(), d["label"].clone()
    out = StackImageMaskd("image", "label", "pair", mask_encoding="binary")(d)
    assert tuple(out["pair"].shape) == (1, 122, 101, 224)
    split = SplitImageMaskd("pair", "img2", "lbl2", mask_encoding="binary")(out)
    assert torch.equal(split["img2"].as_tensor(), image.as_tensor())
    np.testing.assert_array_equal(split["lbl2"].numpy(), mask.numpy())


def test_pancreas_bbox_crop_on_real_ct_inverts(real_3mm):
    t = PancreasBBoxCropd(("image", "label"))
    out = t(_copy(real_3mm))
    box = np.argwhere(real_3mm["label"].numpy()[0] > 0)
    assert tuple(out["label"].shape[1:]) == tuple(box.max(0) - box.min(0) + 1)
    back = t.inverse(out)
    np.testing.assert_array_equal(back["label"].numpy(), real_3mm["label"].numpy())
    assert tuple(back["image"].shape) == tuple(real_3mm["image"].shape)


def test_semi_crop_on_real_ct(real_3mm):
    body = body_mask(real_3mm["image"])
    assert 0.2 < body.mean() < 0.9
    t = SemiCropd(("image", "label"), spatial_size=(240, 240, 155))
    out = t(_copy(real_3mm))
    assert tuple(out["image"].shape) == tuple(out["label"].shape) == (1, 240, 240, 155)
    assert int(out["label"].sum()) > 0  # the pancreas lies inside the trunk square
    back = t.inverse(out)
    assert tuple(back["image"].shape) == (1, 122, 101, 112)


@pytest.mark.slow
def test_chest224_on_real_ct(real_3mm):
    out = ChestTo224d(("image", "label"), label_keys="label")(_copy(real_3mm))
    img = out["image"]
    assert tuple(img.shape) == (1, 224, 224, 224)
    assert float(img.min()) >= -1.0 and float(img.max()) <= 1.0
    s = float(img.pixdim[0])
    assert 0.6 <= s <= 2.0
    assert int(out["label"].sum()) > 0
