"""Procedural abdominal CT phantom with pancreas and an optional PDAC tumour.

Layout (normalised body units, see :mod:`ctsynth.data.phantoms.geometry`; ``u`` patient right, ``v`` anterior,
``w`` superior; the body's left-right semi-axis is ~0.9): skin, subcutaneous fat, abdominal wall muscle, visceral
fat; liver (right upper quadrant, with portal/hepatic vein branches), stomach with an air-fluid level, spleen,
kidneys (cortex, medulla, sinus fat), aorta with celiac trunk, SMA and iliac bifurcation, IVC, duodenal C-loop,
colon frame, small-bowel loops with gas, psoas, quadratus lumborum and paraspinal muscles, lumbar-like vertebrae,
and a curved head-neck-body-tail pancreas lying across the aorta.

The pancreas is deliberately thicker than a real one (head ~0.55, body ~0.42 units thick, i.e. ~35 mm and ~27 mm at
128^3 and 1 mm) so that tumour-centred 32^3 cubes and large pancreas-only crops exist at 1 mm; see docs/phantoms.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctsynth.data.labels import ABDOMEN_LABELS, to_msd_pancreas
from ctsynth.data.phantoms.anatomy import BodyShape, SpineShape, paint_spine
from ctsynth.data.phantoms.geometry import BodyFrame, SmoothField, ellipsoid, paint, rotation, smooth_curve, tube
from ctsynth.data.phantoms.render import DEFAULT_NOISE_SD, render
from ctsynth.data.phantoms.tissues import ABDOMEN_TISSUES, tissue_ids
from ctsynth.data.phantoms.volume import PhantomVolume, check_phase, check_shape, check_spacing, seed_streams

T = tissue_ids(ABDOMEN_TISSUES)
TISSUE_TO_LABEL = np.array([t.label for t in ABDOMEN_TISSUES], dtype=np.uint8)
MSD_PANCREAS_NAMES = {"background": 0, "pancreas": 1, "tumor": 2}
#: PDAC location frequencies used when ``tumor_location`` is None: about two thirds arise in the head.
TUMOR_LOCATION_PROBS = {"head": 0.65, "body": 0.2, "tail": 0.15}


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
) -> PhantomVolume:
    """Generate an abdominal CT phantom in HU with organ labels and an optional PDAC tumour.

    The same ``seed`` gives a bit-identical volume; anatomy, tumour and noise use separate random streams, so the
    same seed with ``tumor=False`` gives the same anatomy without the lesion (the tumour replaces pancreas voxels).

    Args:
        shape: volume shape (x, y, z) in voxels, or one int for a cube.
        spacing: voxel size (x, y, z) in mm, or one number for isotropic voxels.
        seed: non-negative integer seed.
        tumor: whether to insert a hypo-attenuating PDAC tumour inside the pancreas.
        tumor_radius_mm: nominal tumour radius in mm (the margin is lobulated by about +-10 %).
        shrink_tumor_to_fit: when the pancreas of a small field of view cannot hold a ball of ``tumor_radius_mm``,
            use 80 % of the largest radius that fits instead of raising (used by the dataset writer).
        noise_sd: SD in HU of the correlated scanner noise (default 10 HU; 0 for none).
        phase: "portal_venous" (default, as MSD Task07) or "non_contrast".
        tumor_location: "head", "body", "tail" or None (random: head 65 %, body 20 %, tail 15 %).

    Returns:
        A :class:`PhantomVolume`; ``label`` holds pancreas = 1 and tumour = 2, ``organs`` the full
        :data:`~ctsynth.data.labels.ABDOMEN_LABELS` map, ``info['tumor']`` the tumour centre and radius.

    Raises:
        ValueError: for a bad shape, spacing, seed, phase, noise level, tumour location, or a tumour radius that
            does not fit inside the pancreas at this size and spacing.
    """
    shape = check_shape(shape)
    spacing = check_spacing(spacing)
    phase = check_phase(phase)
    noise_sd = DEFAULT_NOISE_SD if noise_sd is None else float(noise_sd)
    if not np.isfinite(noise_sd) or noise_sd < 0:
        raise ValueError(f"noise_sd must be >= 0 HU, got {noise_sd!r}")
    if tumor and not (np.isfinite(tumor_radius_mm) and tumor_radius_mm > 0):
        raise ValueError(f"tumor_radius_mm must be > 0, got {tumor_radius_mm!r}")
    if tumor_location is not None and tumor_location not in TUMOR_LOCATION_PROBS:
        raise ValueError(f"tumor_location must be one of {tuple(TUMOR_LOCATION_PROBS)} or None, got {tumor_location!r}")
    rng_anat, rng_tumor, rng_noise, rng_hu = seed_streams(seed, 4)
    frame = BodyFrame(shape, spacing)

    tissue, pancreas_shape = _paint_anatomy(frame, rng_anat)
    info: dict = {"seed": int(seed), "phase": phase, "noise_sd": noise_sd, "unit_mm": frame.unit_mm, "tumor": None}
    offsets = _enhancement_offsets(rng_hu, phase)
    if tumor:
        info["tumor"] = _insert_tumor(
            frame, tissue, rng_tumor, float(tumor_radius_mm), tumor_location, shrink_to_fit=shrink_tumor_to_fit
        )
        offsets[T["tumor"]] = offsets.get(T["pancreas"], 0.0) + rng_hu.uniform(-8, 8)
        offsets[T["tumor_necrosis"]] = offsets[T["tumor"]]
    image = render(tissue, ABDOMEN_TISSUES, phase, rng_noise, spacing, noise_sd, offsets)
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


def _jit(rng: np.random.Generator, c: tuple[float, ...], s: float = 0.025) -> np.ndarray:
    return np.asarray(c, dtype=np.float64) + rng.uniform(-s, s, len(c))


def _scale(rng: np.random.Generator, r: tuple[float, ...], s: float = 0.08) -> np.ndarray:
    return np.asarray(r, dtype=np.float64) * rng.uniform(1 - s, 1 + s)


def _paint_anatomy(frame: BodyFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint every tissue of the abdomen; later organs overwrite earlier ones where they touch."""
    tissue = np.zeros(frame.shape, dtype=np.uint8)
    u, v, w = frame.axes
    vox = float(frame.voxel_units.max())

    # --- body wall: skin, subcutaneous fat (thicker anteriorly), muscle, visceral cavity
    body = BodyShape.random(rng, 0.90, 0.64, -0.03)
    fb = body.field(frame)
    t_ant, t_post = rng.uniform(0.07, 0.16), rng.uniform(0.05, 0.10)
    rel = np.clip((v - body.centre_v) / body.half_ant * 0.5 + 0.5, 0, 1)[None, :, None]
    t_sc = t_post + (t_ant - t_post) * rel
    t_mu = rng.uniform(0.045, 0.065)
    t_skin = max(0.012, 0.6 * vox)
    tissue[fb <= 1.0] = T["subcutaneous_fat"]
    tissue[(fb <= 1.0) & (fb > (1 - t_skin) ** 2)] = T["skin"]
    tissue[fb <= (1 - t_sc) ** 2] = T["muscle"]
    cavity = fb <= (1 - t_sc - t_mu) ** 2
    tissue[cavity] = T["visceral_fat"]

    # --- small bowel loops (level set of a smooth random field) in the lower anterior cavity, gas anteriorly
    w_top = rng.uniform(0.05, 0.2)
    bsl = frame.box((0.0, 0.2, (w_top - 2.0) / 2), (0.9, 0.5, (w_top + 2.0) / 2))
    if bsl is not None:
        U, V, W = frame.grids(bsl)
        loops = SmoothField.random(rng, 16, 0.4, 1.0)(U, V, W)
        gas_f = SmoothField.random(rng, 6, 0.3, 1.0)(U, V, W) + 1.5 * (V - 0.15)
        region = cavity[bsl] & (V > -0.2) & (W < w_top)
        sub = tissue[bsl]
        sub[region & (loops > 0.15)] = T["stomach_wall"]
        lumen = region & (loops > 0.4)
        sub[lumen] = T["bowel_content"]
        sub[lumen & (gas_f > 1.1)] = T["bowel_gas"]

    # --- colon frame: ascending (right), transverse (anterior), descending (left), mottled content
    colon_pts = np.array(
        [
            _jit(rng, (0.58, 0.0, -0.9)),
            _jit(rng, (0.62, 0.05, -0.2)),
            _jit(rng, (0.55, 0.25, 0.12)),
            _jit(rng, (0.1, 0.42, 0.02)),
            _jit(rng, (-0.4, 0.35, 0.15)),
            _jit(rng, (-0.62, 0.05, 0.22)),
            _jit(rng, (-0.64, -0.02, -0.4)),
            _jit(rng, (-0.5, 0.05, -0.95)),
        ]
    )
    curve = smooth_curve(colon_pts, 48)
    colon = tube(
        frame, curve, np.full(len(curve), 0.09 * rng.uniform(0.85, 1.15)), SmoothField.random(rng, 4, 0.4, 0.06)
    )
    if colon is not None:
        sl, f = colon
        U, V, W = frame.grids(sl)
        stool = SmoothField.random(rng, 8, 0.12, 1.0)(U, V, W) + 0.8 * (V - 0.1)
        ok = cavity[sl]
        sub = tissue[sl]
        sub[(f <= 1.0) & ok] = T["stomach_wall"]
        inner = (f <= 0.75) & ok
        sub[inner] = T["bowel_content"]
        sub[inner & (stool > 0.2)] = T["bowel_gas"]

    # --- stomach: wall, fluid, gas above an air-fluid level (patient supine: gas is anterior)
    st_c, st_r = _jit(rng, (-0.30, 0.32, 0.64)), _scale(rng, (0.25, 0.19, 0.27))
    st_rot = rotation((0.0, 0.0, np.deg2rad(rng.uniform(15, 35))))
    stomach = ellipsoid(frame, st_c, st_r, st_rot, SmoothField.random(rng, 4, 0.4, 0.08))
    if stomach is not None:
        sl, f = stomach
        V = frame.grids(sl)[1]
        ok = cavity[sl]
        sub = tissue[sl]
        sub[(f <= 1.0) & ok] = T["stomach_wall"]
        inner = (f <= (1 - 0.035 / st_r[1]) ** 2) & ok
        sub[inner] = T["bowel_content"]
        level = st_c[1] + rng.uniform(0.0, 0.6) * st_r[1]
        sub[inner & (V > level)] = T["bowel_gas"]

    # --- liver: right lobe, left lobe, inferior tip of the right lobe; vessels inside
    liver_wob = SmoothField.random(rng, 5, 0.5, 0.08)
    liver_c = _jit(rng, (0.38, 0.0, 0.64))
    for c, r in (
        (liver_c, _scale(rng, (0.45, 0.47, 0.42))),
        (liver_c + _jit(rng, (-0.42, 0.24, 0.08)), _scale(rng, (0.28, 0.17, 0.22))),
        (liver_c + _jit(rng, (0.2, -0.05, -0.45)), _scale(rng, (0.24, 0.3, 0.3))),
    ):
        paint(tissue, ellipsoid(frame, c, r, None, liver_wob), T["liver"], where=cavity)
    liver = tissue == T["liver"]
    hv = liver_c + np.array([-0.24, -0.14, 0.25])
    for end in ((0.3, 0.1, 0.12), (-0.05, 0.35, 0.08), (-0.45, 0.35, 0.1)):
        pts = np.stack([hv, liver_c + _jit(rng, end, 0.05)])
        paint(tissue, tube(frame, pts, np.array([0.035, 0.015])), T["liver_vessel"], where=liver)
    pv = liver_c + np.array([-0.22, 0.02, -0.22])
    for end in ((0.25, 0.02, -0.1), (-0.45, 0.25, -0.05), (0.1, -0.2, 0.0)):
        pts = np.stack([pv, liver_c + _jit(rng, end, 0.05)])
        paint(tissue, tube(frame, pts, np.array([0.04, 0.018])), T["liver_vessel"], where=liver)

    # --- spleen: left posterolateral, long axis along the ribs
    sp_rot = rotation((0.0, 0.0, np.deg2rad(rng.uniform(-50, -30))))
    paint(
        tissue,
        ellipsoid(
            frame,
            _jit(rng, (-0.6, -0.3, 0.56)),
            _scale(rng, (0.12, 0.27, 0.26)),
            sp_rot,
            SmoothField.random(rng, 4, 0.35, 0.08),
        ),
        T["spleen"],
        where=cavity,
    )

    # --- kidneys: cortex, medulla, sinus fat opening antero-medially; right kidney lower than left
    for side, wz in ((1.0, -0.03), (-1.0, 0.07)):
        kc = _jit(rng, (side * 0.43, -0.34, wz))
        kr = _scale(rng, (0.12, 0.145, 0.29))
        krot = rotation((0.0, side * np.deg2rad(rng.uniform(8, 16)), -side * np.deg2rad(rng.uniform(20, 35))))
        k = ellipsoid(frame, kc, kr, krot, SmoothField.random(rng, 3, 0.4, 0.05))
        if k is None:
            continue
        sl, f = k
        ok = cavity[sl]
        sub = tissue[sl]
        sub[(f <= 1.0) & ok] = T["kidney_cortex"]
        sub[(f <= 0.5) & ok] = T["kidney_medulla"]
        paint(
            tissue,
            ellipsoid(frame, kc + np.array([-side * 0.075, 0.035, 0.0]), kr * np.array([0.5, 0.35, 0.45])),
            T["renal_sinus_fat"],
            where=cavity,
        )

    # --- great vessels: aorta (left of midline) with celiac trunk, SMA, iliac arteries; IVC (right) and iliac veins
    top = frame.extent[2] + 0.2
    w_bif = rng.uniform(-0.7, -0.5)
    ao = _jit(rng, (-0.05, -0.13), 0.015)
    r_ao = 0.07 * rng.uniform(0.9, 1.1)
    paint(
        tissue,
        tube(frame, np.array([[ao[0], ao[1], top], [ao[0], ao[1], w_bif]]), np.array([r_ao, 0.9 * r_ao])),
        T["aorta"],
    )
    for side in (1.0, -1.0):
        pts = np.array(
            [[ao[0], ao[1], w_bif + 0.05], [side * 0.26, ao[1] - 0.05, w_bif - 0.6], [side * 0.32, -0.1, -top]]
        )
        paint(tissue, tube(frame, pts, np.array([0.05, 0.045, 0.045])), T["aorta"])
    for pts in (
        [[ao[0], ao[1], 0.45], [ao[0] + 0.02, ao[1] + 0.17, 0.47]],
        [[ao[0], ao[1], 0.32], [ao[0] + 0.02, ao[1] + 0.19, 0.22], [ao[0] + 0.04, ao[1] + 0.27, -0.45]],
    ):
        paint(tissue, tube(frame, np.array(pts), np.full(len(pts), 0.022)), T["aorta"], where=cavity)
    ivc = _jit(rng, (0.13, -0.15), 0.015)
    paint(
        tissue,
        tube(frame, np.array([[ivc[0], ivc[1], top], [ivc[0], ivc[1], w_bif - 0.05]]), np.array([0.065, 0.06])),
        T["ivc"],
    )
    for side in (1.0, -1.0):
        pts = np.array([[ivc[0], ivc[1], w_bif], [side * 0.22, -0.2, w_bif - 0.65], [side * 0.28, -0.18, -top]])
        paint(tissue, tube(frame, pts, np.array([0.05, 0.045, 0.045])), T["ivc"])

    # --- pancreas: curved head(uncinate)-neck-body-tail tube draped over the aorta/SMA, tail at the splenic hilum
    ctrl = np.array(
        [
            _jit(rng, (0.20, 0.12, -0.14)),  # uncinate / lower head
            _jit(rng, (0.18, 0.17, 0.04)),  # head
            _jit(rng, (0.04, 0.24, 0.12)),  # neck, in front of the SMA/SMV
            _jit(rng, (-0.14, 0.2, 0.17)),  # body, across the aorta
            _jit(rng, (-0.34, 0.05, 0.24)),  # body-tail
            _jit(rng, (-0.50, -0.1, 0.32)),  # tail towards the splenic hilum
        ]
    )
    radii_ctrl = np.array([0.24, 0.27, 0.19, 0.21, 0.17, 0.12]) * rng.uniform(0.92, 1.08)
    n_pts = 32
    curve = smooth_curve(ctrl, n_pts)
    radii = np.interp(np.linspace(0, len(ctrl) - 1, n_pts), np.arange(len(ctrl)), radii_ctrl)
    # duodenal C-loop hugging the head laterally and below
    head = ctrl[1]
    duo = smooth_curve(
        np.array(
            [
                head + (0.15, 0.18, 0.3),
                head + (0.34, 0.05, 0.1),
                head + (0.33, -0.05, -0.2),
                head + (0.12, -0.08, -0.48),
                head + (-0.2, -0.05, -0.45),
            ]
        ),
        24,
    )
    d = tube(frame, duo, np.full(len(duo), 0.07), SmoothField.random(rng, 3, 0.3, 0.05))
    if d is not None:
        sl, f = d
        ok = cavity[sl]
        sub = tissue[sl]
        sub[(f <= 1.0) & ok] = T["stomach_wall"]
        sub[(f <= 0.6) & ok] = T["bowel_content"]
    pancreas = tube(frame, curve, radii, SmoothField.random(rng, 6, 0.25, 0.1))
    paint(tissue, pancreas, T["pancreas"], where=cavity)

    # --- retroperitoneal and back muscles (over fat and vessels' fat), then the spine on top of everything
    spine = SpineShape.random(rng, -0.31, frame)
    for side in (1.0, -1.0):
        psoas = np.array([[side * 0.12, -0.3, 0.45], [side * 0.19, -0.27, -0.3], [side * 0.27, -0.15, -top]])
        paint(tissue, tube(frame, psoas, np.array([0.03, 0.095, 0.11]) * rng.uniform(0.85, 1.15)), T["muscle"])
        ql = np.array([[side * 0.3, -0.47, 0.35], [side * 0.34, -0.45, -0.6]])
        paint(tissue, tube(frame, ql, np.array([0.05, 0.07])), T["muscle"], where=fb <= 1.0)
        es = np.array([[side * 0.15, -0.53, top], [side * 0.15, -0.53, -top]])
        paint(
            tissue,
            tube(frame, es, np.array([0.115, 0.115]) * rng.uniform(0.9, 1.1)),
            T["muscle"],
            where=fb <= (1 - t_skin - 0.03) ** 2,
        )
    paint_spine(frame, tissue, spine, T)
    return tissue, tissue == T["pancreas"]


