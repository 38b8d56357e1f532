"""Tests of the procedural CT phantoms (ctsynth.data.phantoms): geometry, anatomy, HU statistics, lesions, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from ctsynth.data.io import load_volume, spacing_from_affine
from ctsynth.data.labels import ABDOMEN_LABELS, CHEST_LABELS, to_msd_pancreas
from ctsynth.data.phantoms import make_abdomen_phantom, make_chest_phantom, write_phantom_dataset
from ctsynth.data.phantoms.anatomy import branching_tree, paint_tree
from ctsynth.data.phantoms.calibration import lung_dense_fraction
from ctsynth.data.phantoms.dataset import has_tumor
from ctsynth.data.phantoms.geometry import BodyFrame, SmoothField, ellipsoid, rotation, smooth_curve, tube
from ctsynth.data.phantoms.nodules import nodule_site
from ctsynth.data.phantoms.render import KernelNoise, _upsample2, correlated_noise, partial_volume_blur, render
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
    return make_abdomen_phantom((96, 96, 96), (2.0, 2.0, 2.0), seed=3, age=35)  # young: little pancreatic fat


@pytest.fixture(scope="module")
def abdomen_healthy():
    return make_abdomen_phantom((96, 96, 96), (2.0, 2.0, 2.0), seed=3, tumor=False, age=35)


@pytest.fixture(scope="module")
def chest():
    return make_chest_phantom((80, 80, 80), (2.5, 2.5, 2.5), seed=5, nodules=2, nodule_radius_mm=5.0)


def eroded_stats(vol, name: str) -> tuple[float, float]:
    m = ndimage.binary_erosion(vol.organs == vol.organ_names[name])
    return float(vol.image[m].mean()), float(vol.image[m].std())


# ---------------------------------------------------------------- geometry and rendering primitives


def test_frame_affine_and_coordinates():
    f = BodyFrame((64, 72, 56), (2.0, 1.8, 2.5), centre_mm=(10.0, -20.0, 5.0))
    aff = f.affine()
    assert spacing_from_affine(aff) == pytest.approx((2.0, 1.8, 2.5))
    centre = aff @ np.array([31.5, 35.5, 27.5, 1.0])
    np.testing.assert_allclose(centre[:3], (10.0, -20.0, 5.0), atol=1e-9)  # the grid centre is the patient point
    np.testing.assert_allclose(f.to_index(f.to_units([3.0, 7.0, 11.0])), [3.0, 7.0, 11.0])
    np.testing.assert_allclose([f.axes[i][0] for i in range(3)], (aff @ [0, 0, 0, 1])[:3], atol=1e-4)
    chest = BodyFrame((8, 8, 8), (1.0, 1.0, 1.0), unit_mm=100.0)
    assert chest.axes[0][-1] == pytest.approx(0.035)  # 3.5 mm in 100 mm units


def test_ellipsoid_volume_matches_analytic():
    f = BodyFrame((80, 80, 80), (1.0, 1.0, 1.0))
    r = 20.0 / f.unit_mm
    sl, field = ellipsoid(f, (0.0, 0.0, 0.0), (r, 0.5 * r, r))
    n = int((field <= 1).sum())
    assert n == pytest.approx(4 / 3 * np.pi * 20 * 10 * 20, rel=0.03)


def test_rotated_wobbly_ellipsoid_box_holds_the_whole_shape(rng):
    """The tight box of a rotated ellipsoid with a wobble loses nothing against a full-grid evaluation."""
    f = BodyFrame((72, 72, 72), (1.0, 1.0, 1.0))
    rot = rotation((0.4, -0.7, 1.1))
    wob = SmoothField.random(rng, 6, 15.0, 0.15)
    sl, field = ellipsoid(f, (3.0, -2.0, 1.0), (25.0, 12.0, 8.0), rot, wob)
    U, V, W = f.grids(tuple(slice(0, n) for n in f.shape))
    d = np.stack(np.broadcast_arrays(U - 3.0, V + 2.0, W - 1.0), -1) @ rot  # coordinates along the ellipsoid's axes
    full = ((d / (25.0, 12.0, 8.0)) ** 2).sum(-1) + wob(U - 3.0, V + 2.0, W - 1.0) <= 1.0
    assert int((field <= 1).sum()) == int(full.sum()) > 0
    assert full[sl].sum() == full.sum()


def test_partial_volume_blur_is_the_gaussian(rng):
    img = rng.normal(size=(20, 17, 15)).astype(np.float32) * 100
    expected = ndimage.gaussian_filter(img, 0.6, mode="nearest", truncate=2.0)  # radius 1: three taps
    np.testing.assert_allclose(partial_volume_blur(img.copy()), expected, atol=1e-3)


def test_spectral_kernel_noise_equals_circular_convolution(rng):
    """Filtering in the Fourier domain with KernelNoise.transfer equals the per-axis wrapped convolutions."""
    model = KernelNoise()
    shape, spacing = (24, 20, 18), (0.8, 0.8, 1.2)
    white = rng.normal(size=shape)
    direct = 0
    for per_axis in model.kernels(spacing):
        x = white
        for axis, k in enumerate(per_axis):
            x = ndimage.correlate1d(x, k, axis=axis, mode="wrap")
        direct = direct + x
    plane, hz = model.transfer(shape, spacing)
    spectral = np.fft.irfftn(np.fft.rfftn(white) * plane[:, :, None] * hz[None, None, :], s=shape)
    np.testing.assert_allclose(spectral, direct, atol=1e-9)


def test_smooth_field_on_full_grids_equals_open_grids(rng):
    sf = SmoothField.random(rng, 7, 20.0, 1.0)
    U, V, W = rng.normal(size=(6, 1, 1)) * 9, rng.normal(size=(1, 5, 1)) * 9, rng.normal(size=(1, 1, 4)) * 9
    full = [np.broadcast_to(a, (6, 5, 4)).copy() for a in (U, V, W)]
    np.testing.assert_allclose(sf(*full), sf(U, V, W), atol=1e-4)


def test_thin_tree_segments_splat_like_capsules():
    """Thin segments are painted by splatting points; the result matches the capsule rasterisation."""
    f = BodyFrame((40, 40, 40), (1.0, 1.0, 1.0))
    segs = [(np.array([-12.0, -5.0, -9.0]), np.array([10.0, 6.0, 12.0]), 1.6, 1.2)]
    splat = np.zeros(f.shape, np.uint8)
    paint_tree(f, splat, segs, 1, np.ones(f.shape, bool))
    sl, field = tube(f, np.stack([segs[0][0], segs[0][1]]), np.array([1.6, 1.2]))
    caps = np.zeros(f.shape, bool)
    caps[sl] = field <= 1.0
    m = splat == 1
    assert 2 * (m & caps).sum() / (m.sum() + caps.sum()) > 0.95


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
    assert a.info["patient"] != c.info["patient"]


def test_small_field_of_view_is_a_crop_of_the_same_patient():
    """Same seed, same spacing and centre: the small grid's organ map is the centre block of the large one."""
    small = make_abdomen_phantom((48, 40, 32), 2.0, seed=5, tumor=False, noise_sd=0)
    large = make_abdomen_phantom((96, 80, 64), 2.0, seed=5, tumor=False, noise_sd=0)
    assert np.array_equal(small.organs, large.organs[24:72, 20:60, 16:48])
    np.testing.assert_allclose(small.affine[:3, 3], large.affine[:3, 3] + 2.0 * np.array([24, 20, 16]))
    # a full-size adult body: a 96 x 80 mm window is all inside the patient
    assert (small.organs > 0).all()


