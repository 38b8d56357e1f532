"""Anatomy shared by the abdominal and chest phantoms: body outline and wall layers, spine, branching tubes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctsynth.data.phantoms.geometry import BodyFrame, tube


@dataclass(frozen=True)
class BodyShape:
    """Per-seed body outline parameters (anatomy units).

    Args:
        half_x: left-right semi-axis.
        half_ant: anterior semi-axis (from ``centre_v``).
        half_post: posterior semi-axis.
        centre_v: antero-posterior centre.
        post_power: exponent of the posterior half (> 2 flattens the back).
        harmonics: ``(k, amplitude, phase)`` rows of the angular outline wobble.
        z_amp: relative amplitude of the slow cranio-caudal size variation.
        z_phase: its phase.
    """

    half_x: float
    half_ant: float
    half_post: float
    centre_v: float
    post_power: float
    harmonics: np.ndarray
    z_amp: float
    z_phase: float

    @classmethod
    def random(cls, rng: np.random.Generator, half_x: float, half_y: float, centre_v: float) -> BodyShape:
        """Jitter the outline of a body of nominal semi-axes ``half_x`` x ``half_y``."""
        size = rng.uniform(0.95, 1.03)
        aspect = rng.uniform(0.94, 1.06)
        harm = np.stack([np.arange(2, 6), rng.uniform(0.005, 0.025, 4), rng.uniform(0, 2 * np.pi, 4)], axis=1).astype(
            np.float32
        )
        return cls(
            half_x=half_x * size,
            half_ant=half_y * size * aspect,
            half_post=half_y * size * aspect * 0.95,
            centre_v=centre_v,
            post_power=rng.uniform(2.4, 3.0),
            harmonics=harm,
            z_amp=rng.uniform(0.0, 0.03),
            z_phase=rng.uniform(0, 2 * np.pi),
        )

    def field(self, frame: BodyFrame) -> np.ndarray:
        """Squared elliptical radius of every voxel (``<= 1`` inside the body), float32, full volume."""
        u, v, w = frame.axes
        U, V = u[:, None], (v - self.centre_v)[None, :]
        fu = (U / self.half_x) ** 2
        fv = np.where(V > 0, (V / self.half_ant) ** 2, np.abs(V / self.half_post) ** self.post_power)
        theta = np.arctan2(V, U)
        wob = np.ones_like(theta)
        for k, a, ph in self.harmonics:
            wob += a * np.cos(k * theta + ph)
        f2 = ((fu + fv) / wob**2).astype(np.float32)
        zs = (1.0 + self.z_amp * np.sin(2.1 * w + self.z_phase)).astype(np.float32)
        return f2[:, :, None] / (zs**2)[None, None, :]


@dataclass(frozen=True)
class SpineShape:
    """Per-seed vertebral column parameters (anatomy units).

    Args:
        centre_v: antero-posterior centre of the vertebral bodies.
        body_radii: semi-axes (u, v) of a vertebral body.
        period: height of one vertebra plus disc.
        phase: cranio-caudal offset of the segmentation.
        disc_fraction: fraction of the period taken by the disc.
        cortex: cortical shell thickness.
        scale: anatomy units per reference unit of the fixed proportions (canal, arch, processes); the reference
            unit is about 150 mm, so 1 for the chest (150 mm units) and 150 for anatomy written in mm.
    """

    centre_v: float
    body_radii: tuple[float, float]
    period: float
    phase: float
    disc_fraction: float
    cortex: float
    scale: float = 1.0

    @classmethod
    def random(cls, rng: np.random.Generator, centre_v: float, frame: BodyFrame, scale: float = 1.0) -> SpineShape:
        """Jitter a lumbar-like column centred at ``centre_v``; the cortex is at least about one voxel thick.

        With ``scale = 150`` (anatomy in mm) a vertebral body is about 39 x 30 mm and the period 31.5 mm, the adult
        lumbar figures.
        """
        s = rng.uniform(0.93, 1.07)
        return cls(
            centre_v=centre_v + scale * rng.uniform(-0.02, 0.02),
            body_radii=(0.13 * s * scale, 0.10 * s * scale),
            period=0.21 * rng.uniform(0.95, 1.05) * scale,
            phase=rng.uniform(0, 1),
            disc_fraction=0.2,
            cortex=max(0.018 * scale, 0.8 * float(frame.voxel_units[:2].max())),
            scale=scale,
        )


def paint_spine(frame: BodyFrame, tissue: np.ndarray, spine: SpineShape, ids: dict[str, int]) -> np.ndarray:
    """Paint vertebral bodies (cancellous core, cortical shell and endplates), discs, neural arch and processes.

    Args:
        frame: body frame.
        tissue: tissue map (modified in place).
        spine: column parameters.
        ids: tissue ids with keys cancellous_bone, cortical_bone, disc, spinal_canal.

    Returns:
        Boolean mask (full volume) of everything painted.
    """
    rbx, rby = spine.body_radii
    k = spine.scale
    vb = spine.centre_v
    vc = vb - rby - 0.075 * k  # canal centre, behind the body
    rc = 0.055 * k
    zc, zh = (frame.lower[2] + frame.upper[2]) / 2, (frame.upper[2] - frame.lower[2]) / 2
    sl = frame.box((0.0, vb - 0.22 * k, zc), (0.3 * k, 0.36 * k, zh + 1.0))
    if sl is None:
        return np.zeros(tissue.shape, dtype=bool)
    U, V, W = frame.grids(sl)
    U2, V2 = U[:, :, 0], V[:, :, 0]
    ph = (((W[0, 0] - spine.phase * spine.period) / spine.period) % 1.0).astype(np.float32)  # along z only
    disc_z = ph < spine.disc_fraction
    end = spine.cortex / spine.period
    endplate_z = (~disc_z) & ((ph < spine.disc_fraction + end) | (ph > 1.0 - end))
    fb = (U2 / rbx) ** 2 + ((V2 - vb) / rby) ** 2
    body2 = fb <= 1.0
    shell2 = body2 & (fb > (1.0 - spine.cortex / rby) ** 2)
    fc = (U2 / rc) ** 2 + ((V2 - vc) / rc) ** 2
    canal2 = fc <= 1.0
    arch2 = (fc <= 1.9**2) & ~canal2 & (V2 < vb - 0.5 * rby)
    spinous2 = (np.abs(U2) < 0.028 * k) & (V2 < vc - 0.05 * k) & (V2 > vc - 0.27 * k)
    transverse2 = (np.abs(V2 - vc - 0.01 * k) < 0.03 * k) & (np.abs(U2) < 0.22 * k)
    spinous_z = (~disc_z) & (ph > 0.3) & (ph < 0.9)
    transverse_z = (ph > 0.45) & (ph < 0.75)

    sub = tissue[sl]
    region = np.zeros(sub.shape, dtype=bool)

    def put(m2: np.ndarray, mz: np.ndarray | None, tid: int) -> None:
        mz = np.ones(sub.shape[2], dtype=bool) if mz is None else mz
        m = m2[:, :, None] & mz[None, None, :]
        sub[m] = tid
        region[m] = True

    put(body2, ~disc_z, ids["cancellous_bone"])
    put(shell2, ~disc_z, ids["cortical_bone"])
    put(body2, endplate_z, ids["cortical_bone"])
    put(body2, disc_z, ids["disc"])
    put(arch2, ~disc_z, ids["cancellous_bone"])
    put(arch2 & (fc > 1.6**2), ~disc_z, ids["cortical_bone"])
    put(spinous2, spinous_z, ids["cancellous_bone"])
    put(transverse2, transverse_z & ~disc_z, ids["cancellous_bone"])
    put(canal2, None, ids["spinal_canal"])
    out = np.zeros(tissue.shape, dtype=bool)
    out[sl] = region
    return out


def branching_tree(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: np.ndarray,
    length: float,
    radius: float,
    min_radius: float,
    max_depth: int,
    spread_deg: tuple[float, float] = (20.0, 40.0),
    pull: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Segments of a random dichotomous tree (airways, pulmonary vessels).

    Each segment tapers by 15 % along its length and splits in two children of radius ``r / 2**(1/3)`` (Murray's
    law for a symmetric bifurcation), shorter by a random factor 0.65-0.85, rotated by a random angle in
    ``spread_deg`` about a random axis perpendicular to the parent. ``pull`` (a unit vector) biases children towards
    the lung periphery.

    Args:
        rng: random generator.
        start: root point (anatomy units).
        direction: root direction.
        length: root length.
        radius: root radius.
        min_radius: stop when a child would be thinner than this.
        max_depth: maximum generation.
        spread_deg: range of branching angles.
        pull: optional outward bias direction.

    Returns:
        List of ``(a, b, radius_a, radius_b)`` segments.
    """
    segs: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    stack = [(np.asarray(start, float), _unit(np.asarray(direction, float)), float(length), float(radius), 0)]
    while stack:
        p, d, L, r, depth = stack.pop()
        q = p + d * L
        segs.append((p, q, r, 0.85 * r))
        rc = r / 2 ** (1 / 3)
        if depth >= max_depth or rc < min_radius:
            continue
        axis = _unit(_cross(d, rng.normal(size=3)))
        base = rng.uniform(0, np.pi)
        for sign in (1.0, -1.0):
            ang = np.deg2rad(rng.uniform(*spread_deg))
            ax = _rotate(axis, d, base)
            child = _rotate(d, ax, sign * ang)
            if pull is not None:
                child = _unit(child + 0.35 * pull)
            stack.append((q, child, L * rng.uniform(0.65, 0.85), rc, depth + 1))
    return segs


def paint_tree(
    frame: BodyFrame,
    tissue: np.ndarray,
    segs: list[tuple[np.ndarray, np.ndarray, float, float]],
    tid: int,
    where: np.ndarray,
    lumen: tuple[int, float] | None = None,
) -> None:
    """Paint tree segments as tubes, only inside ``where``; optionally an inner lumen ``(tissue id, radius ratio)``."""
    min_lumen = 0.6 * float(frame.voxel_units.min())
    for a, b, ra, rb in segs:
        shape = tube(frame, np.stack([a, b]), np.array([ra, rb]))
        if shape is None:
            continue
        sl, f = shape
        ok = where[sl]
        sub = tissue[sl]
        sub[(f <= 1.0) & ok] = tid
        if lumen is not None and rb * lumen[1] >= min_lumen:
            sub[(f <= lumen[1]) & ok] = lumen[0]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (``np.cross`` has a large per-call overhead for single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _rotate(x: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``x`` about unit ``axis``."""
    k = _unit(axis)
    return x * np.cos(angle) + _cross(k, x) * np.sin(angle) + k * (k @ x) * (1 - np.cos(angle))
