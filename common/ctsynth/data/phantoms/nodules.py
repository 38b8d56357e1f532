"""Lung nodules of the chest phantom: type (solid, part-solid, ground-glass) and site (isolated, juxta-pleural,
juxta-vascular) drawn from configurable fractions, and placed so that the site is true of the painted nodule.

Site definitions (checked by :func:`nodule_site` on the organ map, with 6-neighbour contact):

- ``isolated``: the nodule touches only lung parenchyma;
- ``juxta_pleural``: it touches the pleura, i.e. a structure outside the lung field (chest wall, diaphragm,
  mediastinum, heart), and no vessel;
- ``juxta_vascular``: it touches a pulmonary vessel and no structure outside the lung field.

A nodule replaces lung parenchyma only: the vessels and the wall it abuts stay, and vessels may run through a
ground-glass nodule as in real scans. Part-solid nodules have a solid core of half the radius.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from ctsynth.data.phantoms.geometry import BodyFrame, SmoothField

NODULE_TYPES = ("solid", "part_solid", "ground_glass")
NODULE_SITES = ("isolated", "juxta_pleural", "juxta_vascular")
#: Default type fractions (a choice: solid nodules are the majority in screening; documented in docs/phantoms.md).
DEFAULT_TYPES = {"solid": 0.6, "part_solid": 0.2, "ground_glass": 0.2}
#: Default site fractions (a choice, see docs/phantoms.md).
DEFAULT_SITES = {"isolated": 0.5, "juxta_pleural": 0.3, "juxta_vascular": 0.2}
#: The lobulated outline stays within this factor of the nominal radius.
NODULE_MAX_EXTENT = 1.15
#: Radius of the solid core of a part-solid nodule, relative to the nodule.
PART_SOLID_CORE = 0.5
_TRIES_PER_NODULE = 600


def check_fractions(
    fractions: Mapping[str, float] | None, allowed: tuple[str, ...], what: str, default: Mapping[str, float]
) -> dict[str, float]:
    """Validate a fraction table (names from ``allowed``, non-negative, summing to 1) and complete it with zeros.

    Args:
        fractions: name -> fraction, or None for ``default``.
        allowed: the valid names.
        what: the argument's name, for the error message.
        default: the table used when ``fractions`` is None.

    Returns:
        A fraction for every name of ``allowed``.

    Raises:
        ValueError: for an unknown name, a negative or non-finite value, or a sum other than 1.
    """
    if fractions is None:
        fractions = default
    if not isinstance(fractions, Mapping):
        raise ValueError(f"{what} must be a mapping of {allowed} to fractions, got {fractions!r}")
    unknown = set(fractions) - set(allowed)
    if unknown:
        raise ValueError(f"{what}: unknown name(s) {sorted(unknown)}; expected some of {allowed}")
    vals = {k: float(fractions.get(k, 0.0)) for k in allowed}
    if not all(np.isfinite(v) and v >= 0 for v in vals.values()) or abs(sum(vals.values()) - 1.0) > 1e-6:
        raise ValueError(f"{what} must be non-negative fractions summing to 1, got {dict(fractions)!r}")
    return vals


def nodule_site(organs: np.ndarray, nodule: np.ndarray, lung_ids: tuple[int, ...], vessel_id: int) -> str:
    """Site of one nodule from what its 6-neighbour ring touches (definitions in the module docstring).

    Args:
        organs: organ label map.
        nodule: boolean mask of the nodule.
        lung_ids: labels inside the lung field (parenchyma, vessel, airway, nodule).
        vessel_id: label of the pulmonary vessels.

    Returns:
        "isolated", "juxta_pleural", "juxta_vascular", or "pleural_and_vascular" when it touches both.
    """
    ring = ndimage.binary_dilation(nodule) & ~nodule
    touched = organs[ring]
    pleura = bool((~np.isin(touched, lung_ids)).any())
    vessel = bool((touched == vessel_id).any())
    if pleura and vessel:
        return "pleural_and_vascular"
    return "juxta_pleural" if pleura else "juxta_vascular" if vessel else "isolated"


def draw_kinds(
    rng: np.random.Generator, n: int, types: Mapping[str, float], sites: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the type and site of ``n`` nodules independently from the fractions.

    Returns:
        ``(type_index, site_index)``: integer arrays into :data:`NODULE_TYPES` and :data:`NODULE_SITES`.
    """
    kinds = rng.choice(len(NODULE_TYPES), size=n, p=[types[k] for k in NODULE_TYPES])
    where = rng.choice(len(NODULE_SITES), size=n, p=[sites[k] for k in NODULE_SITES])
    return kinds, where