def test_same_seed_on_two_grids_gives_the_same_organ_volumes():
    vols = []
    for shape, spacing in (((64, 56, 64), 5.0), ((128, 112, 128), 2.5)):
        v = make_abdomen_phantom(shape, spacing, seed=4, tumor=False, noise_sd=0, centre="body")
        vols.append({k: (v.organs == ABDOMEN_LABELS[k]).sum() * spacing**3 / 1000 for k in ORGANS})
    for k in ORGANS:
        assert vols[0][k] == pytest.approx(vols[1][k], rel=0.1), k  # partial-volume error at 5 mm


ORGANS = ("liver", "spleen", "kidney", "pancreas")
#: Adult reference ranges (mL) of the issue; "kidney" is both kidneys (110-220 mL each).
ADULT_ML = {"liver": (1200, 2100), "spleen": (80, 350), "kidney": (220, 440), "pancreas": (45, 120)}


@pytest.fixture(scope="module")
def population():
    """20 seeds at 4 mm over the whole abdomen (384 x 320 x 384 mm), without noise (anatomy only)."""
    return [make_abdomen_phantom((96, 80, 96), 4.0, seed=s, tumor=False, noise_sd=0, centre="body") for s in range(20)]


def test_population_organ_volumes_vary_like_adults(population):
    ml = 4.0**3 / 1000
    for k in ORGANS:
        v = np.array([(p.organs == ABDOMEN_LABELS[k]).sum() * ml for p in population])
        assert v.std() / v.mean() >= 0.2, f"{k}: CV {v.std() / v.mean():.2f}"
        lo, hi = ADULT_ML[k]
        assert lo <= np.median(v) <= hi, f"{k}: median {np.median(v):.0f} mL"
        assert np.mean((v >= lo) & (v <= hi)) >= 0.75, f"{k}: {np.round(v)}"


