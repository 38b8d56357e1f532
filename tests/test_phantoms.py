"""Tests of the procedural CT phantoms (ctsynth.data.phantoms): geometry, anatomy, HU statistics, lesions, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from ctsynth.data.io import load_volume, spacing_from_affine
from ctsynth.data.labels import ABDOMEN_LABELS, CHEST_LABELS, to_msd_pancreas
from ctsynth.data.phantoms import make_abdomen_phantom, make_chest_phantom, write_phantom_dataset
from ctsynth.data.phantoms.anatomy import branching_tree
from ctsynth.data.phantoms.dataset import has_tumor
from ctsynth.data.phantoms.geometry import BodyFrame, SmoothField, ellipsoid, smooth_curve, tube
from ctsynth.data.phantoms.render import _upsample2, correlated_noise, render
from ctsynth.data.phantoms.tissues import ABDOMEN_TISSUES
from ctsynth.data.phantoms.volume import ball_fits

# Literature reference ranges (HU) for the default portal-venous abdomen and the chest, as given in docs/phantoms.md.
# Independent of the generator's constants: the test fails if those drift out of the published ranges.
PV_LITERATURE = {
    "liver": (100, 120),
    "pancreas": (90, 110),
    "spleen": (110, 130),
    "aorta": (150, 200),
    "kidney": (150, 200),  # cortex range; the label also holds medulla, hence the tolerance below
    "subcutaneous_fat": (-120, -80),
    "visceral_fat": (-120, -80),
    "muscle": (40, 60),
}
#: Documented tolerance (HU) of the phantom's organ mean (1-voxel eroded mask) around the literature range.
PV_TOLERANCE = 10.0
#: Bands (HU) for the non-contrast phantom vs the real (non-contrast) CT; the real pancreas is fatty (-10 HU) and
#: thin at 3 mm, so its band is wider; vertebrae mix cortex and marrow differently.
REAL_BANDS = {"liver": 25, "spleen": 25, "kidney": 25, "aorta": 25, "ivc": 25, "pancreas": 60, "vertebra": 60}
REAL_MASKS = {
    "liver": ["liver"],
    "spleen": ["spleen"],
    "kidney": ["kidney_left", "kidney_right"],
    "aorta": ["aorta"],
    "ivc": ["inferior_vena_cava"],
    "pancreas": ["pancreas"],
    "vertebra": ["vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4", "vertebrae_L5"],
}


@pytest.fixture(scope="module")
def abdomen():
    return make_abdomen_phantom((96, 96, 96), (2.0, 2.0, 2.0), seed=3)


@pytest.fixture(scope="module")
def abdomen_healthy():
    return make_abdomen_phantom((96, 96, 96), (2.0, 2.0, 2.0), seed=3, tumor=False)


@pytest.fixture(scope="module")
def chest():
    return make_chest_phantom((80, 80, 80), (2.5, 2.5, 2.5), seed=5, nodules=2, nodule_radius_mm=5.0)


def eroded_stats(vol, name: str) -> tuple[float, float]:
    m = ndimage.binary_erosion(vol.organs == vol.organ_names[name])
    return float(vol.image[m].mean()), float(vol.image[m].std())


# ---------------------------------------------------------------- geometry and rendering primitives


def test_frame_affine_and_coordinates():
    f = BodyFrame((64, 72, 56), (2.0, 1.8, 2.5))
    aff = f.affine()
    assert spacing_from_affine(aff) == pytest.approx((2.0, 1.8, 2.5))
    centre = aff @ np.array([31.5, 35.5, 27.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)  # volume centre at the world origin
    assert f.unit_mm == pytest.approx(64.0)  # half of min(128, 129.6) mm
    np.testing.assert_allclose(f.to_index(f.to_units([3.0, 7.0, 11.0])), [3.0, 7.0, 11.0])


def test_ellipsoid_volume_matches_analytic():
    f = BodyFrame((80, 80, 80), (1.0, 1.0, 1.0))
    r = 20.0 / f.unit_mm
    sl, field = ellipsoid(f, (0.0, 0.0, 0.0), (r, 0.5 * r, r))
    n = int((field <= 1).sum())
    assert n == pytest.approx(4 / 3 * np.pi * 20 * 10 * 20, rel=0.03)


def test_tube_volume_matches_capsule():
    f = BodyFrame((96, 96, 96), (1.0, 1.0, 1.0))
    r, length = 6.0, 40.0
    pts = np.array([[-20.0, 0.0, 0.0], [0.0, 0.0, 0.0], [20.0, 0.0, 0.0]]) / f.unit_mm
    sl, field = tube(f, pts, np.full(3, r / f.unit_mm))
    expected = np.pi * r**2 * length + 4 / 3 * np.pi * r**3
    assert int((field <= 1).sum()) == pytest.approx(expected, rel=0.04)


def test_smooth_field_equals_direct_sum_of_sines(rng):
    sf = SmoothField.random(rng, 5, 0.3, 1.0)
    U, V, W = rng.normal(size=(7, 1, 1)), rng.normal(size=(1, 6, 1)), rng.normal(size=(1, 1, 5))
    direct = sum(
        a * np.sin(k[0] * U + k[1] * V + k[2] * W + p) for k, p, a in zip(sf.k, sf.phase, sf.amplitude, strict=True)
    )
    np.testing.assert_allclose(sf(U, V, W), direct, atol=1e-4)


def test_smooth_curve_passes_through_control_points():
    ctrl = np.array([[0.0, 0, 0], [1, 1, 0], [2, 0, 1], [3, 1, 1]])
    curve = smooth_curve(ctrl, 31)  # samples at t = 0, 0.1, ..., 3
    np.testing.assert_allclose(curve[::10], ctrl, atol=1e-9)


def test_upsample2_is_linear_interpolation(rng):
    a = rng.normal(size=(5, 3, 2)).astype(np.float32)
    out = _upsample2(a, 0, 9)
    x_new = np.arange(9) / 2.0
    expected = np.stack([np.interp(x_new, np.arange(5), a[:, j, k]) for j in range(3) for k in range(2)], 1)
    np.testing.assert_allclose(out.reshape(9, 6), expected, atol=1e-6)


def test_correlated_noise_unit_sd_and_correlated(rng):
    n = correlated_noise(rng, (64, 64, 64), (1.0, 1.0, 1.0), 2.5)
    assert n.shape == (64, 64, 64)
    assert n.std() == pytest.approx(1.0, rel=0.1)
    lag1 = np.corrcoef(n[:-1].ravel(), n[1:].ravel())[0, 1]
    assert lag1 > 0.8  # neighbours strongly correlated (white noise would give ~0)


def test_render_noise_sd_and_means(rng):
    air = ABDOMEN_TISSUES[0]
    assert air.name == "air" and air.sd == 0
    tissue = np.zeros((48, 48, 48), dtype=np.uint8)
    img = render(tissue, ABDOMEN_TISSUES, "portal_venous", rng, (1.0, 1.0, 1.0), noise_sd=10.0)
    assert img.mean() == pytest.approx(-1000.0, abs=1.0)
    assert img.std() == pytest.approx(10.0, rel=0.15)  # the blurred noise has the requested SD


def test_ball_fits():
    m = np.zeros((20, 20, 20), dtype=bool)
    m[5:15, 5:15, 5:15] = True
    assert ball_fits(m, (10, 10, 10), (4, 4, 4))
    assert not ball_fits(m, (10, 10, 10), (6, 6, 6))
    assert not ball_fits(np.ones((10, 10, 10), bool), (1, 5, 5), (3, 3, 3))  # leaves the volume


def test_branching_tree_follows_murray_law(rng):
    segs = branching_tree(rng, np.zeros(3), np.array([0, 0, 1.0]), 0.3, 0.04, 0.01, 4)
    radii = sorted({round(s[2], 9) for s in segs}, reverse=True)
    np.testing.assert_allclose(np.array(radii[1:]) / np.array(radii[:-1]), 2 ** (-1 / 3), rtol=1e-6)
    assert len(segs) == 2**5 - 1  # full binary tree of 5 generations (0.04 * 0.79^4 > 0.01)


# ---------------------------------------------------------------- abdomen


def test_abdomen_deterministic_and_seed_dependent():
    a = make_abdomen_phantom((64, 64, 64), (2.0, 2.0, 2.0), seed=11)
    b = make_abdomen_phantom((64, 64, 64), (2.0, 2.0, 2.0), seed=11)
    c = make_abdomen_phantom((64, 64, 64), (2.0, 2.0, 2.0), seed=12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.organs, b.organs)
    assert a.image.dtype == np.float32 and a.label.dtype == np.uint8 and a.organs.dtype == np.uint8
    assert not np.array_equal(a.organs, c.organs)  # anatomy varies per seed
    assert (a.organs == ABDOMEN_LABELS["pancreas"]).sum() != (c.organs == ABDOMEN_LABELS["pancreas"]).sum()


def test_abdomen_every_organ_present_with_plausible_size(abdomen):
    vox_ml = np.prod(spacing_from_affine(abdomen.affine)) / 1000.0
    vols = {k: (abdomen.organs == v).sum() * vox_ml for k, v in ABDOMEN_LABELS.items()}
    for name, ml in vols.items():
        assert ml > 1.0, f"{name} missing ({ml:.1f} mL)"
    body = (abdomen.organs > 0).sum() * vox_ml
    assert 0.03 < vols["liver"] / body < 0.25
    assert vols["liver"] > vols["spleen"] and vols["liver"] > vols["kidney"]
    assert vols["visceral_fat"] > vols["pancreas"] > vols["tumor"]


def test_abdomen_orientation(abdomen):
    """RAS: liver on the patient's right (high x), spleen left, spine posterior (low y) of the aorta."""
    com = {k: ndimage.center_of_mass(abdomen.organs == v) for k, v in ABDOMEN_LABELS.items() if v}
    assert com["liver"][0] > com["spleen"][0]
    assert com["vertebra"][1] < com["aorta"][1] < com["pancreas"][1]
    assert com["liver"][2] > com["kidney"][2]  # liver above the kidneys' centre (z superior)