def place_nodules(
    frame: BodyFrame,
    tissue: np.ndarray,
    lung_field: np.ndarray,
    ids: Mapping[str, int],
    rng: np.random.Generator,
    n: int,
    radius_mm: float,
    types: Mapping[str, float],
    sites: Mapping[str, float],
) -> list[dict]:
    """Draw and paint ``n`` nodules (modifies ``tissue``).

    Args:
        frame: body frame of the grid.
        tissue: tissue map (modified in place).
        lung_field: lungs with their vessels and airways.
        ids: tissue ids with keys lung, lung_vessel, nodule (solid) and nodule_ggo.
        rng: the lesion stream of the seed.
        n: number of nodules.
        radius_mm: nominal radius.
        types: fractions of :data:`NODULE_TYPES` (validated).
        sites: fractions of :data:`NODULE_SITES` (validated).

    Returns:
        One dict per nodule: centre (voxels and mm), radius, type and site.

    Raises:
        ValueError: when a nodule of this radius and site cannot be placed in the field of view.
    """
    if n == 0:
        return []
    if not lung_field.any():
        raise ValueError("the phantom has no lung inside the field of view; use a larger volume")
    kinds, where = draw_kinds(rng, n, types, sites)
    sp = np.asarray(frame.spacing)
    reach_mm = NODULE_MAX_EXTENT * radius_mm + float(sp.max())
    reach = np.ceil(reach_mm / sp).astype(int) + 1
    parenchyma = tissue == ids["lung"]
    vessel = (tissue == ids["lung_vessel"]) & lung_field
    candidates = {
        "isolated": np.flatnonzero(parenchyma),
        "juxta_pleural": np.flatnonzero(_pleural_surface(lung_field)) if "juxta_pleural" in _names(where) else None,
        "juxta_vascular": np.flatnonzero(vessel) if "juxta_vascular" in _names(where) else None,
    }
    placed: list[dict] = []
    centres: list[np.ndarray] = []
    for i in range(n):
        kind, site = NODULE_TYPES[kinds[i]], NODULE_SITES[where[i]]
        pool = candidates[site]
        for _ in range(_TRIES_PER_NODULE if pool is not None and len(pool) else 0):
            seed_vox = np.array(np.unravel_index(pool[rng.integers(len(pool))], frame.shape), dtype=float)
            centre = _centre_for(site, seed_vox, lung_field, rng, radius_mm, sp)
            if centre is None or any(np.linalg.norm((centre - o) * sp) < 2.6 * reach_mm for o in centres):
                continue
            lo = np.floor(centre).astype(int) - reach
            hi = np.floor(centre).astype(int) + reach + 1
            if np.any(lo < 0) or np.any(hi > np.asarray(frame.shape)):
                continue
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            mask, core = _outline(frame, box, centre, radius_mm, kind, rng)
            mask &= parenchyma[box]
            if mask.sum() < 0.5 * np.pi * 4 / 3 * radius_mm**3 / np.prod(sp):
                continue  # mostly not lung: leave it
            if _site_of(mask, lung_field[box], vessel[box]) != site:
                continue
            sub = tissue[box]
            sub[mask] = ids["nodule_ggo"] if kind != "solid" else ids["nodule"]
            if kind == "part_solid":
                sub[mask & core] = ids["nodule"]
            parenchyma[box] &= ~mask
            centres.append(centre)
            placed.append(
                {
                    "centre_vox": [float(x) for x in centre],
                    "centre_mm": [float(x) for x in frame.to_units(centre) * frame.unit_mm],
                    "radius_mm": float(radius_mm),
                    "type": kind,
                    "site": site,
                }
            )
            break
        if len(placed) <= i:
            article = "an" if site == "isolated" else "a"
            raise ValueError(
                f"could not place {article} {site.replace('_', '-')} nodule of nodule_radius_mm={radius_mm:g} "
                f"(nodule {i + 1} of {n}) inside the lungs at shape {frame.shape} and spacing {frame.spacing} mm; use "
                "fewer or smaller nodules, other site fractions or a larger field of view (size * spacing)"
            )
    return placed