def test_population_positions_vary_and_a_fixed_atlas_fails(population):
    pans = [p.organs == ABDOMEN_LABELS["pancreas"] for p in population]
    cents = np.array([ndimage.center_of_mass(m) for m in pans]) * 4.0
    spread = np.sqrt(((cents - cents.mean(0)) ** 2).sum(1).mean())
    assert spread >= 10.0, f"pancreas centroid spread {spread:.1f} mm"
    dices = []
    stack = np.stack(pans).astype(np.int16)
    total = stack.sum(0)
    for i, m in enumerate(pans):
        atlas = (total - stack[i]) * 2 > len(pans) - 1  # majority of the 19 others
        dices.append(2 * (atlas & m).sum() / max(atlas.sum() + m.sum(), 1))
    assert np.mean(dices) <= 0.5, f"leave-one-out atlas Dice {np.mean(dices):.2f}"


@pytest.fixture(scope="module")
def pancreas_crops():
    """20 seeds at 2 mm, 128 mm around the pancreas (the default centre)."""
    return [make_abdomen_phantom(64, 2.0, seed=s, tumor=False, noise_sd=0) for s in range(20)]


def test_pancreas_head_thickness_and_aorta_diameter(pancreas_crops):
    heads, aortas = [], []
    for v in pancreas_crops:
        pan = v.organs == ABDOMEN_LABELS["pancreas"]
        depth = ndimage.distance_transform_edt(np.pad(pan, 1), sampling=2.0)[1:-1, 1:-1, 1:-1]
        x_mm = v.affine[0, 0] * np.arange(64) + v.affine[0, 3]
        neck_x = v.info["centre_mm"][0] - 15.0  # the default centre lies between head and neck
        head = pan & (x_mm[:, None, None] > neck_x + 15.0)
        heads.append(2.0 * depth[head].max())
        ao = v.organs[:, :, 32] == ABDOMEN_LABELS["aorta"]
        lab, n = ndimage.label(ao)
        area = max((lab == i).sum() for i in range(1, n + 1)) * 4.0
        aortas.append(2.0 * np.sqrt(area / np.pi))
    heads, aortas = np.array(heads), np.array(aortas)
    assert np.all((heads >= 18) & (heads <= 32)), np.round(heads)
    assert np.all((aortas >= 17) & (aortas <= 30)), np.round(aortas)


