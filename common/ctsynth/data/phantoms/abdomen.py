"""Procedural abdominal CT phantom: one adult of a population, at true physical scale, with pancreas and PDAC.

The anatomy is written in millimetres in a patient frame (``u`` towards the patient's right, ``v`` anterior, ``w``
superior; origin on the midline at the level of the pancreatic neck, about L1-L2). The image grid only samples this
patient (:class:`~ctsynth.data.phantoms.geometry.BodyFrame`): a small field of view is a crop of a full-size body,
centred by default on the seed's pancreas. Each seed draws an adult (:mod:`ctsynth.data.phantoms.population`): sex,
age, habitus (subcutaneous and visceral fat), organ volumes from published adult distributions, jittered organ
positions, orientations and level, and a smooth random deformation of every organ outline. Every organ is scaled
so that its volume meets the drawn target, measured on a fixed reference grid, so it does not depend on the image
grid.

Structures: skin, subcutaneous fat, abdominal wall muscles, visceral fat; lower ribs and lung bases above the
diaphragm domes, heart above the central tendon; liver with portal and hepatic vein branches, gallbladder, stomach
with an air-fluid level, duodenal C-loop, small bowel and colon, spleen, kidneys (cortex, medulla, sinus fat),
adrenals, aorta with celiac trunk, SMA and iliac arteries, IVC and iliac veins, portal vein, splenic vein and SMV,
psoas, quadratus lumborum and paraspinal muscles, lumbar vertebrae; the pancreas (uncinate process, head, neck,
body, tail along the splenic vein; lobulated outline with interlobular fat; main duct) and an optional PDAC with
an infiltrative margin, upstream duct dilatation and tail atrophy; optional CT table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ctsynth.data.labels import ABDOMEN_LABELS, to_msd_pancreas
from ctsynth.data.phantoms.anatomy import SpineShape, paint_spine
from ctsynth.data.phantoms.geometry import BodyFrame, Slices, SmoothField, ellipsoid, rotation, smooth_curve, tube
from ctsynth.data.phantoms.population import Patient, check_patient_args, draw_patient
from ctsynth.data.phantoms.render import KernelNoise, render
from ctsynth.data.phantoms.tissues import ABDOMEN_TISSUES, tissue_ids
from ctsynth.data.phantoms.volume import PhantomVolume, check_phase, check_shape, check_spacing, seed_streams

T = tissue_ids(ABDOMEN_TISSUES)
TISSUE_TO_LABEL = np.array([t.label for t in ABDOMEN_TISSUES], dtype=np.uint8)
MSD_PANCREAS_NAMES = {"background": 0, "pancreas": 1, "tumor": 2}
#: PDAC location frequencies used when ``tumor_location`` is None: about two thirds arise in the head.
TUMOR_LOCATION_PROBS = {"head": 0.65, "body": 0.2, "tail": 0.15}
#: Named grid centres: the seed's pancreas (default; small fields of view hold pancreas and tumour) or the body.
CENTRES = ("pancreas", "body")
#: Calibrated scanner noise (docs/phantoms.md, "Calibration").
NOISE_MODEL = KernelNoise()
#: Spacing (mm) of the reference grid on which organ volumes are fitted to their targets.
REFERENCE_SPACING_MM = 2.0
#: Fraction of the pancreatic centreline (from the uncinate end) where head, neck-body and tail begin.
PANCREAS_PARTS = {"head": (0.0, 0.36), "body": (0.36, 0.7), "tail": (0.7, 1.0)}

Shape = tuple[Slices, np.ndarray]


def make_abdomen_phantom(
    shape: tuple[int, int, int] | int = (128, 128, 128),
    spacing: tuple[float, float, float] | float = (1.0, 1.0, 1.0),
    seed: int = 0,
    tumor: bool = True,
    tumor_radius_mm: float = 10.0,
    shrink_tumor_to_fit: bool = False,
    noise_sd: float | None = None,
    phase: str = "portal_venous",
    tumor_location: str | None = None,
    centre: str | Sequence[float] = "pancreas",
    sex: str | None = None,
    age: float | None = None,
    dose: float = 1.0,
    table: bool = False,
) -> PhantomVolume:
    """Generate an abdominal CT phantom in HU with organ labels and an optional PDAC tumour.

    The same ``seed`` gives a bit-identical volume; patient, tumour and noise use separate random streams, so the
    same seed with ``tumor=False`` gives the same patient without the lesion (and without its duct dilatation and
    tail atrophy). The same seed on two grids gives the same patient: organ volumes agree within partial-volume
    error.

    Args:
        shape: volume shape (x, y, z) in voxels, or one int for a cube.
        spacing: voxel size (x, y, z) in mm, or one number for isotropic voxels.
        seed: non-negative integer seed.
        tumor: whether to insert a hypo-attenuating PDAC tumour.
        tumor_radius_mm: nominal tumour radius in mm (the infiltrative margin varies around it).
        shrink_tumor_to_fit: when a tumour of ``tumor_radius_mm`` does not fit in the field of view, use 80 % of
            the largest radius that fits instead of raising (used by the dataset writer).
        noise_sd: SD in HU of the scanner noise; None for the calibrated kernel-noise model at this spacing and
            ``dose``; 0 for none.
        phase: "portal_venous" (default, as MSD Task07), "pancreatic" (late arterial) or "non_contrast".
        tumor_location: "head", "body", "tail" or None (random: head 65 %, body 20 %, tail 15 %).
        centre: patient point at the grid centre: "pancreas" (the seed's pancreatic head-neck region, default),
            "body" (the middle of the abdomen) or three numbers in mm (patient frame).
        sex: "female", "male" or None (random).
        age: years (20-90) or None (random 25-80).
        dose: relative tube current-time product (noise SD scales as ``1 / sqrt(dose)``).
        table: whether to add the CT table under the patient.

    Returns:
        A :class:`PhantomVolume`; ``label`` holds pancreas = 1 and tumour = 2, ``organs`` the full
        :data:`~ctsynth.data.labels.ABDOMEN_LABELS` map, ``info`` the patient (``info['patient']``), grid centre
        and the tumour (centre, radius, location). The affine maps voxels to patient millimetres.

    Raises:
        ValueError: for a bad shape, spacing, seed, phase, noise level, dose, centre, sex, age or tumour location,
            or a tumour that does not fit in the field of view.
    """
    shape = check_shape(shape)
    spacing = check_spacing(spacing)
    phase = check_phase(phase)
    check_patient_args(sex, age)
    if noise_sd is not None and not (np.isfinite(noise_sd) and noise_sd >= 0):
        raise ValueError(f"noise_sd must be >= 0 HU, got {noise_sd!r}")
    if not (isinstance(dose, int | float) and np.isfinite(dose) and dose > 0):
        raise ValueError(f"dose must be a positive number, got {dose!r}")
    if tumor and not (np.isfinite(tumor_radius_mm) and tumor_radius_mm > 0):
        raise ValueError(f"tumor_radius_mm must be > 0, got {tumor_radius_mm!r}")
    if tumor_location is not None and tumor_location not in TUMOR_LOCATION_PROBS:
        raise ValueError(f"tumor_location must be one of {tuple(TUMOR_LOCATION_PROBS)} or None, got {tumor_location!r}")
    rng_anat, rng_tumor, rng_noise, rng_hu = seed_streams(seed, 4)
    patient = draw_patient(rng_anat, sex, age)
    plan = _plan(rng_anat, patient)
    plan["scales"] = {name: _fit_scale(*spec) for name, spec in _organ_builders(plan, _cavity_fn(plan)).items()}
    centre_mm = _grid_centre(centre, plan)
    frame = BodyFrame(shape, spacing, centre_mm)
    lesion = _draw_tumor(rng_tumor, plan, frame, float(tumor_radius_mm), tumor_location, shrink_tumor_to_fit)
    if not tumor:
        lesion = None
    tissue = _paint(frame, plan, lesion, table)
    sd = NOISE_MODEL.sd_at(spacing, dose) if noise_sd is None else float(noise_sd)
    info: dict = {
        "seed": int(seed),
        "phase": phase,
        "noise_sd": sd,
        "dose": float(dose),
        "centre_mm": [float(c) for c in centre_mm],
        "patient": patient.as_dict(),
        "tumor": None,
    }
    offsets = _enhancement_offsets(rng_hu, phase)
    if lesion is not None:
        info["tumor"] = _paint_tumor(frame, tissue, lesion)
        offsets[T["tumor"]] = offsets.get(T["pancreas"], 0.0) + rng_hu.uniform(-8, 8)
        offsets[T["tumor_necrosis"]] = offsets[T["tumor"]]
    image = render(tissue, ABDOMEN_TISSUES, phase, rng_noise, spacing, sd, offsets, noise_model=NOISE_MODEL)
    organs = TISSUE_TO_LABEL[tissue]
    return PhantomVolume(
        image=image,
        label=to_msd_pancreas(organs),
        organs=organs,
        affine=frame.affine(),
        label_names=dict(MSD_PANCREAS_NAMES),
        organ_names=dict(ABDOMEN_LABELS),
        info=info,
    )


# ----------------------------------------------------------------------------------------------- the patient plan


class Plan(dict):
    """All per-seed geometric parameters of one patient (mm), drawn before anything is painted."""

    __getattr__ = dict.__getitem__


def _j(rng: np.random.Generator, c: Sequence[float], s: float | Sequence[float]) -> np.ndarray:
    """Gaussian jitter of a point (mm), SD ``s``."""
    return np.asarray(c, dtype=np.float64) + rng.normal(0.0, 1.0, len(c)) * np.asarray(s, dtype=np.float64)


def _plan(rng: np.random.Generator, pt: Patient) -> Plan:
    """Draw the body outline, organ placements, orientations and deformations of one patient."""
    p = Plan(patient=pt)
    vis = pt.visceral_fat
    # body core (outer surface of the wall muscles) and subcutaneous fat; origin at the pancreatic neck level
    p["core"] = np.array([118.0 + 16.0 * vis, 78.0 + 20.0 * vis, 112.0]) * (pt.height_cm / 170.0) ** 0.5
    p["core"] *= np.exp(rng.normal(0, 0.04, 3))
    p["core_v"] = -8.0
    sc = pt.subcutaneous_fat_mm
    p["fat"] = np.array([0.8 * sc, sc, 0.55 * sc])  # lateral, anterior, posterior
    p["muscle_mm"] = rng.uniform(9.0, 15.0)
    p["z_wave"] = (rng.uniform(0.02, 0.05), rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.08))
    p["harmonics"] = np.stack([np.arange(2, 6), rng.uniform(0.005, 0.02, 4), rng.uniform(0, 2 * np.pi, 4)], 1)
    # whole-organ block offset (breathing phase, body height): moves every viscus together
    shift = _j(rng, (0.0, 0.0, 0.0), (5.0, 4.0, 12.0))
    p["shift"] = shift
    p["dome"] = (165.0 + rng.normal(0, 10), 150.0 + rng.normal(0, 10))  # right, left dome apex height
    # skeleton: vertebral column behind the aorta (fixed to the body, not to the viscera)
    p["spine_v"] = -52.0 + rng.normal(0, 3)
    # organ centres (before the block shift), mm
    p["liver_c"] = _j(rng, (68.0, 2.0, 88.0), (7.0, 6.0, 8.0)) + shift
    p["spleen_c"] = _j(rng, (-98.0, -38.0, 72.0), (7.0, 7.0, 9.0)) + shift
    p["kidney_c"] = (
        _j(rng, (74.0, -50.0, -22.0), (5.0, 4.0, 10.0)) + shift,
        _j(rng, (-74.0, -48.0, -6.0), (5.0, 4.0, 10.0)) + shift,
    )
    p["stomach_c"] = _j(rng, (-50.0, 45.0, 98.0), (8.0, 6.0, 8.0)) + shift
    p["gb_c"] = _j(rng, (52.0, 42.0, 22.0), (6.0, 5.0, 8.0)) + shift
    p["aorta_xy"] = _j(rng, (-16.0, -22.0), (3.0, 2.0))
    p["ivc_xy"] = _j(rng, (26.0, -18.0), (3.0, 2.0))
    p["bifurcation_z"] = -115.0 + rng.normal(0, 10) + shift[2] * 0.3
    # pancreas centreline: uncinate, head, neck, body, body-tail, tail (mm); AP semi-thickness per control point
    ctrl = np.array(
        [
            _j(rng, (16.0, -2.0, -26.0), 3.0),
            _j(rng, (36.0, 8.0, -8.0), 3.0),
            _j(rng, (8.0, 22.0, 4.0), 3.0),
            _j(rng, (-26.0, 20.0, 14.0), 4.0),
            _j(rng, (-60.0, 6.0, 24.0), 5.0),
            _j(rng, (-86.0, -18.0, 38.0), 6.0),
        ]
    )
    tilt = rotation((0.0, np.deg2rad(rng.normal(0, 6)), np.deg2rad(rng.normal(0, 8))))  # gland orientation
    p["pancreas_ctrl"] = (ctrl - ctrl[2]) @ tilt.T + ctrl[2] + shift
    p["pancreas_r"] = np.array([8.5, 12.0, 6.5, 9.0, 8.5, 7.5]) * np.exp(rng.normal(0, 0.08, 6))
    p["pancreas_stretch"] = rng.uniform(1.25, 1.6)
    # smooth random deformations (relative amplitude of the implicit field) of every organ
    for name, n, lam, amp in (
        ("liver", 6, 90.0, 0.10),
        ("spleen", 5, 60.0, 0.10),
        ("kidney", 4, 50.0, 0.05),
        ("stomach", 5, 70.0, 0.10),
        ("pancreas", 6, 40.0, 0.10),
        ("lobules", 10, 7.0, 1.0),
        ("interlobular", 10, 5.0, 1.0),
        ("gb", 3, 40.0, 0.06),
        ("colon", 4, 60.0, 0.06),
        ("duodenum", 3, 40.0, 0.05),
        ("loops", 16, 60.0, 1.0),
        ("gas", 6, 50.0, 1.0),
        ("stool", 8, 18.0, 1.0),
    ):
        p["wob_" + name] = SmoothField.random(rng, n, lam, amp * rng.uniform(0.6, 1.4))
    p["wob_kidney2"] = SmoothField.random(rng, 4, 50.0, 0.05)
    p["rot_liver"] = rotation(rng.normal(0, np.deg2rad(6), 3))
    p["rot_spleen"] = rotation((0.0, np.deg2rad(rng.normal(0, 8)), np.deg2rad(-40 + rng.normal(0, 8))))
    p["rot_kidney"] = tuple(
        rotation(
            (
                np.deg2rad(rng.normal(-8, 5)),
                sd * np.deg2rad(12 + rng.normal(0, 4)),
                -sd * np.deg2rad(25 + rng.normal(0, 6)),
            )
        )
        for sd in (1.0, -1.0)
    )
    p["rot_stomach"] = rotation((0.0, np.deg2rad(rng.normal(10, 6)), np.deg2rad(rng.uniform(15, 35))))
    p["rot_gb"] = rotation((np.deg2rad(rng.normal(35, 10)), np.deg2rad(rng.normal(0, 10)), 0.0))
    p["colon_ctrl"] = (
        np.array(
            [
                _j(rng, c, 6.0)
                for c in (
                    (92.0, -8.0, -160.0),
                    (96.0, -5.0, -60.0),
                    (88.0, 15.0, 20.0),
                    (40.0, 60.0, -15.0),
                    (-20.0, 62.0, -30.0),
                    (-80.0, 35.0, 40.0),
                    (-96.0, 0.0, 45.0),
                    (-98.0, -15.0, -60.0),
                    (-85.0, 0.0, -160.0),
                )
            ]
        )
        + shift
    )
    p["colon_r"] = rng.uniform(20.0, 27.0)
    p["bowel_top"] = rng.uniform(-35.0, -15.0) + shift[2]
    p["stomach_level"] = rng.uniform(0.0, 0.6)
    p["spine"] = rng.integers(2**31)  # seed of the spine's own draws (it needs the frame for the cortex width)
    return p


def _grid_centre(centre: str | Sequence[float], plan: Plan) -> tuple[float, float, float]:
    """Resolve the ``centre`` argument to a patient point (mm)."""
    if isinstance(centre, str):
        if centre not in CENTRES:
            raise ValueError(f"centre must be one of {CENTRES} or three numbers (mm), got {centre!r}")
        if centre == "body":
            return (0.0, float(plan.core_v), 10.0)
        c = plan.pancreas_ctrl
        pt = 0.5 * (c[1] + c[2])  # between head and neck: head, neck, SMV and proximal body in a 64 mm cube
        return (float(pt[0]), float(pt[1]), float(pt[2]))
    try:
        vals = tuple(float(x) for x in centre)
    except (TypeError, ValueError):
        raise ValueError(f"centre must be one of {CENTRES} or three numbers (mm), got {centre!r}") from None
    if len(vals) != 3 or not all(np.isfinite(vals)):
        raise ValueError(f"centre must be one of {CENTRES} or three numbers (mm), got {centre!r}")
    return vals  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ body and organs


def _body_fields(frame: BodyFrame, plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cross-section fields of the skin, the muscle core and the visceral cavity, and their scale along z.

    A voxel ``(i, j, k)`` is inside a layer when ``field[i, j] <= z_scale[k]``. The cross-section changes along z:
    a slow waist-like wave, a wider pelvis below -150 mm and a lower rib cage that widens above +60 mm. Keeping
    the fields 2D and the scale 1D makes each 3D test one comparison pass.

    Returns:
        ``(skin, core, cavity, z_scale)``: three float32 ``(nx, ny)`` squared elliptical radii and the float32
        ``(nz,)`` squared z scale.
    """
    u, v, w = frame.axes
    amp, ph, pelvis = plan.z_wave
    w64 = w.astype(np.float64)
    zf = (1.0 + amp * np.sin(w64 / 90.0 + ph) + pelvis / (1.0 + np.exp((w64 + 150.0) / 25.0))) * (
        1.0 + 0.05 / (1.0 + np.exp(-(w64 - 90.0) / 30.0))
    )
    U, V = u[:, None], (v - plan.core_v)[None, :]
    theta = np.arctan2(V, U)
    wob = np.ones_like(theta)
    for k, a, p in plan.harmonics:
        wob += a * np.cos(k * theta + p)

    def field(lat: float, ant: float, post: float) -> np.ndarray:
        f = (U / lat) ** 2 + np.where(V > 0, (V / ant) ** 2, np.abs(V / post) ** 2.6)
        return (f / wob**2).astype(np.float32)

    core = plan.core
    fat = plan.fat
    m = plan.muscle_mm
    skin = field(core[0] + fat[0], core[1] + fat[1], core[2] + fat[2])
    mus = field(core[0], core[1], core[2])
    cav = field(core[0] - m, core[1] - m, core[2] - 1.6 * m)
    return skin, mus, cav, (zf**2).astype(np.float32)


def _cavity_fn(plan: Plan) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Analytic visceral-cavity test on any grid (the same formula as :func:`_body_fields`)."""

    def cavity_fn(U: np.ndarray, V: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Analytic cavity test on any grid (the same formula as ``_body_fields``)."""
        amp, ph, pelvis = plan.z_wave
        zf = (1.0 + amp * np.sin(W / 90.0 + ph) + pelvis / (1.0 + np.exp((W + 150.0) / 25.0))) * (
            1.0 + 0.05 / (1.0 + np.exp(-(W - 90.0) / 30.0))
        )
        Vc = V - plan.core_v
        m = plan.muscle_mm
        theta = np.arctan2(Vc, U)
        wob = 1.0 + sum(a * np.cos(k * theta + p) for k, a, p in plan.harmonics)
        lat, ant, post = plan.core[0] - m, plan.core[1] - m, plan.core[2] - 1.6 * m
        f = (U / lat) ** 2 + np.where(Vc > 0, (Vc / ant) ** 2, np.abs(Vc / post) ** 2.6)
        return f / wob**2 <= zf**2

    return cavity_fn


def _below_diaphragm(plan: Plan, U: np.ndarray, V: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Whether points lie under the diaphragm: two domes (right higher) over a posterior costophrenic recess."""
    return W < _dome_height(plan, U, V)


def _dome_height(plan: Plan, U: np.ndarray, V: np.ndarray) -> np.ndarray:
    zr, zl = plan.dome
    right = zr - 0.011 * (U - 60.0) ** 2 - 0.006 * (V + 10.0) ** 2
    left = zl - 0.011 * (U + 60.0) ** 2 - 0.006 * (V + 10.0) ** 2
    return np.maximum(right, left) + plan.shift[2]


def _union(frame: BodyFrame, shapes: list[Shape | None]) -> Shape | None:
    """Pointwise minimum of several implicit fields over the union of their boxes."""
    shapes = [s for s in shapes if s is not None]
    if not shapes:
        return None
    lo = [min(s[0][a].start for s in shapes) for a in range(3)]
    hi = [max(s[0][a].stop for s in shapes) for a in range(3)]
    out = np.full(tuple(b - a for a, b in zip(lo, hi, strict=True)), np.inf, dtype=np.float32)
    for sl, f in shapes:
        dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, lo, strict=True))
        np.minimum(out[dst], f, out=out[dst])
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), out


def _clip(frame: BodyFrame, shape: Shape | None, allowed: Callable | None) -> Shape | None:
    """Set the field to infinity where ``allowed(U, V, W)`` is False."""
    if shape is None or allowed is None:
        return shape
    sl, f = shape
    ok = np.broadcast_to(allowed(*frame.grids(sl)), f.shape)
    return sl, np.where(ok, f, np.float32(np.inf))


def _fit_scale(build: Callable[[BodyFrame, float], Shape | None], centre: np.ndarray, reach: float, ml: float) -> float:
    """Scale factor of an organ so that its volume (``field <= 1``) is ``ml`` on a fixed reference grid.

    ``build(frame, s)`` paints the organ scaled by ``s`` about ``centre``; its volume grows as ``s^3`` up to the
    clipping by the cavity and the diaphragm, so two secant-like updates are enough. The reference grid (2 mm,
    centred on the organ) does not depend on the image grid, which is what makes organ volumes grid-independent.
    """
    n = int(np.ceil(2 * reach / REFERENCE_SPACING_MM))
    ref = BodyFrame((n, n, n), (REFERENCE_SPACING_MM,) * 3, tuple(float(c) for c in centre))
    s = 1.0
    for _ in range(3):
        shape = build(ref, s)
        vol = 0.0 if shape is None else float((shape[1] <= 1.0).sum()) * ref.voxel_ml
        if vol <= 0:
            return s
        s *= (ml / vol) ** (1.0 / 3.0)
    return s


def _organ_builders(
    plan: Plan, cavity_fn: Callable, pancreas_r: np.ndarray | None = None
) -> dict[str, tuple[Callable, np.ndarray, float, float]]:
    """Builders ``(frame, s) -> shape`` of the volume-calibrated organs, with centre, reference reach and target mL.

    ``pancreas_r`` overrides the gland's radii when painting (tail atrophy), after its scale was fitted.
    """
    pancreas_r = plan.pancreas_r if pancreas_r is None else pancreas_r

    def below(U: np.ndarray, V: np.ndarray, W: np.ndarray) -> np.ndarray:
        return _below_diaphragm(plan, U, V, W) & cavity_fn(U, V, W)

    def liver(frame: BodyFrame, s: float) -> Shape | None:
        c = plan.liver_c
        R = plan.rot_liver
        wob = plan.wob_liver.scaled(s)
        top = 1.0 + wob.bound  # the lobes' boxes hold everything the shared wobble can bring inside
        parts = [
            ellipsoid(frame, c, s * np.array([78.0, 82.0, 78.0]), R, level=top),
            ellipsoid(frame, c + s * R @ np.array([-78.0, 40.0, 8.0]), s * np.array([62.0, 38.0, 46.0]), R, level=top),
            ellipsoid(frame, c + s * R @ np.array([10.0, -5.0, -62.0]), s * np.array([48.0, 50.0, 40.0]), R, level=top),
        ]
        shape = _union(frame, parts)
        if shape is None:
            return None
        sl, f = shape
        U, V, W = frame.grids(sl)
        f += wob(U - np.float32(c[0]), V - np.float32(c[1]), W - np.float32(c[2]))  # one wobble for the three lobes
        return _clip(frame, (sl, f), below)

    def spleen(frame: BodyFrame, s: float) -> Shape | None:
        shape = ellipsoid(
            frame, plan.spleen_c, s * np.array([22.0, 55.0, 48.0]), plan.rot_spleen, plan.wob_spleen.scaled(s)
        )
        return _clip(frame, shape, below)

    def kidney(side: int) -> Callable:
        def build(frame: BodyFrame, s: float) -> Shape | None:
            wob = (plan.wob_kidney, plan.wob_kidney2)[side].scaled(s)
            return ellipsoid(frame, plan.kidney_c[side], s * np.array([26.0, 28.0, 55.0]), plan.rot_kidney[side], wob)

        return build

    def pancreas(frame: BodyFrame, s: float) -> Shape | None:
        c0 = plan.pancreas_ctrl[2]
        pts = smooth_curve(c0 + s * (plan.pancreas_ctrl - c0), 40)
        radii = np.interp(np.linspace(0, 5, 40), np.arange(6), s * pancreas_r)
        shape = tube(frame, pts, radii, stretch=(1.0, 1.0, plan.pancreas_stretch))
        if shape is None:
            return None
        sl, f = shape
        U, V, W = frame.grids(sl)
        f = f + plan.wob_pancreas.scaled(s)(U - c0[0], V - c0[1], W - c0[2])
        return _clip(frame, (sl, f), cavity_fn)

    pt = plan.patient
    return {
        "liver": (liver, plan.liver_c + np.array([-25.0, 10.0, 0.0]), 150.0, pt.liver_ml),
        "spleen": (spleen, plan.spleen_c, 95.0, pt.spleen_ml),
        "kidney_right": (kidney(0), plan.kidney_c[0], 85.0, pt.kidney_ml[0]),
        "kidney_left": (kidney(1), plan.kidney_c[1], 85.0, pt.kidney_ml[1]),
        "pancreas": (pancreas, plan.pancreas_ctrl[2] + np.array([-25.0, 0.0, 5.0]), 105.0, pt.pancreas_ml),
    }


def _paint(frame: BodyFrame, plan: Plan, lesion: dict | None, table: bool) -> np.ndarray:
    """Paint every tissue of the patient on the grid; later structures overwrite earlier ones where they touch."""
    skin2, core2, cav2, zs2 = _body_fields(frame, plan)
    zs = zs2[None, None, :]
    u, v, w = frame.axes
    U3, V3, W3 = u[:, None, None], v[None, :, None], w[None, None, :]
    skin_t = max(2.0, 0.6 * max(frame.spacing))
    body = skin2[:, :, None] <= zs
    cavity = cav2[:, :, None] <= zs
    below = _below_diaphragm(plan, U3, V3, W3)
    abd = cavity & below  # the abdominal cavity
    thorax = cavity & ~below
    # nested layers counted in one uint8 map: 0 air, 1 skin, 2 subcutaneous fat, 3 muscle, 4 visceral fat, 5 lung
    layer = body.view(np.uint8).copy()
    layer += skin2[:, :, None] <= zs * np.float32((1 - skin_t / (plan.core[0] + plan.fat[0])) ** 2)
    muscle = core2[:, :, None] <= zs
    layer += muscle
    layer += cavity
    layer += thorax
    lut = np.array([0, T["skin"], T["subcutaneous_fat"], T["muscle"], T["visceral_fat"], T["lung"]], dtype=np.uint8)
    tissue = lut[layer]

    # --- lung bases above the domes, heart above the central tendon, ribs in the wall above the costal margin
    heart = ellipsoid(frame, (-25.0, 35.0, 215.0 + plan.shift[2]), (75.0, 55.0, 70.0))
    _put(tissue, heart, T["heart"], thorax)
    # costal margin: about +100 mm anteriorly, falling to about -40 mm posteriorly (11th-12th ribs)
    costal = 30.0 + 70.0 * np.clip((V3 - plan.core_v) / plan.core[1], -1, 1) + plan.shift[2]
    phase = ((W3 + 0.45 * (V3 - plan.core_v)) / 26.0) % 1.0  # (1, ny, nz): ribs slope down anteriorly
    rib_vw = (W3 > costal) & (np.abs(phase - 0.5) < 0.2)
    cortex_vw = rib_vw & (np.abs(phase - 0.5) > 0.13)
    wall = (layer == 3) & ~((np.abs(U3) < 35) & (V3 > 0))  # muscle layer, less the costal cartilages in front
    del layer
    tissue[wall & rib_vw] = T["rib_marrow"]
    tissue[wall & cortex_vw] = T["rib_cortex"]
    del wall
    cavity_fn = _cavity_fn(plan)

    # --- small bowel loops (level set of a smooth field) in the lower cavity, gas anteriorly
    bsl = frame.box((0.0, 20.0, plan.bowel_top - 150.0), (140.0, 110.0, 150.0))
    if bsl is not None:
        U, V, W = frame.grids(bsl)
        loops = plan.wob_loops(U, V, W)
        gas = plan.wob_gas(U, V, W) + (V - 30.0) / 40.0
        region = abd[bsl] & (V > -30.0) & (W < plan.bowel_top)
        sub = tissue[bsl]
        sub[region & (loops > 0.15)] = T["stomach_wall"]
        lumen = region & (loops > 0.4)
        sub[lumen] = T["bowel_content"]
        sub[lumen & (gas > 1.1)] = T["bowel_gas"]

    # --- colon frame with mottled content
    curve = smooth_curve(plan.colon_ctrl, 60)
    colon = tube(frame, curve, np.full(len(curve), plan.colon_r), plan.wob_colon)
    if colon is not None:
        sl, f = colon
        U, V, W = frame.grids(sl)
        stool = plan.wob_stool(U, V, W) + (V - 10.0) / 30.0
        ok = abd[sl]
        sub = tissue[sl]
        sub[(f <= 1.0) & ok] = T["stomach_wall"]
        inner = (f <= 0.82) & ok
        sub[inner] = T["bowel_content"]
        sub[inner & (stool > 0.2)] = T["bowel_gas"]

    # --- stomach: wall, fluid, gas above an air-fluid level (supine: gas anterior)
    st_r = np.array([48.0, 38.0, 62.0]) * (plan.patient.bsa_m2 / 1.9) ** 0.5
    stomach = ellipsoid(frame, plan.stomach_c, st_r, plan.rot_stomach, plan.wob_stomach)
    if stomach is not None:
        sl, f = stomach
        V = frame.grids(sl)[1]
        ok = abd[sl]
        sub = tissue[sl]
        sub[(f <= 1.0) & ok] = T["stomach_wall"]
        inner = (f <= (1 - 5.0 / st_r[1]) ** 2) & ok
        sub[inner] = T["bowel_content"]
        level = plan.stomach_c[1] + plan.stomach_level * st_r[1]
        sub[inner & (V > level)] = T["bowel_gas"]

    # --- duodenal C-loop around the pancreatic head
    head = plan.pancreas_ctrl[1]
    duo = smooth_curve(
        np.array(
            [
                head + (-5.0, 45.0, 42.0),
                head + (22.0, 25.0, 38.0),
                head + (30.0, 2.0, 15.0),
                head + (28.0, -5.0, -25.0),
                head + (5.0, -10.0, -45.0),
                head + (-40.0, -8.0, -40.0),
                head + (-70.0, 5.0, -22.0),
            ]
        ),
        40,
    )
    d = tube(frame, duo, np.full(len(duo), 12.0), plan.wob_duodenum)
    if d is not None:
        sl, f = d
        sub = tissue[sl]
        ok = abd[sl]
        sub[(f <= 1.0) & ok] = T["stomach_wall"]
        sub[(f <= 0.7) & ok] = T["bowel_content"]

    # --- volume-calibrated solid organs
    builders = _organ_builders(plan, cavity_fn, _atrophied_radii(plan, lesion))
    scales = plan.scales
    liver = builders["liver"][0](frame, scales["liver"])
    liver_m = _put(tissue, liver, T["liver"])
    liver_mask = tissue == T["liver"]
    lc = plan.liver_c
    hv = lc + np.array([-40.0, -25.0, 45.0])
    for end in ((50.0, 10.0, 20.0), (-15.0, 40.0, 15.0), (-75.0, 45.0, 20.0)):
        _put(
            tissue, tube(frame, np.stack([hv, lc + np.array(end)]), np.array([6.0, 2.5])), T["liver_vessel"], liver_mask
        )
    porta = lc + np.array([-35.0, 10.0, -30.0])
    for end in ((45.0, 0.0, -15.0), (-75.0, 35.0, -5.0), (15.0, -30.0, 5.0)):
        _put(
            tissue,
            tube(frame, np.stack([porta, lc + np.array(end)]), np.array([6.5, 3.0])),
            T["liver_vessel"],
            liver_mask,
        )
    del liver_m
    gb = ellipsoid(frame, plan.gb_c, np.array([15.0, 15.0, 36.0]), plan.rot_gb, plan.wob_gb)
    _put(tissue, gb, T["gallbladder"], abd)
    _put(tissue, builders["spleen"][0](frame, scales["spleen"]), T["spleen"])
    for i, name in enumerate(("kidney_right", "kidney_left")):
        k = builders[name][0](frame, scales[name])
        if k is None:
            continue
        sl, f = k
        sub = tissue[sl]
        sub[f <= 1.0] = T["kidney_cortex"]
        sub[f <= 0.45] = T["kidney_medulla"]
        side = 1.0 if i == 0 else -1.0
        kc = plan.kidney_c[i]
        s = scales[name]
        sinus = ellipsoid(
            frame,
            kc + plan.rot_kidney[i] @ np.array([-side * 12.0, 6.0, 0.0]) * s,
            s * np.array([12.0, 9.0, 25.0]),
            plan.rot_kidney[i],
        )
        _put(tissue, sinus, T["renal_sinus_fat"])
        adrenal_c = kc + np.array([-side * 22.0, 10.0, 58.0 * s])
        _put(
            tissue,
            ellipsoid(frame, adrenal_c, np.array([3.5, 14.0, 20.0]), rotation((0.0, 0.0, side * 0.6))),
            T["adrenal"],
            abd,
        )

    # --- great vessels: aorta with celiac, SMA and iliacs; IVC and iliac veins
    top, bottom = 400.0, -400.0  # fixed ends: the vessels do not depend on the grid
    ax, ay = plan.aorta_xy
    r_ao = plan.patient.aorta_mm / 2.0
    zb = plan.bifurcation_z
    _put(
        tissue,
        tube(frame, np.array([[ax, ay, top], [ax, ay, 60.0], [ax, ay, zb]]), np.array([r_ao, r_ao, 0.85 * r_ao])),
        T["aorta"],
    )
    for side in (1.0, -1.0):
        pts = np.array([[ax, ay, zb + 5.0], [side * 45.0, ay - 8.0, zb - 80.0], [side * 60.0, -20.0, bottom]])
        _put(tissue, tube(frame, pts, np.array([7.0, 6.0, 6.0])), T["aorta"])
    sh = plan.shift
    smv_x = plan.pancreas_ctrl[2][0] + 4.0
    for pts, r in (
        ([[ax, ay, 35.0 + sh[2]], [ax + 2.0, ay + 22.0, 38.0 + sh[2]]], 3.5),  # celiac trunk
        (
            [[ax, ay, 18.0 + sh[2]], [ax + 4.0, ay + 24.0, 8.0 + sh[2]], [smv_x - 14.0, 12.0 + sh[1], -90.0 + sh[2]]],
            3.5,
        ),
    ):
        _put(tissue, tube(frame, np.array(pts), np.full(len(pts), r)), T["aorta"], abd)
    ix, iy = plan.ivc_xy
    _put(
        tissue,
        tube(
            frame,
            np.array([[ix, iy, top], [ix, iy, zb - 5.0]]),
            np.array([12.0, 11.0]),
            stretch=(1.15, 0.8, 1.0),
        ),
        T["ivc"],
    )
    for side in (1.0, -1.0):
        pts = np.array([[ix, iy, zb], [side * 40.0, -28.0, zb - 85.0], [side * 55.0, -25.0, bottom]])
        _put(tissue, tube(frame, pts, np.array([7.5, 7.0, 7.0])), T["ivc"])

    # --- portal venous system: SMV up to the confluence behind the neck, portal vein to the porta hepatis,
    #     splenic vein along the back of the body and tail to the splenic hilum
    ctrl = plan.pancreas_ctrl
    s_p = scales["pancreas"]
    conf = ctrl[2] + np.array([2.0, -10.0 * s_p, 0.0])
    veins = [
        (np.array([[smv_x, ctrl[2][1] - 4.0, -100.0 + sh[2]], conf]), 5.0),
        (np.array([conf, 0.5 * (conf + porta) + (5.0, 0.0, 0.0), porta]), 6.5),
    ]
    body_pts = smooth_curve(ctrl[2:], 20)
    back = (
        body_pts
        - np.array([0.0, 1.0, 0.0])
        * (np.interp(np.linspace(2, 5, 20), np.arange(6), s_p * plan.pancreas_r) + 3.0)[:, None]
    )
    veins.append((np.vstack([conf, back[2:], plan.spleen_c + (12.0, 10.0, -10.0)]), 4.5))
    for pts, r in veins:
        _put(tissue, tube(frame, smooth_curve(pts, 4 * len(pts)), np.full(4 * len(pts), r)), T["portal_vein"], abd)

    # --- pancreas: lobulated gland with interlobular fat (more with age) and the main duct
    pan = builders["pancreas"][0](frame, s_p)
    if pan is not None:
        sl, f = pan
        U, V, W = frame.grids(sl)
        vessels = np.isin(tissue[sl], (T["portal_vein"], T["aorta"], T["ivc"]))
        gland = (f + 0.08 * plan.wob_lobules(U, V, W) <= 1.0) & ~vessels
        sub = tissue[sl]
        sub[gland] = T["pancreas"]
        fat_level = _fat_threshold(plan.patient.pancreas_fat)
        sub[gland & (plan.wob_interlobular(U, V, W) > fat_level) & (f > 0.35)] = T["pancreas_fat"]
        duct_pts = smooth_curve(ctrl[2] + s_p * (ctrl - ctrl[2]), 40)
        duct_pts = np.vstack([head + (25.0, -5.0, -8.0), duct_pts[12:]])  # ampulla at the duodenum, then to the tail
        duct_r = np.full(len(duct_pts), 1.5)
        if lesion is not None and lesion["dilated_duct"]:
            t = np.linspace(0, 1, len(duct_pts))
            duct_r[t > lesion["t"]] = lesion["duct_mm"] / 2.0
        d = tube(frame, duct_pts, duct_r)
        if d is not None:
            dsl, df = d
            dsub = tissue[dsl]
            inside = np.isin(dsub, (T["pancreas"], T["pancreas_fat"]))
            dsub[(df <= 1.0) & inside] = T["pancreatic_duct"]

    # --- retroperitoneal and back muscles, then the spine on top of everything
    sv = plan.spine_v
    for side in (1.0, -1.0):
        psoas = np.array(
            [[side * 28.0, sv + 8.0, 60.0], [side * 40.0, sv + 10.0, -60.0], [side * 60.0, sv + 25.0, -200.0]]
        )
        _put(tissue, tube(frame, psoas, np.array([6.0, 18.0, 24.0])), T["muscle"], body)
        ql = np.array([[side * 55.0, sv - 25.0, 50.0], [side * 62.0, sv - 22.0, -110.0]])
        _put(tissue, tube(frame, ql, np.array([8.0, 12.0])), T["muscle"], body)
        es = np.array([[side * 38.0, sv - 48.0, top], [side * 38.0, sv - 48.0, bottom]])
        _put(tissue, tube(frame, es, np.array([27.0, 27.0]), stretch=(1.0, 0.85, 1.0)), T["muscle"], body)
    spine = SpineShape.random(np.random.default_rng(int(plan.spine)), sv, frame, scale=150.0)
    paint_spine(frame, tissue, spine, T)

    if table:
        post = plan.core[2] + plan.fat[2] - plan.core_v
        tsl = frame.box((0.0, -post - 30.0, 0.0), (260.0, 25.0, 1e4))
        if tsl is not None:
            U, V, W = frame.grids(tsl)
            curve = -post - 8.0 - 0.0008 * U**2  # gently curved couch under the back
            inside = (V < curve) & (V > curve - 40.0) & (np.abs(U) < 240.0)
            shell = inside & ((V > curve - 3.0) | (V < curve - 37.0))
            sub = tissue[tsl]
            inside = np.broadcast_to(inside, sub.shape)
            shell = np.broadcast_to(shell, sub.shape)
            sub[inside & (sub == 0)] = T["table_core"]
            sub[shell & (sub == T["table_core"])] = T["table_shell"]
    return tissue


def _fat_threshold(fraction: float) -> float:
    """Level of a unit-SD smooth field exceeded on about ``fraction`` of the voxels (gaussian quantile)."""
    from scipy.special import ndtri

    return float(ndtri(1.0 - min(max(fraction, 1e-4), 0.5)))


def _put(tissue: np.ndarray, shape: Shape | None, value: int, where: np.ndarray | None = None) -> np.ndarray | None:
    """Write ``value`` where the field is ``<= 1`` (and the full-grid mask ``where`` allows)."""
    if shape is None:
        return None
    sl, f = shape
    m = f <= 1.0
    if where is not None:
        m &= where[sl]
    tissue[sl][m] = value
    return m


def _atrophied_radii(plan: Plan, lesion: dict | None) -> np.ndarray:
    """Pancreatic radii per control point; upstream of an obstructing tumour the gland may be atrophic."""
    r = plan.pancreas_r.copy()
    if lesion is not None and lesion["atrophy"]:
        t_ctrl = np.linspace(0, 1, len(r))
        r[t_ctrl > lesion["t"] + 0.15] *= 0.7
    return r


# ------------------------------------------------------------------------------------------------------ tumour


def _draw_tumor(
    rng: np.random.Generator,
    plan: Plan,
    frame: BodyFrame,
    radius_mm: float,
    location: str | None,
    shrink_to_fit: bool,
) -> dict:
    """Draw the tumour: location along the pancreatic centreline, radius, margin, duct dilatation, atrophy.

    The centre lies on the gland's centreline in the requested part and inside the field of view with the whole
    nominal ball; ``shrink_to_fit`` shrinks the radius when no such point exists.
    """
    if location is None:
        location = str(rng.choice(list(TUMOR_LOCATION_PROBS), p=list(TUMOR_LOCATION_PROBS.values())))
    wobble = SmoothField.random(rng, 8, 1.2 * radius_mm, 0.2)
    spicules = SmoothField.random(rng, 12, 0.5 * radius_mm, 1.0)
    u_draw = rng.random()
    dilated = bool(rng.random() < 0.6)
    atrophy = bool(rng.random() < 0.4)
    duct_mm = float(rng.uniform(4.0, 8.0))
    necrotic = bool(rng.random() < 0.4)
    # centreline of the gland as painted (after its volume scaling)
    ctrl = plan.pancreas_ctrl
    curve = smooth_curve(ctrl[2] + plan.scales["pancreas"] * (ctrl - ctrl[2]), 200)
    t = np.linspace(0.0, 1.0, len(curve))
    lo, hi = frame.lower, frame.upper

    def fits(r: float) -> np.ndarray:
        return np.all((curve - r >= lo) & (curve + r <= hi), axis=1)

    ok = fits(radius_mm)
    if not ok.any():
        inside = np.all((curve >= lo) & (curve <= hi), axis=1)
        room = np.min(np.minimum(curve - lo, hi - curve), axis=1)
        best = float(room[inside].max()) if inside.any() else 0.0
        if not shrink_to_fit or best <= 1.0:
            raise ValueError(
                f"tumor_radius_mm={radius_mm:g} does not fit in the field of view around the pancreas: the largest "
                f"tumour centred on the gland and inside the volume has radius {best:.1f} mm at shape {frame.shape}, "
                f"spacing {frame.spacing} mm and centre {tuple(round(c, 1) for c in frame.centre_mm)} mm; use a "
                "smaller radius or a larger field of view (size * spacing)"
            )
        radius_mm = 0.8 * best
        ok = fits(radius_mm)
    part = (t >= PANCREAS_PARTS[location][0]) & (t < PANCREAS_PARTS[location][1] + 1e-9)
    pick = np.flatnonzero(ok & part)
    if len(pick) == 0:  # the requested part is outside this field of view: wherever it fits
        pick = np.flatnonzero(ok)
    i = int(pick[int(u_draw * len(pick))])
    where = next(k for k, (a, b) in PANCREAS_PARTS.items() if a <= t[i] < b + 1e-9)
    return {
        "centre": curve[i],
        "t": float(t[i]),
        "radius_mm": float(radius_mm),
        "location": where,
        "wobble": wobble,
        "spicules": spicules,
        "dilated_duct": dilated and where != "tail",
        "duct_mm": duct_mm,
        "atrophy": atrophy and where != "tail",
        "necrotic_core": necrotic and radius_mm >= 8.0,
    }


def _paint_tumor(frame: BodyFrame, tissue: np.ndarray, lesion: dict) -> dict:
    """Paint the PDAC: a lobulated mass with spiculated, infiltrative margins around the gland.

    It replaces gland (pancreas, interlobular fat, duct) everywhere inside its outline and, up to a few millimetres
    outside the gland, the surrounding fat (infiltration of the peripancreatic fat); vessels, bowel and other
    organs are abutted, not replaced.
    """
    from scipy import ndimage

    c = np.asarray(lesion["centre"], dtype=np.float64)
    r = lesion["radius_mm"]
    reach = 1.5 * r
    sl = frame.box(c, reach)
    if sl is None:  # cannot happen: the centre is inside the field of view
        raise RuntimeError("tumour outside the volume")
    U, V, W = frame.grids(sl)
    d2 = ((U - c[0]) ** 2 + (V - c[1]) ** 2 + (W - c[2]) ** 2) / r**2
    f = d2 + lesion["wobble"](U - c[0], V - c[1], W - c[2])
    spic = lesion["spicules"](U - c[0], V - c[1], W - c[2])
    outline = (f <= 1.0) | ((d2 <= 1.5**2) & (spic > 1.3))  # strands reaching up to 1.5 radii
    sub = tissue[sl]
    gland_ids = (T["pancreas"], T["pancreas_fat"], T["pancreatic_duct"])
    gland = np.isin(sub, gland_ids)
    margin_vox = np.maximum(1, np.round(0.3 * r / np.asarray(frame.spacing))).astype(int)
    near = ndimage.binary_dilation(gland, structure=np.ones((3, 3, 3), bool), iterations=int(margin_vox.min()))
    fat = np.isin(sub, (T["visceral_fat"],))
    m = outline & (gland | (near & fat))
    sub[m] = T["tumor"]
    if lesion["necrotic_core"]:
        sub[(f <= 0.25) & m] = T["tumor_necrosis"]
    outside = int((m & ~gland).sum())
    return {
        "centre_vox": [float(x) for x in frame.to_index(c)],
        "centre_mm": [float(x) for x in c],
        "radius_mm": float(r),
        "location": lesion["location"],
        "necrotic_core": bool(lesion["necrotic_core"]),
        "dilated_duct": bool(lesion["dilated_duct"]),
        "tail_atrophy": bool(lesion["atrophy"]),
        "voxels_outside_gland": outside,
    }


def _enhancement_offsets(rng: np.random.Generator, phase: str) -> dict[int, float]:
    """Per-seed HU offsets of the enhancing tissues (patient-to-patient variation of contrast uptake)."""
    s = 3.0 if phase == "non_contrast" else 8.0
    out = {}
    for name in ("liver", "spleen", "pancreas", "kidney_cortex", "muscle"):
        out[T[name]] = float(rng.uniform(-s, s))
    blood = float(rng.uniform(-2 * s, 2 * s))
    for name in ("aorta", "ivc", "liver_vessel", "portal_vein"):
        out[T[name]] = blood
    out[T["kidney_medulla"]] = out[T["kidney_cortex"]]
    return out
