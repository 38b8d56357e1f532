"""Procedural chest CT phantom with lungs, branching airways and vessels, and optional solid nodules.

Layout (anatomy units of :data:`CHEST_UNIT_MM` millimetres in the patient frame, ``u`` patient right, ``v``
anterior, ``w`` superior): skin, subcutaneous fat,
chest wall and pectoral muscles, ribs (cortex and marrow, sloping down anteriorly) and sternum, paraspinal
muscles, thoracic spine, mediastinum with heart, aorta (ascending, arch, descending), SVC and pulmonary trunk,
lungs above the diaphragm domes (the right dome higher), trachea and bronchial tree with air lumen, pulmonary vessel
trees from the hila, and solid nodules placed strictly inside the lung fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ctsynth.data.labels import CHEST_LABELS, NODULE_LABEL
from ctsynth.data.phantoms.anatomy import BodyShape, SpineShape, branching_tree, paint_spine, paint_tree
from ctsynth.data.phantoms.geometry import BodyFrame, ellipsoid, paint, tube
from ctsynth.data.phantoms.nodules import (
    DEFAULT_SITES,
    DEFAULT_TYPES,
    NODULE_SITES,
    NODULE_TYPES,
    check_fractions,
    place_nodules,
)
from ctsynth.data.phantoms.render import KernelNoise, render
from ctsynth.data.phantoms.tissues import CHEST_TISSUES, tissue_ids
from ctsynth.data.phantoms.volume import PhantomVolume, check_phase, check_shape, check_spacing, seed_streams

T = tissue_ids(CHEST_TISSUES)
TISSUE_TO_LABEL = np.array([t.label for t in CHEST_TISSUES], dtype=np.uint8)
NODULE_NAMES = {"background": 0, "nodule": NODULE_LABEL}
#: Millimetres per anatomy unit of the chest: the body's left-right semi-axis (0.92 units) is about 150 mm.
CHEST_UNIT_MM = 165.0
#: Scanner noise: the abdominal calibration (docs/phantoms.md, "Calibration"); the chest's own figures are there too.
NOISE_MODEL = KernelNoise()
#: Pulmonary vessel trees per lung: root directions (lateral component positive, flipped for the left lung); the
#: large lower lobes get more of them.
VESSEL_ROOTS = (
    (0.3, 0.1, 1.0),
    (0.5, 0.5, 0.6),
    (0.4, -0.6, 0.6),
    (0.9, 0.1, 0.2),
    (0.5, 0.8, -0.1),
    (0.5, -0.8, -0.1),
    (0.5, 0.5, -0.8),
    (0.5, -0.6, -0.8),
    (0.9, 0.0, -0.5),
    (0.3, -0.3, -1.0),
    (0.7, 0.3, -0.7),
    (0.2, 0.6, -0.8),
)
#: Root radius, root length (anatomy units) and maximum generation of the vessel trees, calibrated so that the
#: fraction of lung-field voxels above -500 HU matches the real chest CT (docs/phantoms.md, "Calibration").
VESSEL_ROOT_RADIUS = 0.05
VESSEL_ROOT_LENGTH = 0.21
VESSEL_DEPTH = 8
#: Curvature of the diaphragm domes (anatomy units^-1) left-right and antero-posterior: the central tendon lies
#: 15-25 mm below the dome apices, the posterior costophrenic recesses deeper.
DOME_CURVATURE = (0.7, 1.3)


def make_chest_phantom(
    shape: tuple[int, int, int] | int = (128, 128, 128),
    spacing: tuple[float, float, float] | float = (1.0, 1.0, 1.0),
    seed: int = 0,
    nodules: int = 1,
    nodule_radius_mm: float = 4.0,
    noise_sd: float | None = None,
    phase: str = "non_contrast",
    centre_mm: tuple[float, float, float] | str = (0.0, 0.0, 0.0),
    nodule_types: Mapping[str, float] | None = None,
    nodule_sites: Mapping[str, float] | None = None,
    dose: float = 1.0,
) -> PhantomVolume:
    """Generate a chest CT phantom in HU with organ labels and optional lung nodules.

    Args:
        shape: volume shape (x, y, z) in voxels, or one int for a cube.
        spacing: voxel size (x, y, z) in mm, or one number for isotropic voxels.
        seed: non-negative integer seed (bit-identical output for the same seed).
        nodules: number of nodules (0 for none); they do not touch each other.
        nodule_radius_mm: nominal nodule radius in mm (lobulated margin within +15 %).
        noise_sd: SD in HU of the scanner noise; None for the calibrated kernel-noise model at this spacing and
            ``dose``; 0 for none.
        phase: "non_contrast" (default, as in lung screening CT), "portal_venous" or "pancreatic" (arterial).
        centre_mm: patient point (mm) at the grid centre, or "heart" for the centre of the seed's ventricles; the
            chest is a fixed-size adult thorax (about 300 mm wide) that the grid samples, so a small field of view
            is a crop of it.
        nodule_types: fractions of "solid", "part_solid" and "ground_glass" nodules (default 0.6 / 0.2 / 0.2).
        nodule_sites: fractions of "isolated", "juxta_pleural" and "juxta_vascular" nodules (default
            0.5 / 0.3 / 0.2); each nodule's type and site are drawn from these.
        dose: relative tube current-time product (noise SD scales as ``1 / sqrt(dose)``).

    Returns:
        A :class:`PhantomVolume`; ``label`` holds nodule = 1, ``organs`` the full
        :data:`~ctsynth.data.labels.CHEST_LABELS` map, ``info['nodules']`` the nodule centres, radii, types and
        sites.

    Raises:
        ValueError: for a bad shape, spacing, seed, phase, noise level, dose, centre, nodule count or fractions, or a
            nodule that cannot be placed at its site inside the lungs.
    """
    shape = check_shape(shape)
    spacing = check_spacing(spacing)
    phase = check_phase(phase)
    if noise_sd is not None and not (np.isfinite(noise_sd) and noise_sd >= 0):
        raise ValueError(f"noise_sd must be >= 0 HU, got {noise_sd!r}")
    if not (isinstance(dose, int | float) and np.isfinite(dose) and dose > 0):
        raise ValueError(f"dose must be a positive number, got {dose!r}")
    if isinstance(nodules, bool) or not isinstance(nodules, int | np.integer) or nodules < 0:
        raise ValueError(f"nodules must be a non-negative integer, got {nodules!r}")
    if nodules and not (np.isfinite(nodule_radius_mm) and nodule_radius_mm > 0):
        raise ValueError(f"nodule_radius_mm must be > 0, got {nodule_radius_mm!r}")
    types = check_fractions(nodule_types, NODULE_TYPES, "nodule_types", DEFAULT_TYPES)
    sites = check_fractions(nodule_sites, NODULE_SITES, "nodule_sites", DEFAULT_SITES)
    rng_anat, rng_lesion, rng_noise, rng_thorax = seed_streams(seed, 4)
    thorax = ThoraxPlan.random(rng_thorax)
    centre = _grid_centre(centre_mm, thorax)
    frame = BodyFrame(shape, spacing, centre, CHEST_UNIT_MM)
    tissue, lung_field = _paint_anatomy(frame, rng_anat, thorax)
    placed = place_nodules(
        frame, tissue, lung_field, T, rng_lesion, int(nodules), float(nodule_radius_mm), types, sites
    )
    sd = NOISE_MODEL.sd_at(spacing, dose) if noise_sd is None else float(noise_sd)
    image = render(tissue, CHEST_TISSUES, phase, rng_noise, spacing, sd, noise_model=NOISE_MODEL)
    organs = TISSUE_TO_LABEL[tissue]
    label = (organs == NODULE_LABEL).astype(np.uint8) * np.uint8(NODULE_LABEL)
    info = {
        "seed": int(seed),
        "phase": phase,
        "noise_sd": sd,
        "dose": float(dose),
        "unit_mm": frame.unit_mm,
        "centre_mm": [float(c) for c in centre],
        "heart_centre_mm": [float(c) for c in thorax.heart_centre * CHEST_UNIT_MM],
        "nodule_types": types,
        "nodule_sites": sites,
        "nodules": placed,
    }
    return PhantomVolume(
        image=image,
        label=label,
        organs=organs,
        affine=frame.affine(),
        label_names=dict(NODULE_NAMES),
        organ_names=dict(CHEST_LABELS),
        info=info,
    )


def _grid_centre(centre: tuple[float, float, float] | str, thorax: ThoraxPlan) -> tuple[float, float, float]:
    """Resolve the ``centre_mm`` argument to a patient point (mm).

    Raises:
        ValueError: for anything but "heart" or three finite numbers.
    """
    if isinstance(centre, str):
        if centre != "heart":
            raise ValueError(f'centre_mm must be "heart" or three numbers (mm), got {centre!r}')
        return tuple(float(c) for c in thorax.heart_centre * CHEST_UNIT_MM)  # type: ignore[return-value]
    try:
        vals = tuple(float(x) for x in centre)
    except (TypeError, ValueError):
        raise ValueError(f'centre_mm must be "heart" or three numbers (mm), got {centre!r}') from None
    if len(vals) != 3 or not all(np.isfinite(vals)):
        raise ValueError(f'centre_mm must be "heart" or three numbers (mm), got {centre!r}')
    return vals  # type: ignore[return-value]


def _paint_anatomy(frame: BodyFrame, rng: np.random.Generator, thorax: ThoraxPlan) -> tuple[np.ndarray, np.ndarray]:
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

    # --- lungs fill the cavity inside the ribs, under rounded apices and over the diaphragm domes (right higher);
    #     the costophrenic recesses are where the domes fall away laterally and posteriorly
    U2, V2 = u[:, None], v[None, :]
    apex = 0.85 + rng.uniform(-0.05, 0.05) - 2.5 * (np.abs(U2) - 0.38) ** 2 - 1.5 * (V2 + 0.05) ** 2
    dome = thorax.dome(U2, V2)
    W3 = w[None, None, :]
    tissue[cavity & (W3 < apex[:, :, None])] = T["lung"]
    tissue[cavity & (W3 >= apex[:, :, None])] = T["fat"]  # above the apices: fat of the thoracic inlet
    med_c = (rng.uniform(-0.03, 0.03), rng.uniform(0.0, 0.08))
    med = ((u[:, None, None] - med_c[0]) / 0.17) ** 2 + ((v[None, :, None] - med_c[1]) / 0.55) ** 2 <= 1.0
    tissue[med & cavity] = T["mediastinum"]
    paint(tissue, ellipsoid(frame, (0.0, -0.36, 0.0), (0.18, 0.15, top)), T["mediastinum"], where=cavity)
    _paint_heart(frame, tissue, thorax, cavity)
    tissue[cavity & (W3 < dome[:, :, None])] = T["subdiaphragm"]  # liver and spleen domes, stomach
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
        # pulmonary arteries and veins: trees from the hilum towards every part of the lung
        for d in VESSEL_ROOTS:
            d = np.asarray(d) * (side, 1.0, 1.0) + rng.uniform(-0.15, 0.15, 3)
            root = hilum + (0.0, rng.uniform(-0.05, 0.08), rng.uniform(-0.08, 0.04))
            segs = branching_tree(
                rng,
                root,
                d,
                VESSEL_ROOT_LENGTH * rng.uniform(0.85, 1.15),
                VESSEL_ROOT_RADIUS * rng.uniform(0.85, 1.15),
                max(min_r, 0.0035),
                VESSEL_DEPTH,
                pull=d / np.linalg.norm(d),
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


def _dome_at(z_right: float, z_left: float, u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """Height (anatomy units) of the diaphragm under the point ``(u, v)``: two domes, the right one higher."""
    return np.maximum(
        z_right - DOME_CURVATURE[0] * (u - 0.42) ** 2 - DOME_CURVATURE[1] * (v + 0.05) ** 2,
        z_left - DOME_CURVATURE[0] * (u + 0.42) ** 2 - DOME_CURVATURE[1] * (v + 0.05) ** 2,
    )


@dataclass(frozen=True)
class ThoraxPlan:
    """Diaphragm domes and heart of one seed, drawn from their own stream before any grid exists (anatomy units).

    The ventricular mass is an ellipsoid of about 120 x 90 x 80 mm whose long axis runs from the base (right,
    posterior, superior) to the apex (left, anterior, inferior), about 45 degrees from the sagittal plane; its
    lowest point rests on the central tendon and left dome of the diaphragm. The atria form a smaller ellipsoid
    behind and above the ventricles.

    Args:
        z_right: apex height of the right diaphragm dome.
        z_left: apex height of the left dome (lower).
        heart_rot: columns are the ventricles' long axis and two short axes.
        heart_centre: centre of the ventricles.
        heart_radii: semi-axes of the ventricles.
        atria_centre: centre of the atria.
        atria_radii: semi-axes of the atria.
    """

    z_right: float
    z_left: float
    heart_rot: np.ndarray
    heart_centre: np.ndarray
    heart_radii: np.ndarray
    atria_centre: np.ndarray
    atria_radii: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator) -> ThoraxPlan:
        """Draw the domes (right 1-2 cm higher) and a heart resting on them."""
        z_right = -0.45 + rng.uniform(-0.06, 0.06)
        z_left = z_right - rng.uniform(0.03, 0.09)
        axis = np.array([-0.62 + rng.normal(0, 0.05), 0.55 + rng.normal(0, 0.05), -0.5 + rng.normal(0, 0.05)])
        axis /= np.linalg.norm(axis)
        side = np.cross(axis, (0.0, 0.0, 1.0))
        side /= np.linalg.norm(side)
        rot = np.stack([axis, side, np.cross(axis, side)], axis=1)
        size = rng.uniform(0.92, 1.08)
        radii = np.array([0.36, 0.27, 0.24]) * size
        cu, cv = -0.12 + rng.normal(0, 0.02), 0.1 + rng.normal(0, 0.02)
        low = float(np.sqrt(((rot * radii[None, :]) ** 2).sum(axis=1))[2])  # half-height of the ventricles
        centre = np.array([cu, cv, float(_dome_at(z_right, z_left, cu, cv)) + low - 0.01])
        atria_c = centre + rot @ np.array([-0.3, 0.0, 0.0]) * size + np.array([0.05, -0.08, 0.06])
        return cls(z_right, z_left, rot, centre, radii, atria_c, np.array([0.17, 0.24, 0.15]) * size)

    def dome(self, u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
        """Height of the diaphragm under ``(u, v)``."""
        return _dome_at(self.z_right, self.z_left, u, v)


def _paint_heart(frame: BodyFrame, tissue: np.ndarray, plan: ThoraxPlan, cavity: np.ndarray) -> None:
    """Paint the heart of ``plan``: blood pool (``heart_chamber``) inside a myocardial wall of about 10 mm
    (ventricles) and 4 mm (atria)."""
    for c, r, t in ((plan.atria_centre, plan.atria_radii, 4.0), (plan.heart_centre, plan.heart_radii, 10.0)):
        paint(tissue, ellipsoid(frame, c, r, plan.heart_rot), T["heart"], where=cavity)
        inner = np.maximum(r - t / frame.unit_mm, 1e-3)
        paint(tissue, ellipsoid(frame, c, inner, plan.heart_rot), T["heart_chamber"], where=cavity)
