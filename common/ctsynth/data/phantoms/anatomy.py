"""Anatomy shared by the abdominal and chest phantoms: body outline and wall layers, spine, branching tubes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctsynth.data.phantoms.geometry import BodyFrame, capsule


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


@dataclass(frozen=True)
class Segments:
    """Tapered tube segments of a tree: ``a`` to ``b`` (``(n, 3)``, anatomy units) with radii ``ra`` to ``rb``.

    Iterating yields ``(a, b, radius_a, radius_b)`` tuples, one per segment.
    """

    a: np.ndarray
    b: np.ndarray
    ra: np.ndarray
    rb: np.ndarray

    def __len__(self) -> int:
        return len(self.ra)

    def __iter__(self):
        return iter(zip(self.a, self.b, self.ra.tolist(), self.rb.tolist(), strict=True))

    @classmethod
    def concat(cls, parts: Sequence[Segments | Sequence[tuple]]) -> Segments:
        """One :class:`Segments` from several (or from lists of ``(a, b, ra, rb)`` tuples)."""
        arrays = []
        for p in parts:
            if not isinstance(p, Segments):
                p = Segments(
                    np.array([x[0] for x in p], dtype=np.float64).reshape(-1, 3),
                    np.array([x[1] for x in p], dtype=np.float64).reshape(-1, 3),
                    np.array([x[2] for x in p], dtype=np.float64),
                    np.array([x[3] for x in p], dtype=np.float64),
                )
            arrays.append(p)
        return cls(*(np.concatenate([getattr(p, k) for p in arrays]) for k in ("a", "b", "ra", "rb")))


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
) -> Segments:
    """Segments of a random dichotomous tree (airways, pulmonary vessels), grown one generation at a time.

    Each segment tapers by 15 % along its length and splits in two children of radius ``r / 2**(1/3)`` (Murray's
    law for a symmetric bifurcation), shorter by a random factor 0.65-0.85, rotated by a random angle in
    ``spread_deg`` about a random axis perpendicular to the parent. ``pull`` (a unit vector) biases children towards
    the lung periphery. A whole generation is drawn with array operations, so trees of thousands of segments are
    cheap.

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
        The :class:`Segments`, generation by generation.
    """
    p = np.asarray(start, dtype=np.float64)[None, :]
    d = _units(np.asarray(direction, dtype=np.float64)[None, :])
    ln = np.array([float(length)])
    r = np.array([float(radius)])
    parts = []
    for depth in range(max_depth + 1):
        q = p + d * ln[:, None]
        parts.append(Segments(p, q, r, 0.85 * r))
        rc = r / 2 ** (1 / 3)
        if depth >= max_depth or rc[0] < min_radius:  # one radius per generation
            break
        m = len(r)
        axis = _units(np.cross(d, rng.normal(size=(m, 3))))
        axis = _rotate_many(axis, d, rng.uniform(0, np.pi, m))
        ang = np.deg2rad(rng.uniform(*spread_deg, size=(m, 2)))
        children = np.stack([_rotate_many(d, axis, ang[:, 0]), _rotate_many(d, axis, -ang[:, 1])], axis=1)
        if pull is not None:
            children = _units(children + 0.35 * np.asarray(pull, dtype=np.float64))
        ln = (ln[:, None] * rng.uniform(0.65, 0.85, size=(m, 2))).ravel()
        p = np.repeat(q, 2, axis=0)
        d = children.reshape(-1, 3)
        r = np.repeat(rc, 2)
    return Segments.concat(parts)


#: Segments thinner than this many voxels are painted by splatting points sampled along them (vectorised),
#: thicker ones as capsules over their bounding box.
SPLAT_MAX_VOXELS = 2.0


def paint_tree(
    frame: BodyFrame,
    tissue: np.ndarray,
    segs: Segments | Sequence[tuple],
    tid: int,
    where: np.ndarray,
    lumen: tuple[int, float] | None = None,
) -> None:
    """Paint tree segments as tubes, only inside ``where``; optionally an inner lumen ``(tissue id, radius ratio)``.

    Segments whose box misses the grid are culled in one vectorised test; thick segments are painted as capsules,
    thin ones (most of a tree) by :func:`_splat_segments`.
    """
    segs = segs if isinstance(segs, Segments) else Segments.concat([segs])
    if len(segs) == 0:
        return
    vox = float(frame.voxel_units.min())
    min_lumen = 0.6 * vox
    rad = np.maximum(segs.ra, segs.rb)[:, None]
    lo = (np.minimum(segs.a, segs.b) - rad) * frame.unit_mm - np.asarray(frame.centre_mm)
    hi = (np.maximum(segs.a, segs.b) + rad) * frame.unit_mm - np.asarray(frame.centre_mm)
    half = (np.asarray(frame.shape) - 1) / 2.0 * np.asarray(frame.spacing) + np.asarray(frame.spacing)
    inside = np.all((hi >= -half) & (lo <= half), axis=1)
    thin = rad[:, 0] <= SPLAT_MAX_VOXELS * vox
    one = np.ones(3, dtype=np.float32)
    for i in np.flatnonzero(inside & ~thin):
        shape = capsule(
            frame,
            segs.a[i].astype(np.float32),
            segs.b[i].astype(np.float32),
            np.float32(segs.ra[i]),
            np.float32(segs.rb[i]),
            one,
        )
        if shape is None:
            continue
        sl, f = shape
        ok = where[sl]
        sub = tissue[sl]
        sub[(f <= 1.0) & ok] = tid
        if lumen is not None and segs.rb[i] * lumen[1] >= min_lumen:
            sub[(f <= lumen[1]) & ok] = lumen[0]
    sel = np.flatnonzero(inside & thin)
    if len(sel):
        _splat_segments(frame, tissue, segs.a[sel], segs.b[sel], segs.ra[sel], segs.rb[sel], tid, where)
        if lumen is not None:
            has = segs.rb[sel] * lumen[1] >= min_lumen
            s2 = sel[has]
            ratio = lumen[1]
            _splat_segments(
                frame, tissue, segs.a[s2], segs.b[s2], segs.ra[s2] * ratio, segs.rb[s2] * ratio, lumen[0], where
            )


def _splat_segments(
    frame: BodyFrame,
    tissue: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    ra: np.ndarray,
    rb: np.ndarray,
    tid: int,
    where: np.ndarray,
    batch: int = 40000,
) -> None:
    """Paint thin tapered segments: points every third of a voxel along each, every voxel centre within the local
    radius of a point (distances in mm) gets ``tid`` where ``where`` allows.

    Sampling every third of a voxel puts every point of the segment within a sixth of a voxel of a sample, so the
    painted set matches the capsule to that tolerance.
    """
    sp = np.asarray(frame.spacing, dtype=np.float64)
    rmax_vox = np.maximum(ra, rb) * frame.unit_mm / float(sp.min())
    reach_of = np.maximum(np.ceil(rmax_vox).astype(int), 1)
    for reach in np.unique(reach_of):  # a small stencil for the many thin segments, a larger one for the few
        sel = reach_of == reach
        _splat_group(frame, tissue, a[sel], b[sel], ra[sel], rb[sel], tid, where, int(reach), batch)


def _splat_group(
    frame: BodyFrame,
    tissue: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    ra: np.ndarray,
    rb: np.ndarray,
    tid: int,
    where: np.ndarray,
    reach: int,
    batch: int,
) -> None:
    """:func:`_splat_segments` for segments no thicker than ``reach`` voxels (stencil of ``2 reach + 1`` per axis)."""
    sp = np.asarray(frame.spacing, dtype=np.float64)
    step = float(sp.min()) / 3.0 / frame.unit_mm
    n = np.maximum(np.ceil(np.linalg.norm(b - a, axis=1) / step).astype(int), 1) + 1
    seg = np.repeat(np.arange(len(n)), n)
    t = _ramps(n)
    pts = a[seg] + (b[seg] - a[seg]) * t[:, None]
    rad2 = (((ra[seg] + (rb[seg] - ra[seg]) * t) * frame.unit_mm) ** 2).astype(np.float32)
    idx = (pts * frame.unit_mm - np.asarray(frame.centre_mm)) / sp + (np.asarray(frame.shape) - 1) / 2.0
    g = np.arange(-reach, reach + 1)
    offs = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    shape = np.asarray(tissue.shape)
    sp32 = sp.astype(np.float32)
    flat_tissue, flat_where = tissue.reshape(-1), where.reshape(-1)
    for s in range(0, len(pts), batch):
        base = np.rint(idx[s : s + batch]).astype(np.int32)
        frac = ((base - idx[s : s + batch]) * sp).astype(np.float32)  # voxel centre minus point, mm
        d2 = ((offs[None, :, :] * sp32 + frac[:, None, :]) ** 2).sum(-1)
        hit = d2 <= rad2[s : s + batch, None]
        pi, oi = np.nonzero(hit)
        v = base[pi] + offs[oi]
        ok = np.all((v >= 0) & (v < shape), axis=1)
        v = v[ok]
        if len(v) == 0:
            continue
        flat = np.ravel_multi_index((v[:, 0], v[:, 1], v[:, 2]), tissue.shape)
        flat_tissue[flat[flat_where[flat]]] = tid


def _ramps(n: np.ndarray) -> np.ndarray:
    """Concatenated ``linspace(0, 1, k)`` for every ``k`` in ``n`` (``k >= 2``), without a Python loop."""
    start = np.repeat(np.cumsum(n) - n, n)
    pos = np.arange(int(n.sum())) - start
    return pos / np.repeat(n - 1, n)


def _units(x: np.ndarray) -> np.ndarray:
    """Rows (or last-axis vectors) scaled to unit length."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _rotate_many(x: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of each row of ``x`` about the matching unit row of ``axis`` by ``angle``."""
    k = _units(axis)
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return x * c + np.cross(k, x) * s + k * (k * x).sum(-1, keepdims=True) * (1 - c)