def test_abdomen_label_ids(abdomen):
    assert set(np.unique(abdomen.label)) == {0, 1, 2}
    assert set(np.unique(abdomen.organs)) <= set(ABDOMEN_LABELS.values())
    assert np.array_equal(abdomen.label, to_msd_pancreas(abdomen.organs))
    assert abdomen.label_names == {"background": 0, "pancreas": 1, "tumor": 2}
    assert abdomen.organ_names == ABDOMEN_LABELS


def test_tumour_inside_pancreas_and_hypoattenuating(abdomen, abdomen_healthy):
    pancreas_region = abdomen_healthy.organs == ABDOMEN_LABELS["pancreas"]
    tumour = abdomen.label == 2
    assert tumour.any() and not (abdomen_healthy.label == 2).any()
    assert np.array_equal(abdomen.label > 0, pancreas_region)  # the tumour replaced pancreas voxels only
    assert np.array_equal(abdomen.organs[~pancreas_region], abdomen_healthy.organs[~pancreas_region])
    t_mean, _ = eroded_stats(abdomen, "tumor")
    p_mean, _ = eroded_stats(abdomen, "pancreas")
    assert 25.0 < p_mean - t_mean < 70.0  # PDAC 30-60 HU below pancreas in the portal-venous phase
    info = abdomen.info["tumor"]
    c = np.round(info["centre_vox"]).astype(int)
    assert abdomen.label[tuple(c)] == 2
    r_vox = info["radius_mm"] / 2.0
    assert tumour.sum() == pytest.approx(4 / 3 * np.pi * r_vox**3, rel=0.45)
    # a 32 mm cube centred on the tumour (the 3DGAUnet tumour crop) lies inside the volume
    assert np.all(c - 8 >= 0) and np.all(c + 8 <= 96)


