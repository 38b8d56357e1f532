"""Procedural chest CT phantom with lungs, branching airways and vessels, and optional solid nodules.

Layout (anatomy units of :data:`CHEST_UNIT_MM` millimetres in the patient frame, ``u`` patient right, ``v``
anterior, ``w`` superior): skin, subcutaneous fat,
chest wall and pectoral muscles, ribs (cortex and marrow, sloping down anteriorly) and sternum, paraspinal
muscles, thoracic spine, mediastinum with heart, aorta (ascending, arch, descending), SVC and pulmonary trunk,
lungs above the diaphragm domes (the right dome higher), trachea and bronchial tree with air lumen, pulmonary vessel
trees from the hila, and solid nodules placed strictly inside the lung fields.
"""

from __future__ import annotations

import numpy as np

from ctsynth.data.labels import CHEST_LABELS, NODULE_LABEL
from ctsynth.data.phantoms.anatomy import BodyShape, SpineShape, branching_tree, paint_spine, paint_tree
from ctsynth.data.phantoms.geometry import BodyFrame, SmoothField, ellipsoid, paint, rotation, tube
from ctsynth.data.phantoms.render import DEFAULT_NOISE_SD, render
from ctsynth.data.phantoms.tissues import CHEST_TISSUES, tissue_ids
from ctsynth.data.phantoms.volume import (
    PhantomVolume,
    ball_fits,
    check_phase,
    check_shape,
    check_spacing,
    seed_streams,
)

T = tissue_ids(CHEST_TISSUES)
TISSUE_TO_LABEL = np.array([t.label for t in CHEST_TISSUES], dtype=np.uint8)
NODULE_NAMES = {"background": 0, "nodule": NODULE_LABEL}
#: Millimetres per anatomy unit of the chest: the body's left-right semi-axis (0.92 units) is about 150 mm.
CHEST_UNIT_MM = 165.0
#: Nodule margin: the lobulated outline stays within this factor of the nominal radius.
NODULE_MAX_EXTENT = 1.15