def test_sex_and_age_shift_the_distributions():
    from ctsynth.data.phantoms.population import draw_patient

    def mean(key, **kw):
        return np.mean([getattr(draw_patient(np.random.default_rng(s), **kw), key) for s in range(200)])

    assert mean("liver_ml", sex="male") > mean("liver_ml", sex="female") + 100
    assert mean("pancreas_ml", age=85) < mean("pancreas_ml", age=35) - 10
    assert mean("pancreas_fat", age=85) > mean("pancreas_fat", age=35)
    assert mean("aorta_mm", age=85) > mean("aorta_mm", age=35)
    vol = make_abdomen_phantom(48, 4.0, seed=1, sex="female", age=70)
    assert vol.info["patient"]["sex"] == "female" and vol.info["patient"]["age"] == 70


@pytest.fixture(scope="module")
def body():
    """The whole abdomen at 4 mm with a table, for structure presence and layout."""
    return make_abdomen_phantom((96, 80, 112), 4.0, seed=3, centre="body", table=True, tumor_radius_mm=12.0)


def test_abdomen_every_structure_present(body):
    vox_ml = 4.0**3 / 1000.0
    vols = {k: (body.organs == v).sum() * vox_ml for k, v in ABDOMEN_LABELS.items()}
    for name, ml in vols.items():
        if name != "background":
            assert ml > 1.0, f"{name} missing ({ml:.1f} mL)"
    x_extent = np.ptp(np.nonzero((body.organs > 0) & (body.organs != ABDOMEN_LABELS["table"]))[0]) * 4.0
    assert 270 <= x_extent <= 420  # an adult's width, whatever the grid


def test_abdomen_orientation(body):
    """RAS: liver on the patient's right (high x), spleen left, spine posterior (low y) of the aorta."""
    com = {k: ndimage.center_of_mass(body.organs == v) for k, v in ABDOMEN_LABELS.items() if v}
    assert com["liver"][0] > com["spleen"][0]
    assert com["gallbladder"][0] > com["aorta"][0]
    assert com["vertebra"][1] < com["aorta"][1] < com["pancreas"][1]
    assert com["liver"][2] > com["kidney"][2]  # liver above the kidneys' centre (z superior)
    assert com["lung"][2] > com["liver"][2] and com["table"][1] < com["vertebra"][1]


def test_body_cross_section_changes_along_z(body):
    areas = [(body.organs[:, :, z] > 0).sum() for z in range(10, 100, 10)]
    assert max(areas) / min(areas) > 1.08


def test_abdomen_label_ids(abdomen):
    assert set(np.unique(abdomen.label)) == {0, 1, 2}
    assert set(np.unique(abdomen.organs)) <= set(ABDOMEN_LABELS.values())
    assert np.array_equal(abdomen.label, to_msd_pancreas(abdomen.organs))
    assert abdomen.label_names == {"background": 0, "pancreas": 1, "tumor": 2}
    assert abdomen.organ_names == ABDOMEN_LABELS


def test_tumour_in_and_around_the_gland_and_hypoattenuating(abdomen, abdomen_healthy):
    gland = abdomen_healthy.organs == ABDOMEN_LABELS["pancreas"]
    tumour = abdomen.label == 2
    assert tumour.any() and not (abdomen_healthy.label == 2).any()
    assert (tumour & gland).sum() / tumour.sum() > 0.6  # mostly in the gland ...
    fat = abdomen_healthy.organs == ABDOMEN_LABELS["visceral_fat"]
    assert np.all(gland[tumour] | fat[tumour])  # ... the rest infiltrates peripancreatic fat, no other organ
    changed = ndimage.binary_dilation(gland | tumour, iterations=2)
    assert np.array_equal(abdomen.organs[~changed], abdomen_healthy.organs[~changed])
    t_mean, _ = eroded_stats(abdomen, "tumor")
    p_mean, _ = eroded_stats(abdomen, "pancreas")
    assert 25.0 < p_mean - t_mean < 70.0  # PDAC 30-60 HU below pancreas in the portal-venous phase
    info = abdomen.info["tumor"]
    c = np.round(info["centre_vox"]).astype(int)
    assert abdomen.label[tuple(c)] == 2
    assert np.all(c - 8 >= 0) and np.all(c + 8 <= 96)  # a 32 mm cube around the tumour lies in the volume