def _enhancement_offsets(rng: np.random.Generator, phase: str) -> dict[int, float]:
    """Per-seed HU offsets of the enhancing tissues (patient-to-patient variation of contrast uptake)."""
    s = 8.0 if phase == "portal_venous" else 3.0
    out = {}
    for name in ("liver", "spleen", "pancreas", "kidney_cortex", "muscle"):
        out[T[name]] = float(rng.uniform(-s, s))
    blood = float(rng.uniform(-2 * s, 2 * s))
    for name in ("aorta", "ivc", "liver_vessel"):
        out[T[name]] = blood
    out[T["kidney_medulla"]] = out[T["kidney_cortex"]]
    return out


def _insert_tumor(
    frame: BodyFrame,
    tissue: np.ndarray,
    rng: np.random.Generator,
    radius_mm: float,
    location: str | None,
    shrink_to_fit: bool = False,
) -> dict:
    """Insert a lobulated hypo-attenuating tumour that replaces pancreas voxels; returns its description.

    The centre is drawn among pancreas voxels whose distance to the pancreas surface is at least the radius, so the
    tumour lies inside the pancreas (protrusions of the lobulated margin are clipped to it) and inside the volume.
    """
    pancreas = tissue == T["pancreas"]
    idx = np.argwhere(pancreas)
    if len(idx) == 0:
        raise ValueError("the phantom has no pancreas inside the field of view; use a larger volume")
    lo, hi = np.maximum(idx.min(0) - 1, 0), np.minimum(idx.max(0) + 2, frame.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = np.pad(pancreas[sl], 1)  # zero border: the volume edge counts as outside
    depth = ndimage.distance_transform_edt(sub, sampling=frame.spacing)[1:-1, 1:-1, 1:-1]
    max_fit = float(depth.max())
    if shrink_to_fit and radius_mm > max_fit:
        radius_mm = 0.8 * max_fit
    cand = np.argwhere(depth >= radius_mm)
    if len(cand) == 0:
        raise ValueError(
            f"tumor_radius_mm={radius_mm:g} is too large for the pancreas of this phantom: the largest ball inside it "
            f"has radius {max_fit:.1f} mm at shape {frame.shape} and spacing {frame.spacing} mm; use a smaller radius "
            "or a larger field of view (size * spacing)"
        )
    cand = cand + lo
    uc = (cand[:, 0] - (frame.shape[0] - 1) / 2.0) * frame.voxel_units[0]  # left-right position, normalised
    regions = {"head": uc > 0.06, "body": (uc > -0.25) & (uc <= 0.06), "tail": uc <= -0.25}
    if location is None:
        names = list(TUMOR_LOCATION_PROBS)
        location = str(rng.choice(names, p=list(TUMOR_LOCATION_PROBS.values())))
    pick = cand[regions[location]]
    if len(pick) == 0:  # the requested part is too thin for this radius: use wherever it fits
        pick = cand
    centre_vox = pick[rng.integers(len(pick))].astype(float)
    u_c = (centre_vox[0] - (frame.shape[0] - 1) / 2.0) * frame.voxel_units[0]
    location = "head" if u_c > 0.06 else ("body" if u_c > -0.25 else "tail")
    centre = frame.to_units(centre_vox)
    r_u = radius_mm / frame.unit_mm
    blob = ellipsoid(frame, centre, (r_u, r_u, r_u), None, SmoothField.random(rng, 8, 1.2 * r_u, 0.15))
    if blob is None:  # cannot happen: the centre is a voxel of the volume
        raise RuntimeError("tumour outside the volume")
    bsl, f = blob
    inside = pancreas[bsl]
    sub = tissue[bsl]
    sub[(f <= 1.0) & inside] = T["tumor"]
    necrotic = bool(radius_mm >= 8.0 and rng.random() < 0.5)
    if necrotic:
        sub[(f <= 0.25) & inside] = T["tumor_necrosis"]
    return {
        "centre_vox": [float(c) for c in centre_vox],
        "radius_mm": float(radius_mm),
        "location": location,
        "necrotic_core": necrotic,
        "max_radius_mm": max_fit,
    }