def _names(where: np.ndarray) -> set[str]:
    return {NODULE_SITES[int(k)] for k in np.unique(where)}


def _pleural_surface(lung_field: np.ndarray) -> np.ndarray:
    """Lung-field voxels with a 6-neighbour outside the lung field (inside the volume)."""
    out = np.zeros_like(lung_field)
    outside = ~lung_field
    for ax in range(3):
        a, b = [slice(None)] * 3, [slice(None)] * 3
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        out[tuple(a)] |= outside[tuple(b)]
        out[tuple(b)] |= outside[tuple(a)]
    return out & lung_field


def _centre_for(
    site: str, seed_vox: np.ndarray, lung_field: np.ndarray, rng: np.random.Generator, radius_mm: float, sp: np.ndarray
) -> np.ndarray | None:
    """Nodule centre (voxels) for a candidate voxel: itself (isolated), moved into the lung (pleural) or beside it."""
    if site == "isolated":
        return seed_vox
    if site == "juxta_vascular":
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        return seed_vox + d * (0.9 * radius_mm + float(sp.max())) / sp
    # pleural: step inwards along the mean direction of the lung field around the surface voxel
    r = np.ceil(2.0 * radius_mm / sp).astype(int)
    lo = np.maximum(seed_vox.astype(int) - r, 0)
    hi = np.minimum(seed_vox.astype(int) + r + 1, lung_field.shape)
    sub = lung_field[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    pts = np.argwhere(sub)
    if len(pts) == 0:
        return None
    inward = ((pts + lo).mean(0) - seed_vox) * sp
    norm = float(np.linalg.norm(inward))
    if norm < 1e-6:
        return None
    return seed_vox + inward / norm * (0.6 * radius_mm) / sp


def _outline(
    frame: BodyFrame, box: tuple[slice, ...], centre: np.ndarray, radius_mm: float, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Lobulated outline (within :data:`NODULE_MAX_EXTENT` radii) and solid-core masks over ``box``."""
    r_u = radius_mm / frame.unit_mm
    cu = frame.to_units(centre)
    wob = SmoothField.random(rng, 6, 1.5 * r_u, 0.1 if kind == "solid" else 0.15)
    U, V, W = frame.grids(box)
    d2 = ((U - cu[0]) ** 2 + (V - cu[1]) ** 2 + (W - cu[2]) ** 2) / r_u**2
    f = d2 + wob(U - np.float32(cu[0]), V - np.float32(cu[1]), W - np.float32(cu[2]))
    mask = (f <= 1.0) & (d2 <= NODULE_MAX_EXTENT**2)
    core = d2 <= PART_SOLID_CORE**2
    return mask, core


def _site_of(mask: np.ndarray, field: np.ndarray, vessel: np.ndarray) -> str:
    """Site of a candidate outline from its 6-neighbour ring in the box (see :func:`nodule_site`)."""
    ring = ndimage.binary_dilation(mask) & ~mask
    pleura = bool((ring & ~field).any())
    touches_vessel = bool((ring & vessel).any())
    if pleura and touches_vessel:
        return "pleural_and_vascular"
    return "juxta_pleural" if pleura else "juxta_vascular" if touches_vessel else "isolated"