def test_tumour_margin_is_irregular():
    vol = make_abdomen_phantom(64, 1.0, seed=2, tumor_radius_mm=12.0, noise_sd=0)
    t = vol.label == 2
    surface = (t & ~ndimage.binary_erosion(t)).sum()
    sphere = 4 * np.pi * (3 * t.sum() / (4 * np.pi)) ** (2 / 3)  # surface of the ball of the same volume
    assert surface > 1.15 * sphere  # lobulated, spiculated: more surface than a ball


def test_tumour_radius_controls_size_and_location():
    kw = {"shape": 64, "spacing": 2.0, "seed": 4, "noise_sd": 0}
    small = make_abdomen_phantom(**kw, tumor_radius_mm=6.0, tumor_location="head")
    large = make_abdomen_phantom(**kw, tumor_radius_mm=11.0, tumor_location="head")
    tail = make_abdomen_phantom(**kw | {"shape": 96}, tumor_radius_mm=8.0, tumor_location="tail")
    n_small, n_large = (small.label == 2).sum(), (large.label == 2).sum()
    assert n_large / n_small == pytest.approx((11 / 6) ** 3, rel=0.6)
    assert small.info["tumor"]["location"] == "head" and tail.info["tumor"]["location"] == "tail"
    assert small.info["tumor"]["centre_mm"][0] > tail.info["tumor"]["centre_mm"][0] + 40  # head right, tail left


def test_default_grid_holds_pancreas_and_tumour_cubes():
    vol = make_abdomen_phantom(seed=0)  # 128^3 at 1 mm, centred on the pancreas
    assert vol.image.shape == (128, 128, 128)
    c = np.asarray(vol.info["tumor"]["centre_vox"])
    assert np.all(c >= 16) and np.all(c <= 112)  # the 32^3 tumour cube at 1 mm fits
    assert (vol.label == 1).sum() > 20000  # > 20 mL of pancreas in the 128 mm cube


def test_portal_venous_means_within_literature(abdomen, body):
    for name, (lo, hi) in PV_LITERATURE.items():
        mean, sd = eroded_stats(body if name == "spleen" else abdomen, name)  # the spleen is outside the 192 mm crop
        assert lo - PV_TOLERANCE <= mean <= hi + PV_TOLERANCE, f"{name}: {mean:.1f} HU not in [{lo}, {hi}] +- tol"
        assert 5.0 < sd < 40.0, f"{name}: texture SD {sd:.1f}"
    bone, _ = eroded_stats(abdomen, "vertebra")
    assert 150.0 < bone < 350.0


def test_contrast_phases():
    kw = {"shape": (128, 96, 64), "spacing": 2.5, "seed": 3, "centre": "body", "age": 35}
    nc = make_abdomen_phantom(**kw, phase="non_contrast")
    pv = make_abdomen_phantom(**kw)
    pp = make_abdomen_phantom(**kw, phase="pancreatic")
    for name in ("liver", "spleen", "aorta", "kidney", "pancreas"):
        assert eroded_stats(pv, name)[0] - eroded_stats(nc, name)[0] > 30.0
    assert abs(eroded_stats(pv, "subcutaneous_fat")[0] - eroded_stats(nc, "subcutaneous_fat")[0]) < 5.0
    assert eroded_stats(pp, "aorta")[0] > eroded_stats(pv, "aorta")[0] + 50  # arterial phase
    contrast = {k: eroded_stats(v, "pancreas")[0] - eroded_stats(v, "tumor")[0] for k, v in (("pv", pv), ("pp", pp))}
    assert contrast["pp"] > contrast["pv"]  # PDAC most conspicuous in the pancreatic phase