def test_tumour_radius_controls_size_and_location():
    small = make_abdomen_phantom((64, 64, 64), (2.0, 2.0, 2.0), seed=4, tumor_radius_mm=6.0, tumor_location="head")
    large = make_abdomen_phantom((64, 64, 64), (2.0, 2.0, 2.0), seed=4, tumor_radius_mm=11.0, tumor_location="head")
    n_small, n_large = (small.label == 2).sum(), (large.label == 2).sum()
    assert n_large / n_small == pytest.approx((11 / 6) ** 3, rel=0.5)
    assert small.info["tumor"]["location"] == "head"
    x_centre = small.info["tumor"]["centre_vox"][0]
    assert x_centre > 31.5  # the head is on the patient's right (+x)


def test_tumour_image_unchanged_away_from_lesion(abdomen, abdomen_healthy):
    near = ndimage.binary_dilation(abdomen.label == 2, iterations=4)
    # identical up to float32 rounding of the blur (the tumour only changes voxels within the blur radius)
    np.testing.assert_allclose(abdomen.image[~near], abdomen_healthy.image[~near], atol=1e-3)


def test_default_pancreas_thick_enough_for_cubes():
    vol = make_abdomen_phantom(seed=0)  # 128^3 at 1 mm
    assert vol.image.shape == (128, 128, 128)
    assert vol.info["tumor"]["max_radius_mm"] >= 12.5  # >= 25 mm thick somewhere (head ~30-35 mm)
    assert 11 <= vol.info["tumor"]["centre_vox"][0] <= 116