def make_chest_phantom(
    shape: tuple[int, int, int] | int = (128, 128, 128),
    spacing: tuple[float, float, float] | float = (1.0, 1.0, 1.0),
    seed: int = 0,
    nodules: int = 1,
    nodule_radius_mm: float = 4.0,
    noise_sd: float | None = None,
    phase: str = "non_contrast",
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> PhantomVolume:
    """Generate a chest CT phantom in HU with organ labels and optional solid lung nodules.

    Args:
        shape: volume shape (x, y, z) in voxels, or one int for a cube.
        spacing: voxel size (x, y, z) in mm, or one number for isotropic voxels.
        seed: non-negative integer seed (bit-identical output for the same seed).
        nodules: number of nodules (0 for none); they do not touch each other.
        nodule_radius_mm: nominal nodule radius in mm (lobulated margin within +15 %).
        noise_sd: SD in HU of the correlated scanner noise (default 10 HU; 0 for none).
        phase: "non_contrast" (default, as in lung screening CT) or "portal_venous".
        centre_mm: patient point (mm) at the grid centre; the chest is a fixed-size adult thorax (about 300 mm
            wide) that the grid samples, so a small field of view is a crop of it.

    Returns:
        A :class:`PhantomVolume`; ``label`` holds nodule = 1, ``organs`` the full
        :data:`~ctsynth.data.labels.CHEST_LABELS` map, ``info['nodules']`` the nodule centres and radii.

    Raises:
        ValueError: for a bad shape, spacing, seed, phase, noise level, nodule count, or a nodule radius that does
            not fit strictly inside the lungs.
    """
    shape = check_shape(shape)
    spacing = check_spacing(spacing)
    phase = check_phase(phase)
    noise_sd = DEFAULT_NOISE_SD if noise_sd is None else float(noise_sd)
    if not np.isfinite(noise_sd) or noise_sd < 0:
        raise ValueError(f"noise_sd must be >= 0 HU, got {noise_sd!r}")
    if isinstance(nodules, bool) or not isinstance(nodules, int | np.integer) or nodules < 0:
        raise ValueError(f"nodules must be a non-negative integer, got {nodules!r}")
    if nodules and not (np.isfinite(nodule_radius_mm) and nodule_radius_mm > 0):
        raise ValueError(f"nodule_radius_mm must be > 0, got {nodule_radius_mm!r}")
    rng_anat, rng_lesion, rng_noise = seed_streams(seed, 3)
    frame = BodyFrame(shape, spacing, tuple(float(c) for c in centre_mm), CHEST_UNIT_MM)
    tissue, lung_field = _paint_anatomy(frame, rng_anat)
    placed = _insert_nodules(frame, tissue, lung_field, rng_lesion, int(nodules), float(nodule_radius_mm))
    image = render(tissue, CHEST_TISSUES, phase, rng_noise, spacing, noise_sd)
    organs = TISSUE_TO_LABEL[tissue]
    label = (organs == NODULE_LABEL).astype(np.uint8) * np.uint8(NODULE_LABEL)
    info = {"seed": int(seed), "phase": phase, "noise_sd": noise_sd, "unit_mm": frame.unit_mm, "nodules": placed}
    return PhantomVolume(
        image=image,
        label=label,
        organs=organs,
        affine=frame.affine(),
        label_names=dict(NODULE_NAMES),
        organ_names=dict(CHEST_LABELS),
        info=info,
    )


def _paint_anatomy(frame: BodyFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint the chest; returns the tissue map and the lung-field mask (lungs with their vessels and airways)."""
    tissue = np.zeros(frame.shape, dtype=np.uint8)
    u, v, w = frame.axes
    vox = float(frame.voxel_units.max())
    top = max(abs(frame.lower[2]), abs(frame.upper[2])) + 0.2

    # --- body wall: skin, fat, muscle, rib band, thoracic cavity
    body = BodyShape.random(rng, 0.92, 0.6, -0.02)
    fb = body.field(frame)
    t_sc, t_mu, t_rib = rng.uniform(0.06, 0.12), rng.uniform(0.04, 0.06), 0.05
    t_skin = max(0.012, 0.6 * vox)
    inside = fb <= 1.0
    tissue[inside] = T["fat"]
    tissue[inside & (fb > (1 - t_skin) ** 2)] = T["skin"]
    tissue[fb <= (1 - t_sc) ** 2] = T["muscle"]
    r_in = 1 - t_sc - t_mu - t_rib
    cavity = fb <= r_in**2
    for side in (1.0, -1.0):  # pectoral muscles over the anterior wall
        paint(
            tissue,
            ellipsoid(frame, (side * 0.35, 0.42, 0.25), (0.32, 0.1, 0.55)),
            T["muscle"],
            where=(fb > (1 - t_sc - t_mu) ** 2) & (fb <= (1 - 0.5 * t_sc) ** 2),
        )

    # --- ribs: one sloped band per level in the rib layer, cortex around marrow; sternum in front
    rr = (np.sqrt(fb) - r_in) / t_rib  # 0..1 across the rib layer
    layer = (rr >= 0) & (rr <= 1)
    period = 0.2 * rng.uniform(0.93, 1.07)
    slope = rng.uniform(0.3, 0.45)
    ph = ((w[None, None, :] - slope * (v[None, :, None] + 0.6) - rng.uniform(0, period)) / period) % 1.0
    half_h = 0.03 / period  # rib half height as a fraction of the period
    dz = np.abs(ph - 0.5) / half_h
    rib = layer & (dz <= 1.0)
    front = (np.abs(u)[:, None, None] < 0.2) & (v[None, :, None] > 0.1)
    rib &= ~front  # costal cartilage gap near the sternum
    sternum = layer & (np.abs(u)[:, None, None] < 0.07) & (v[None, :, None] > 0.1) & (w[None, None, :] < 0.75)
    bone = rib | sternum
    tissue[bone] = T["rib_marrow"]
    tissue[bone & ((np.abs(2 * rr - 1) > 0.5) | (rib & (dz > 0.6)))] = T["rib_cortex"]

    # --- lungs fill the cavity; mediastinum, heart and vessels carve them; diaphragm domes below
    tissue[cavity] = T["lung"]
    med_c = (rng.uniform(-0.03, 0.03), rng.uniform(0.0, 0.08))
    med = ((u[:, None, None] - med_c[0]) / 0.17) ** 2 + ((v[None, :, None] - med_c[1]) / 0.55) ** 2 <= 1.0
    tissue[med & cavity] = T["mediastinum"]
    paint(tissue, ellipsoid(frame, (0.0, -0.36, 0.0), (0.18, 0.15, top)), T["mediastinum"], where=cavity)
    heart_rot = rotation((np.deg2rad(15), 0.0, np.deg2rad(rng.uniform(20, 40))))
    heart_c = (-0.1 + rng.uniform(-0.03, 0.03), 0.14, -0.42 + rng.uniform(-0.05, 0.05))
    paint(
        tissue,
        ellipsoid(frame, heart_c, np.array((0.36, 0.3, 0.36)) * rng.uniform(0.9, 1.1), heart_rot),
        T["heart"],
        where=cavity,
    )
    for side, lift in ((1.0, 0.12), (-1.0, 0.0)):
        dome = ellipsoid(frame, (side * 0.45, -0.02, -1.2 + lift + rng.uniform(-0.05, 0.05)), (0.6, 0.75, 0.55))
        paint(tissue, dome, T["subdiaphragm"], where=cavity)
    vessels = [
        ([[0.06, 0.12, -0.25], [0.07, 0.12, 0.45], [0.0, 0.0, 0.62], [-0.12, -0.2, 0.5], [-0.12, -0.24, -top]], 0.06),
        ([[0.15, 0.1, top], [0.14, 0.1, -0.15]], 0.045),
        ([[-0.05, 0.25, -0.2], [-0.08, 0.12, 0.1], [-0.24, 0.0, 0.12]], 0.05),
        ([[-0.08, 0.12, 0.1], [0.24, 0.02, 0.08]], 0.045),
    ]
    for pts, r in vessels:
        paint(tissue, tube(frame, np.array(pts, dtype=float), np.full(len(pts), r)), T["great_vessel"], where=cavity)
    lung = (tissue == T["lung"]) & cavity

    # --- airways: trachea and main bronchi (air lumen, soft-tissue wall), then lobar trees inside the lungs
    carina = np.array([0.0, 0.0, 0.3]) + rng.uniform(-0.03, 0.03, 3)
    central = [
        (np.array([0.0, 0.06, top]), carina, 0.065, 0.06),
        (carina, carina + (0.2, -0.03, -0.08), 0.048, 0.045),
        (carina, carina + (-0.24, -0.03, -0.12), 0.045, 0.042),
    ]
    chest_air = cavity | (tissue == T["mediastinum"])
    paint_tree(frame, tissue, central, T["airway_wall"], where=chest_air, lumen=(T["airway_lumen"], 0.72))
    min_r = 0.45 * float(frame.voxel_units.min())
    for side in (1.0, -1.0):
        hilum = carina + (side * 0.21, -0.03, -0.1)
        for d in ((side * 0.4, 0.0, 0.9), (side * 0.5, 0.6, -0.4), (side * 0.4, -0.4, -0.8)):
            d = np.asarray(d) + rng.uniform(-0.1, 0.1, 3)
            segs = branching_tree(rng, hilum, d, 0.22, 0.032, max(min_r, 0.006), 5, pull=d / np.linalg.norm(d))
            paint_tree(frame, tissue, segs, T["airway_wall"], where=lung, lumen=(T["airway_lumen"], 0.65))
        for d in ((side * 0.3, 0.1, 1.0), (side * 0.6, 0.5, -0.2), (side * 0.5, -0.5, -0.7), (side * 0.7, -0.3, 0.3)):
            d = np.asarray(d) + rng.uniform(-0.15, 0.15, 3)
            segs = branching_tree(
                rng, hilum + (0.0, 0.05, 0.0), d, 0.24, 0.035, max(min_r, 0.004), 7, pull=d / np.linalg.norm(d)
            )
            paint_tree(frame, tissue, segs, T["lung_vessel"], where=lung)

    # --- back: paraspinal muscles and the spine
    for side in (1.0, -1.0):
        es = np.array([[side * 0.16, -0.53, top], [side * 0.16, -0.53, -top]])
        paint(
            tissue,
            tube(frame, es, np.array([0.1, 0.1]) * rng.uniform(0.9, 1.1)),
            T["muscle"],
            where=~cavity & (fb <= (1 - t_skin - 0.03) ** 2),
        )
    paint_spine(frame, tissue, SpineShape.random(rng, -0.37, frame), T)
    lung_field = lung & (tissue != T["cancellous_bone"]) & (tissue != T["cortical_bone"])
    return tissue, lung_field


def _insert_nodules(
    frame: BodyFrame, tissue: np.ndarray, lung_field: np.ndarray, rng: np.random.Generator, n: int, radius_mm: float
) -> list[dict]:
    """Place ``n`` lobulated solid nodules whose outline (plus one voxel) lies strictly inside the lung field."""
    if n == 0:
        return []
    sp = np.asarray(frame.spacing)
    reach_vox = (NODULE_MAX_EXTENT * radius_mm + sp.max()) / sp  # outline + one voxel of lung all around
    flat = np.flatnonzero(lung_field)
    if len(flat) == 0:
        raise ValueError("the phantom has no lung inside the field of view; use a larger volume")
    placed: list[dict] = []
    centres: list[np.ndarray] = []
    tries = 0
    while len(placed) < n:
        tries += 1
        if tries > 400 * n:
            raise ValueError(
                f"nodule_radius_mm={radius_mm:g} is too large to place {n} nodule(s) strictly inside the lungs at "
                f"shape {frame.shape} and spacing {frame.spacing} mm; use fewer or smaller nodules or a larger field "
                "of view (size * spacing)"
            )
        c = np.array(np.unravel_index(flat[rng.integers(len(flat))], frame.shape), dtype=float)
        if any(np.linalg.norm((c - o) * sp) < 2.6 * NODULE_MAX_EXTENT * radius_mm for o in centres):
            continue
        if not ball_fits(lung_field, c, reach_vox):
            continue
        r_u = radius_mm / frame.unit_mm
        cu = frame.to_units(c)
        wob = SmoothField.random(rng, 6, 1.5 * r_u, 0.1)
        blob = ellipsoid(frame, cu, (r_u, r_u, r_u), None, wob)
        if blob is None:
            continue
        sl, f = blob
        ball = ellipsoid(frame, cu, (r_u,) * 3, level=1.0 + wob.bound)  # same box as the blob
        tissue[sl][(f <= 1.0) & (ball[1] <= NODULE_MAX_EXTENT**2)] = T["nodule"]
        centres.append(c)
        placed.append({"centre_vox": [float(x) for x in c], "radius_mm": float(radius_mm)})
    return placed