def _real_stats(real_ct_dir):
    ct, _ = load_volume(real_ct_dir / "ct.nii.gz", dtype=np.float32)
    out = {}
    for organ, files in REAL_MASKS.items():
        m = np.zeros(ct.shape, dtype=bool)
        for f in files:
            m |= load_volume(real_ct_dir / "masks" / f"{f}.nii.gz")[0] > 0
        out[organ] = (float(ct[m].mean()), float(ct[m].std()))
    return out, ct


def liver_noise(image: np.ndarray, mask: np.ndarray) -> tuple[float, list[float]]:
    """SD and per-axis neighbour correlation inside a liver mask eroded by 2 voxels (homogeneous parenchyma)."""
    m = ndimage.binary_erosion(mask, iterations=2)
    corr = []
    for ax in range(3):
        a, b = [slice(None)] * 3, [slice(None)] * 3
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        mm = m[tuple(a)] & m[tuple(b)]
        corr.append(float(np.corrcoef(image[tuple(a)][mm], image[tuple(b)][mm])[0, 1]))
    return float(image[m].std()), corr


@pytest.mark.realct
def test_non_contrast_phantom_close_to_real_ct(real_ct_dir):
    real, ct = _real_stats(real_ct_dir)
    assert real["liver"][0] == pytest.approx(44, abs=3)  # the README's measurement, as a sanity check
    vol = make_abdomen_phantom(ct.shape, 3.0, seed=1, phase="non_contrast", tumor=False, centre="body")
    for organ, (r_mean, r_sd) in real.items():
        m = vol.organs == ABDOMEN_LABELS[organ]
        if organ in ("aorta", "ivc"):  # the phantom's labels include thin branches (SMA, iliacs): lumen only
            m = ndimage.binary_erosion(m)
        p_mean, p_sd = float(vol.image[m].mean()), float(vol.image[m].std())
        assert abs(p_mean - r_mean) <= REAL_BANDS[organ], f"{organ}: phantom {p_mean:.0f} vs real {r_mean:.0f}"
        assert r_sd / 3 <= p_sd <= r_sd * 3, f"{organ}: SD phantom {p_sd:.0f} vs real {r_sd:.0f}"


@pytest.mark.realct
def test_noise_amplitude_and_correlation_match_real_liver(real_ct_dir):
    ct, _ = load_volume(real_ct_dir / "ct.nii.gz", dtype=np.float32)
    liver = load_volume(real_ct_dir / "masks" / "liver.nii.gz")[0] > 0
    r_sd, r_corr = liver_noise(ct, liver)
    vol = make_abdomen_phantom(ct.shape, 3.0, seed=1, phase="non_contrast", tumor=False, centre="body")
    p_sd, p_corr = liver_noise(vol.image, vol.organs == ABDOMEN_LABELS["liver"])
    assert p_sd == pytest.approx(r_sd, rel=0.25), (p_sd, r_sd)
    assert abs(np.mean(p_corr) - np.mean(r_corr)) < 0.1, (p_corr, r_corr)


def test_noise_model_is_anisotropic_and_dose_dependent(rng):
    from ctsynth.data.phantoms.abdomen import NOISE_MODEL

    assert NOISE_MODEL.sd_at((3.0,) * 3, dose=0.25) == pytest.approx(2 * NOISE_MODEL.sd_at((3.0,) * 3))
    n = NOISE_MODEL.sample(rng, (48, 48, 48), (1.5, 1.5, 1.5), 1.0)
    assert n.std() == pytest.approx(1.0, rel=0.05)
    c = liver_noise(n, np.ones(n.shape, bool))[1]
    assert c[2] > c[0] + 0.1  # slice profile wider than the in-plane kernel
    coarse = liver_noise(NOISE_MODEL.sample(rng, (48, 48, 48), (3.0,) * 3, 1.0), np.ones(n.shape, bool))[1]
    assert max(np.abs(coarse)) < 0.15 < c[0]  # correlation is physical: strong at 1.5 mm, weak at 3 mm


