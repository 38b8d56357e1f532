"""Tests of ctsynth.transforms.cubes: 3DGAUnet tumour and pancreas cubes (phantoms made here)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from monai.data import MetaTensor
from monai.transforms import Compose

from ctsynth.transforms import (
    CubeRejectedError,
    ExtractPancreasCubed,
    ExtractTumorCubed,
    HUWindowd,
    best_fill_cube_start,
)


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    g = np.indices(shape, dtype=np.float64)
    return sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1.0


def make_phantom(rng: np.random.Generator, shape=(64, 56, 48), tumour_radius=5.0) -> dict:
    """Ellipsoid body (-50..50 HU) in air, a pancreas blob (label 1) and a tumour blob (label 2) inside it."""
    img = np.full(shape, -1000.0, dtype=np.float32)
    body = _ellipsoid(shape, (32, 28, 24), (29, 24, 22))
    img[body] = rng.uniform(-50, 50, size=int(body.sum()))
    lbl = np.zeros(shape, dtype=np.uint8)
    pancreas = _ellipsoid(shape, (30, 28, 24), (18, 7, 6))
    lbl[pancreas] = 1
    img[pancreas] = rng.normal(40, 10, size=int(pancreas.sum()))
    tumour = _ellipsoid(shape, (37.3, 27.6, 24.2), (tumour_radius,) * 3)
    lbl[tumour] = 2
    img[tumour] = rng.normal(10, 10, size=int(tumour.sum()))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    meta = {"filename_or_obj": "phantom_000.nii.gz"}
    return {"image": MetaTensor(img[None], affine=affine, meta=meta), "label": MetaTensor(lbl[None], affine=affine)}


def test_tumour_cube_centred_masked_and_windowed(rng):
    d = make_phantom(rng)
    lbl = d["label"].numpy()[0]
    t = Compose([HUWindowd("image", -100, 170), ExtractTumorCubed("image", "label", cube_size=32, tumor_label=2)])
    hu = d["image"].numpy()[0].copy()
    out = t(dict(d))
    img, mask = out["image"], out["label"]
    assert tuple(img.shape) == tuple(mask.shape) == (1, 32, 32, 32)
    assert mask.dtype.is_floating_point is False and set(np.unique(mask.numpy())) == {0, 1}
    m = mask.numpy()[0].astype(bool)
    assert m.sum() == (lbl == 2).sum()  # the whole tumour fits
    centroid = np.argwhere(m).mean(0)
    assert np.abs(centroid - (32 - 1) / 2).max() <= 1.0
    v = img.numpy()[0]
    assert v.min() >= 0.0 and v.max() <= 1.0
    np.testing.assert_array_equal(v[~m], 0.0)  # outside the tumour: the window minimum
    # tumour voxels are the windowed HU of the input, at the translated position (affine follows)
    shift = img.affine.numpy()[:3, 3].astype(int)
    src = np.clip((hu + 100) / 270, 0, 1)
    idx = np.argwhere(m)
    np.testing.assert_allclose(v[m], src[tuple((idx + shift).T)], atol=1e-6)


def test_tumour_cube_inverse_restores_geometry(rng):
    d = make_phantom(rng)
    t = ExtractTumorCubed(cube_size=32, output_image_key="tumor_image", output_mask_key="tumor_mask")
    out = t(d)
    back = t.inverse(out)
    assert tuple(back["tumor_mask"].shape) == (1, 64, 56, 48)
    np.testing.assert_array_equal(back["tumor_mask"].numpy()[0], (d["label"].numpy()[0] == 2).astype(np.uint8))
    np.testing.assert_array_equal(back["tumor_image"].affine.numpy(), np.eye(4))


def test_tumour_cube_pads_at_the_volume_edge():
    lbl = np.zeros((1, 20, 20, 20), dtype=np.uint8)
    lbl[0, 0:3, 0:3, 0:3] = 2
    img = np.full((1, 20, 20, 20), 0.5, dtype=np.float32)
    out = ExtractTumorCubed(cube_size=16, background_value=-1.0)({"image": img, "label": lbl})
    assert tuple(out["image"].shape) == (1, 16, 16, 16)
    v = out["image"].numpy()[0]
    assert (v == 0.5).sum() == 27 and (v == -1.0).sum() == 16**3 - 27


def test_largest_component_drives_the_centre():
    lbl = np.zeros((1, 40, 40, 40), dtype=np.uint8)
    lbl[0, 10:16, 10:16, 10:16] = 2  # main tumour
    lbl[0, 35, 35, 35] = 2  # stray voxel
    out = ExtractTumorCubed(cube_size=16)({"image": np.zeros_like(lbl, dtype=np.float32), "label": lbl})
    m = out["label"].numpy()[0]
    assert m.sum() == 216 and np.abs(np.argwhere(m).mean(0) - 7.5).max() <= 1.0


def test_oversized_tumour_crop_warns_or_skip_raises(rng):
    d = make_phantom(rng, tumour_radius=9.0)
    with pytest.warns(UserWarning, match="exceeds the 16\\^3 cube"):
        out = ExtractTumorCubed(cube_size=16)(dict(d))
    assert tuple(out["image"].shape) == (1, 16, 16, 16)
    with pytest.raises(CubeRejectedError, match="tumour extent"):
        ExtractTumorCubed(cube_size=16, on_oversize="skip")(dict(d))


def test_no_tumour_error_names_file(rng):
    d = make_phantom(rng)
    d["label"] = MetaTensor(np.minimum(d["label"].numpy(), 1), meta={"filename_or_obj": "case_3_seg.nii.gz"})
    with pytest.raises(ValueError, match="key 'label' \\(file case_3_seg.nii.gz\\): no tumour voxel \\(label 2\\)"):
        ExtractTumorCubed()(d)


def test_shape_mismatch_and_bad_options(rng):
    d = make_phantom(rng)
    d["label"] = d["label"][:, :-1]
    with pytest.raises(ValueError, match="image shape \\(1, 64, 56, 48\\) and key 'label' shape \\(1, 63, 56, 48\\)"):
        ExtractTumorCubed()(d)
    with pytest.raises(ValueError, match="on_oversize"):
        ExtractTumorCubed(on_oversize="shrink")
    with pytest.raises(ValueError, match="fill_mode"):
        ExtractPancreasCubed(fill_mode="tile")


def _brute_force_best(mask: np.ndarray, size: int) -> int:
    best = 0
    for s in itertools.product(*[range(n - size + 1) for n in mask.shape]):
        best = max(best, int(mask[s[0] : s[0] + size, s[1] : s[1] + size, s[2] : s[2] + size].sum()))
    return best


def test_best_fill_matches_brute_force(rng):
    for _ in range(5):
        mask = rng.random((11, 9, 10)) < 0.3
        mask[:, :, 7:] = False
        start, count = best_fill_cube_start(mask, 4)
        assert count == _brute_force_best(mask, 4)
        assert mask[start[0] : start[0] + 4, start[1] : start[1] + 4, start[2] : start[2] + 4].sum() == count
        assert all(0 <= s <= n - 4 for s, n in zip(start, mask.shape, strict=True))


def test_pancreas_cube_maximises_fill_and_excludes_tumour(rng):
    d = make_phantom(rng, shape=(40, 36, 32))
    lbl = d["label"].numpy()[0]
    t = ExtractPancreasCubed(cube_size=8, exclude_labels=(2,), exclude_margin_mm=2.0)
    out = t(dict(d))
    img, cube_lbl = out["image"], out["label"]
    assert tuple(img.shape) == tuple(cube_lbl.shape) == (1, 8, 8, 8)
    fill = img.meta["pancreas_fill_fraction"]
    # independent reference: brute force over pancreas minus tumour dilated by 2 mm (EDT-free ball check)
    tum = np.argwhere(lbl == 2)
    g = np.indices(lbl.shape).reshape(3, -1).T
    near = np.zeros(lbl.size, dtype=bool)
    for chunk in np.array_split(np.arange(lbl.size), 8):
        dist = np.min(np.linalg.norm(g[chunk, None, :] - tum[None, :, :], axis=2), axis=1)
        near[chunk] = dist <= 2.0
    healthy = (lbl == 1) & ~near.reshape(lbl.shape)
    assert fill == pytest.approx(_brute_force_best(healthy, 8) / 8**3)
    assert (cube_lbl.numpy() != 2).all()  # no tumour voxel inside a healthy cube


def test_pancreas_cube_fill_modes_and_min_fill(rng):
    d = make_phantom(rng, shape=(40, 36, 32))
    out = ExtractPancreasCubed(cube_size=16, fill_mode="nearest")(dict(d))
    lbl = out["label"].numpy()[0]
    v = out["image"].numpy()[0]
    pancreas_values = set(v[lbl == 1].tolist())
    assert set(v.ravel().tolist()) <= pancreas_values  # every voxel copies a pancreas voxel of the cube
    t = ExtractPancreasCubed(cube_size=16, fill_mode="noise")
    t.set_random_state(0)
    v2 = t(dict(d))["image"].numpy()[0]
    assert abs(v2[lbl != 1].mean() - v[lbl == 1].mean()) < 3.0
    with pytest.raises(CubeRejectedError, match="below min_fill 0.99"):
        ExtractPancreasCubed(cube_size=16, min_fill=0.99)(dict(d))


def test_pancreas_cube_inverse_and_errors(rng):
    d = make_phantom(rng, shape=(40, 36, 32))
    t = ExtractPancreasCubed(cube_size=16, output_image_key="p_img", output_label_key="p_lbl")
    out = t(dict(d))
    back = t.inverse(out)
    orig = d["label"].numpy()[0]
    restored = back["p_lbl"].numpy()[0]
    assert restored.shape == orig.shape
    inside = restored > 0
    np.testing.assert_array_equal(restored[inside], orig[inside])
    empty = {"image": d["image"], "label": MetaTensor(np.full((1, 40, 36, 32), 2, np.uint8))}
    with pytest.raises(ValueError, match="no pancreas voxel \\(labels \\(1,\\), excluding labels \\(2,\\)"):
        t(empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # cube larger than the volume: padded, no warning (it holds the tumour, so rejection is off here)
        ExtractPancreasCubed(cube_size=64, reject_excluded=False)(dict(d))
    with pytest.raises(CubeRejectedError, match="phantom_000.nii.gz|no tumour-free 64\\^3 pancreas cube"):
        ExtractPancreasCubed(cube_size=64)(dict(d))  # every box holds the tumour


def test_pancreas_cube_default_keeps_the_tumour_out(rng):
    """The defaults give a healthy cube from a tumour-bearing phantom: no tumour voxel inside, and the chosen box
    keeps the 10 mm margin's pancreas out of its count (a 0 mm margin without rejection takes the tumour in)."""
    d = make_phantom(rng, shape=(64, 56, 48), tumour_radius=4.0)
    lbl = d["label"].numpy()[0]
    old = ExtractPancreasCubed(cube_size=24, exclude_margin_mm=0.0, reject_excluded=False)(dict(d))
    assert (old["label"].numpy() == 2).any()  # the former default: the most-pancreas box holds the tumour
    t = ExtractPancreasCubed(cube_size=24)
    assert t.exclude_margin_mm == 10.0 and t.reject_excluded
    out = t(dict(d))
    cube = out["label"].numpy()[0]
    assert (cube == 1).any() and not (cube == 2).any()
    start = out["image"].meta["cube_start_voxel"]
    box = lbl[start[0] : start[0] + 24, start[1] : start[1] + 24, start[2] : start[2] + 24]
    np.testing.assert_array_equal(box, cube)


def test_best_fill_with_forbidden_voxels_matches_brute_force(rng):
    for _ in range(4):
        mask = rng.random((10, 9, 8)) < 0.3
        forbidden = np.zeros_like(mask)
        forbidden[tuple(rng.integers(0, 8, size=3))] = True
        start, count = best_fill_cube_start(mask & ~forbidden, 4, forbidden=forbidden)
        best = 0
        for s in itertools.product(*[range(n - 3) for n in mask.shape]):
            box = tuple(slice(a, a + 4) for a in s)
            if not forbidden[box].any():
                best = max(best, int((mask & ~forbidden)[box].sum()))
        assert count == best
        box = tuple(slice(a, a + 4) for a in start)
        assert not forbidden[box].any() and (mask & ~forbidden)[box].sum() == count
    with pytest.raises(CubeRejectedError, match="also holds a forbidden"):
        best_fill_cube_start(np.ones((4, 4, 4), bool), 4, forbidden=np.ones((4, 4, 4), bool))