def test_portal_venous_means_within_literature(abdomen):
    for name, (lo, hi) in PV_LITERATURE.items():
        mean, sd = eroded_stats(abdomen, name)
        assert lo - PV_TOLERANCE <= mean <= hi + PV_TOLERANCE, f"{name}: {mean:.1f} HU not in [{lo}, {hi}] +- tol"
        assert 5.0 < sd < 40.0, f"{name}: texture SD {sd:.1f}"
    gas, _ = eroded_stats(abdomen, "bowel_gas")
    assert gas < -850.0
    bone, _ = eroded_stats(abdomen, "vertebra")
    assert 150.0 < bone < 350.0


def test_non_contrast_phase_lowers_enhancing_organs():
    nc = make_abdomen_phantom((64, 64, 64), (2.0, 2.0, 2.0), seed=3, phase="non_contrast")
    pv = make_abdomen_phantom((64, 64, 64), (2.0, 2.0, 2.0), seed=3)
    for name in ("liver", "spleen", "aorta", "kidney", "pancreas"):
        assert eroded_stats(pv, name)[0] - eroded_stats(nc, name)[0] > 30.0
    assert abs(eroded_stats(pv, "subcutaneous_fat")[0] - eroded_stats(nc, "subcutaneous_fat")[0]) < 5.0


def _real_stats(real_ct_dir):
    ct, _ = load_volume(real_ct_dir / "ct.nii.gz", dtype=np.float32)
    out = {}
    for organ, files in REAL_MASKS.items():
        m = np.zeros(ct.shape, dtype=bool)
        for f in files:
            m |= load_volume(real_ct_dir / "masks" / f"{f}.nii.gz")[0] > 0
        out[organ] = (float(ct[m].mean()), float(ct[m].std()))
    return out


@pytest.mark.realct
def test_non_contrast_phantom_close_to_real_ct(real_ct_dir):
    real = _real_stats(real_ct_dir)
    assert real["liver"][0] == pytest.approx(44, abs=3)  # the README's measurement, as a sanity check
    vol = make_abdomen_phantom((96, 96, 96), (2.0, 2.0, 2.0), seed=1, phase="non_contrast", tumor=False)
    for organ, (r_mean, r_sd) in real.items():
        m = vol.organs == ABDOMEN_LABELS[organ]
        p_mean, p_sd = float(vol.image[m].mean()), float(vol.image[m].std())
        assert abs(p_mean - r_mean) <= REAL_BANDS[organ], f"{organ}: phantom {p_mean:.0f} vs real {r_mean:.0f}"
        assert r_sd / 3 <= p_sd <= r_sd * 3, f"{organ}: SD phantom {p_sd:.0f} vs real {r_sd:.0f}"


@pytest.mark.realct
def test_portal_venous_phantom_vs_real_ct_loose(real_ct_dir, abdomen_healthy):
    """The real CT is unenhanced (aorta 41 HU): the default phantom must be brighter by a contrast-like margin."""
    real = _real_stats(real_ct_dir)
    for organ in ("liver", "spleen", "kidney", "aorta", "ivc", "pancreas"):
        m = abdomen_healthy.organs == ABDOMEN_LABELS[organ]
        gain = float(abdomen_healthy.image[m].mean()) - real[organ][0]
        assert 20.0 <= gain <= 200.0, f"{organ}: enhancement {gain:.0f} HU"