@pytest.mark.realct
def test_portal_venous_phantom_vs_real_ct_loose(real_ct_dir, body):
    """The real CT is unenhanced (aorta 41 HU): the default phantom must be brighter by a contrast-like margin."""
    real, _ = _real_stats(real_ct_dir)
    for organ in ("liver", "spleen", "kidney", "aorta", "ivc", "pancreas"):
        m = ndimage.binary_erosion(body.organs == ABDOMEN_LABELS[organ]) & (body.label != 2)
        gain = float(body.image[m].mean()) - real[organ][0]
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


def test_anisotropic_grid():
    vol = make_abdomen_phantom((72, 64, 48), (2.2, 2.5, 3.0), seed=2, tumor_radius_mm=8.0)
    assert vol.image.shape == (72, 64, 48)
    assert spacing_from_affine(vol.affine) == pytest.approx((2.2, 2.5, 3.0))
    assert {1, 2} <= set(np.unique(vol.label))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (64, 64)}, "shape must be 3 positive integers"),
        ({"shape": (64, 0, 64)}, "shape must be 3 positive integers"),
        ({"shape": (64.5, 64, 64)}, "shape must be 3 positive integers"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be 3 positive numbers"),
        ({"spacing": -2.0}, "spacing must be 3 positive numbers"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"phase": "delayed"}, "phase must be one of"),
        ({"noise_sd": -1.0}, "noise_sd must be >= 0"),
        ({"dose": 0.0}, "dose must be a positive number"),
        ({"tumor_radius_mm": 0.0}, "tumor_radius_mm must be > 0"),
        ({"tumor_location": "neck"}, "tumor_location must be one of"),
        ({"centre": "liver"}, "centre must be one of"),
        ({"centre": (1.0, 2.0)}, "centre must be one of"),
        ({"sex": "x"}, "sex must be one of"),
        ({"age": 5}, "age must be a number of years"),
        ({"shape": 32, "spacing": 1.0, "tumor_radius_mm": 20.0}, "does not fit in the field of view"),
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


LUNG_IDS = (CHEST_LABELS["lung"], CHEST_LABELS["vessel"], CHEST_LABELS["airway"], CHEST_LABELS["nodule"])


def _nodule_sites(vol) -> list[str]:
    """Geometric site of every nodule of a phantom, in the order of ``info['nodules']``."""
    comps, n = ndimage.label(vol.label == 1)
    centroids = np.array(ndimage.center_of_mass(np.ones(comps.shape), comps, range(1, n + 1)))
    out = []
    for info in vol.info["nodules"]:  # the centre may lie in the vessel a juxta-vascular nodule wraps: nearest one
        k = 1 + int(np.argmin(np.linalg.norm(centroids - np.asarray(info["centre_vox"]), axis=1)))
        out.append(nodule_site(vol.organs, comps == k, LUNG_IDS, CHEST_LABELS["vessel"]))
    return out


def test_nodules_sit_where_drawn(chest):
    nod = chest.label == 1
    _, n = ndimage.label(nod)
    assert n == 2
    assert _nodule_sites(chest) == [i["site"] for i in chest.info["nodules"]]
    for info in chest.info["nodules"]:
        c = tuple(np.round(info["centre_vox"]).astype(int))
        if info["type"] != "ground_glass" and chest.label[c]:
            assert chest.image[c] > -300  # solid core: soft-tissue density at the centre


@pytest.mark.parametrize(
    "types, sites",
    [({"ground_glass": 1.0}, {"juxta_pleural": 1.0}), ({"solid": 1.0}, {"juxta_vascular": 1.0})],
)
def test_nodule_type_and_site_are_painted(types, sites):
    vol = make_chest_phantom(
        (80, 80, 80), 2.0, seed=2, nodules=3, nodule_radius_mm=5.0, nodule_types=types, nodule_sites=sites
    )
    (kind,), (site,) = types, sites
    assert [i["type"] for i in vol.info["nodules"]] == [kind] * 3
    assert _nodule_sites(vol) == [site] * 3
    hu = vol.image[vol.label == 1]
    if kind == "ground_glass":  # hazy: well below soft tissue everywhere
        assert -800 < hu.mean() < -350 and np.percentile(hu, 90) < -250, (hu.mean(), np.percentile(hu, 90))
    else:  # solid: soft tissue in the middle
        assert np.percentile(hu, 90) > -100, np.percentile(hu, 90)


def test_nodule_fractions_honoured_over_seeds():
    types = {"solid": 0.5, "part_solid": 0.25, "ground_glass": 0.25}
    sites = {"isolated": 0.4, "juxta_pleural": 0.4, "juxta_vascular": 0.2}
    drawn_t, drawn_s = [], []
    for seed in range(8):
        vol = make_chest_phantom(
            (64, 64, 64),
            3.0,
            seed=seed,
            nodules=5,
            nodule_radius_mm=4.5,
            noise_sd=0,
            nodule_types=types,
            nodule_sites=sites,
        )
        assert _nodule_sites(vol) == [i["site"] for i in vol.info["nodules"]]  # the site is true of the painting
        drawn_t += [i["type"] for i in vol.info["nodules"]]
        drawn_s += [i["site"] for i in vol.info["nodules"]]
    n = len(drawn_t)
    for table, drawn in ((types, drawn_t), (sites, drawn_s)):
        for name, p in table.items():
            k = drawn.count(name)
            assert abs(k - n * p) <= 3.5 * np.sqrt(n * p * (1 - p)) + 1, (name, k, n * p)
    # and the draw itself over many nodules (no placement): fractions within 2 percentage points
    from ctsynth.data.phantoms.nodules import NODULE_SITES, NODULE_TYPES, draw_kinds

    k, w = draw_kinds(np.random.default_rng(0), 20000, types, sites)
    for table, idx, names in ((types, k, NODULE_TYPES), (sites, w, NODULE_SITES)):
        freq = np.bincount(idx, minlength=3) / len(idx)
        np.testing.assert_allclose(freq, [table[x] for x in names], atol=0.02)


@pytest.mark.realct
def test_chest_lung_vessel_density_matches_real(real_chest_dir):
    """Fraction of lung-field voxels above -500 HU, real CT angiography crop vs the phantom in the same geometry."""
    ct, aff = load_volume(real_chest_dir / "ct.nii.gz", dtype=np.float32)
    sp = spacing_from_affine(aff)
    real = lung_dense_fraction(ct, sp)
    assert 0.04 <= real <= 0.08, real  # the README's "about 6 %"
    vol = make_chest_phantom(ct.shape, sp, seed=0, nodules=0, phase="arterial", centre_mm="heart")  # crop as real
    phantom = lung_dense_fraction(vol.image, sp)
    assert phantom == pytest.approx(real, rel=0.3), (phantom, real)


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
        ({"nodule_radius_mm": 60.0}, "could not place an isolated nodule"),
        ({"nodule_types": {"solid": 0.5}}, "nodule_types must be non-negative fractions summing to 1"),
        ({"nodule_sites": {"pleural": 1.0}}, "nodule_sites: unknown name"),
        ({"dose": 0}, "dose must be a positive number"),
        ({"centre_mm": "lung"}, 'centre_mm must be "heart" or three numbers'),
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
    # a 40 mm field of view cannot hold a 25 mm-radius tumour: the writer shrinks it instead of failing
    with pytest.raises(ValueError, match="does not fit in the field of view"):
        make_abdomen_phantom((40, 40, 40), (1.0, 1.0, 1.0), seed=0, tumor_radius_mm=25.0)
    ds = write_phantom_dataset(tmp_path, kind="abdomen", n=1, size=40, spacing=1.0, tumor_radius_mm=25.0)
    label, _ = load_volume(ds.parent / "labelsTr" / "phantom_abdomen_000.nii.gz")
    assert (label == 2).sum() > 0 and (label == 1).sum() > 0