def test_partial_volume_edges(abdomen):
    liver, fat = ABDOMEN_LABELS["liver"], ABDOMEN_LABELS["visceral_fat"]
    liver_m = abdomen.organs == liver
    edge = liver_m & ndimage.binary_dilation(abdomen.organs == fat)  # liver voxels touching fat
    fat_edge = (abdomen.organs == fat) & ndimage.binary_dilation(liver_m)
    vals = np.concatenate([abdomen.image[edge], abdomen.image[fat_edge]])
    l_mean, f_mean = eroded_stats(abdomen, "liver")[0], eroded_stats(abdomen, "visceral_fat")[0]
    between = (vals > f_mean + 40) & (vals < l_mean - 40)
    assert between.mean() > 0.2  # many boundary voxels take intermediate values


def test_every_organ_at_96_cubed_2mm_and_anisotropic_grid():
    vol = make_abdomen_phantom((72, 64, 48), (2.2, 2.5, 3.0), seed=2, tumor_radius_mm=8.0)
    assert vol.image.shape == (72, 64, 48)
    assert spacing_from_affine(vol.affine) == pytest.approx((2.2, 2.5, 3.0))
    assert set(np.unique(vol.organs)) == set(ABDOMEN_LABELS.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (64, 64)}, "shape must be 3 positive integers"),
        ({"shape": (64, 0, 64)}, "shape must be 3 positive integers"),
        ({"shape": (64.5, 64, 64)}, "shape must be 3 positive integers"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be 3 positive numbers"),
        ({"spacing": -2.0}, "spacing must be 3 positive numbers"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"phase": "arterial"}, "phase must be one of"),
        ({"noise_sd": -1.0}, "noise_sd must be >= 0"),
        ({"tumor_radius_mm": 0.0}, "tumor_radius_mm must be > 0"),
        ({"tumor_location": "neck"}, "tumor_location must be one of"),
        ({"shape": 64, "spacing": 2.0, "tumor_radius_mm": 40.0}, "too large for the pancreas"),
    ],
)
def test_abdomen_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_abdomen_phantom(**kwargs)


# ---------------------------------------------------------------- chest


def test_chest_deterministic_and_labels(chest):
    again = make_chest_phantom((80, 80, 80), (2.5, 2.5, 2.5), seed=5, nodules=2, nodule_radius_mm=5.0)
    assert np.array_equal(chest.image, again.image)
    other = make_chest_phantom((80, 80, 80), (2.5, 2.5, 2.5), seed=6, nodules=2, nodule_radius_mm=5.0)
    assert not np.array_equal(chest.organs, other.organs)
    assert set(np.unique(chest.label)) == {0, 1}
    assert set(np.unique(chest.organs)) == set(CHEST_LABELS.values())  # every structure present
    assert chest.label_names == {"background": 0, "nodule": 1}


def test_nodules_strictly_inside_lungs(chest):
    nod = chest.label == 1
    _, n = ndimage.label(nod)
    assert n == 2
    ring = ndimage.binary_dilation(nod) & ~nod
    lung_ids = [CHEST_LABELS[k] for k in ("lung", "vessel", "airway")]
    assert np.isin(chest.organs[ring], lung_ids).all()
    for info in chest.info["nodules"]:
        c = tuple(np.round(info["centre_vox"]).astype(int))
        assert chest.label[c] == 1 and chest.image[c] > -300  # solid: soft-tissue density at the centre


def test_chest_hu(chest):
    lung_mean, _ = eroded_stats(chest, "lung")
    assert -850 - PV_TOLERANCE <= lung_mean <= -700 + PV_TOLERANCE
    assert eroded_stats(chest, "fat")[0] == pytest.approx(-100, abs=20)
    assert 40 - PV_TOLERANCE <= eroded_stats(chest, "muscle")[0] <= 60 + PV_TOLERANCE
    assert eroded_stats(chest, "rib")[0] > 150


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nodules": -1}, "nodules must be a non-negative integer"),
        ({"nodule_radius_mm": -3.0}, "nodule_radius_mm must be > 0"),
        ({"nodule_radius_mm": 60.0}, "too large to place"),
        ({"shape": (8, 8, 8, 8)}, "shape must be 3 positive integers"),
    ],
)
def test_chest_bad_inputs(kwargs, match):
    args = {"shape": (48, 48, 48), "spacing": 4.0} | kwargs
    with pytest.raises(ValueError, match=match):
        make_chest_phantom(**args)


def test_chest_without_nodules():
    vol = make_chest_phantom((48, 48, 48), 4.0, seed=1, nodules=0)
    assert not vol.label.any() and vol.info["nodules"] == []


# ---------------------------------------------------------------- dataset writer


def test_has_tumor_spreads_fraction():
    assert [has_tumor(i, 8, 1.0) for i in range(8)] == [True] * 8
    assert [has_tumor(i, 8, 0.0) for i in range(8)] == [False] * 8
    assert [has_tumor(i, 4, 0.5) for i in range(4)] == [False, True, False, True]
    assert sum(has_tumor(i, 10, 0.3) for i in range(10)) == 3


def test_write_abdomen_dataset(tmp_path):
    path = write_phantom_dataset(tmp_path / "ds", kind="abdomen", n=2, size=48, spacing=4.0, seed=7, tumor_fraction=0.5)
    meta = json.loads(path.read_text())
    assert meta["tensorImageSize"] == "3D" and meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "pancreas", "2": "cancer"}
    assert meta["numTraining"] == 2 and len(meta["training"]) == 2 and meta["test"] == []
    assert meta["organ_labels"]["3"] == "liver"
    for i, item in enumerate(meta["training"]):
        img, a_img = load_volume(path.parent / item["image"])
        lab, a_lab = load_volume(path.parent / item["label"])
        org, a_org = load_volume(path.parent / item["organs"])
        assert img.dtype == np.int16 and lab.dtype == np.uint8 and org.dtype == np.uint8
        assert img.shape == lab.shape == org.shape == (48, 48, 48)
        np.testing.assert_allclose(a_img, a_lab)
        np.testing.assert_allclose(a_img, a_org)
        assert spacing_from_affine(a_img) == pytest.approx((4.0, 4.0, 4.0))
        assert np.array_equal(lab, to_msd_pancreas(org))
        assert (lab == 2).any() == (i == 1)  # tumour_fraction 0.5: every second volume
        ref = make_abdomen_phantom(48, 4.0, seed=7 + i, tumor=i == 1)
        np.testing.assert_allclose(img, np.clip(np.rint(ref.image), -1024, 3071), atol=0.5)


def test_write_chest_dataset(tmp_path):
    path = write_phantom_dataset(tmp_path, kind="chest", n=1, size=48, spacing=4.0, nodules=1)
    meta = json.loads(path.read_text())
    assert meta["labels"] == {"0": "background", "1": "nodule"}
    assert meta["organ_labels"]["2"] == "lung"
    lab, aff = load_volume(tmp_path / meta["training"][0]["label"])
    assert set(np.unique(lab)) == {0, 1} and spacing_from_affine(aff) == pytest.approx((4.0,) * 3)


@pytest.mark.slow  # importing MONAI takes several seconds on a busy 2-core machine
def test_write_chest_dataset_loads_with_monai(tmp_path):
    from monai.data import load_decathlon_datalist

    path = write_phantom_dataset(tmp_path, kind="chest", n=1, size=48, spacing=4.0, nodules=1)
    meta = json.loads(path.read_text())
    assert meta["labels"] == {"0": "background", "1": "nodule"}
    items = load_decathlon_datalist(str(path), True, "training")
    assert items[0]["image"].endswith("phantom_chest_000.nii.gz") and (tmp_path / "labelsTr").is_dir()
    lab, _ = load_volume(items[0]["label"])
    assert set(np.unique(lab)) == {0, 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "brain"}, "unknown phantom kind"),
        ({"n": 0}, "n must be a positive integer"),
        ({"size": 4}, "size must be an integer >= 8"),
        ({"spacing": 0}, "spacing must be a positive number"),
        ({"tumor_fraction": 1.5}, "tumor_fraction must be in"),
    ],
)
def test_write_dataset_bad_inputs(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_phantom_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()  # nothing written


def test_dataset_writer_shrinks_tumour_for_small_fields_of_view(tmp_path):
    # 64^3 at 1 mm leaves a pancreas too thin for the default 10 mm tumour: the writer shrinks it instead of failing
    with pytest.raises(ValueError, match="too large for the pancreas"):
        make_abdomen_phantom((64, 64, 64), (1.0, 1.0, 1.0), seed=0, tumor_radius_mm=10.0)
    ds = write_phantom_dataset(tmp_path, kind="abdomen", n=1, size=64, spacing=1.0)
    label, _ = load_volume(ds.parent / "labelsTr" / "phantom_abdomen_000.nii.gz")
    assert (label == 2).sum() > 0 and (label == 1).sum() > 0
