"""Shape primitives of the procedural phantoms, evaluated on a voxel grid that samples a patient frame.

Anatomy is written in patient coordinates: ``u`` (patient right, +x of a RAS affine), ``v`` (anterior, +y) and
``w`` (superior, +z), in millimetres for the abdomen (a fixed number of millimetres per unit for the chest). The
voxel grid only samples that patient (:class:`BodyFrame`), so the same seed draws the same anatomy at any size,
spacing and field-of-view centre. Every primitive is evaluated only inside its own bounding box (a few percent of
the volume for most organs) and returns ``(slices, field)`` where ``field`` is a normalised implicit function: ``<=
1`` inside the shape.

These helpers are written by hand because neither MONAI nor scikit-image offer implicit-shape rasterisation on
anisotropic grids restricted to a bounding box, which is what keeps a 128^3 phantom well under one second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

Slices = tuple[slice, slice, slice]


@dataclass(frozen=True)
class BodyFrame:
    """Voxel grid that samples a patient: the patient coordinates of its voxel centres.

    The anatomy is written in patient coordinates ``(u, v, w)``: ``u`` towards the patient's right (+x of a RAS
    affine), ``v`` anterior (+y), ``w`` superior (+z), in units of ``unit_mm`` millimetres. The grid (shape, spacing
    and the patient point ``centre_mm`` at its centre) only decides where the patient is sampled, so a small field of
    view is a crop of the same full-size body and the same seed gives the same anatomy on every grid.

    Args:
        shape: volume shape in voxels ``(nx, ny, nz)``.
        spacing: voxel size in mm ``(sx, sy, sz)``.
        centre_mm: patient point (mm) at the centre of the grid.
        unit_mm: millimetres per anatomy unit (1 for anatomy written in mm).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    unit_mm: float = 1.0

    @cached_property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1D patient coordinates ``(u, v, w)`` (anatomy units) of the voxel centres along x, y and z (float32)."""
        out = []
        for n, s, c in zip(self.shape, self.spacing, self.centre_mm, strict=True):
            mm = c + (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * s
            out.append((mm / self.unit_mm).astype(np.float32))
        return out[0], out[1], out[2]

    @property
    def lower(self) -> np.ndarray:
        """Lower corner of the sampled region (outer voxel faces), anatomy units."""
        return self.to_units(np.full(3, -0.5))

    @property
    def upper(self) -> np.ndarray:
        """Upper corner of the sampled region (outer voxel faces), anatomy units."""
        return self.to_units(np.asarray(self.shape, dtype=np.float64) - 0.5)

    @property
    def voxel_units(self) -> np.ndarray:
        """Voxel size in anatomy units, per axis."""
        return np.asarray(self.spacing, dtype=np.float64) / self.unit_mm

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(np.prod(self.spacing)) / 1000.0

    def affine(self) -> np.ndarray:
        """RAS voxel-to-world affine (mm); world coordinates are the patient coordinates in mm."""
        aff = np.eye(4)
        for i, (n, s, c) in enumerate(zip(self.shape, self.spacing, self.centre_mm, strict=True)):
            aff[i, i] = s
            aff[i, 3] = c - (n - 1) / 2.0 * s
        return aff

    def to_index(self, point: Sequence[float]) -> np.ndarray:
        """Continuous voxel index of a point given in anatomy units."""
        p = np.asarray(point, dtype=np.float64) * self.unit_mm - np.asarray(self.centre_mm)
        return p / np.asarray(self.spacing) + (np.asarray(self.shape) - 1) / 2.0

    def to_units(self, index: Sequence[float]) -> np.ndarray:
        """Anatomy coordinates of a (continuous) voxel index."""
        i = np.asarray(index, dtype=np.float64)
        mm = (i - (np.asarray(self.shape) - 1) / 2.0) * np.asarray(self.spacing) + np.asarray(self.centre_mm)
        return mm / self.unit_mm

    def box(self, centre: Sequence[float], half: Sequence[float] | float) -> Slices | None:
        """Voxel slices covering an axis-aligned box given in anatomy units; ``None`` if it misses the volume."""
        c = np.asarray(centre, dtype=np.float64)
        h = np.broadcast_to(np.asarray(half, dtype=np.float64), (3,))
        lo = np.floor(self.to_index(c - h)).astype(int)
        hi = np.ceil(self.to_index(c + h)).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def grids(self, sl: Slices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable open grids ``(U, V, W)`` of the patient coordinates inside ``sl``."""
        u, v, w = self.axes
        return u[sl[0], None, None], v[None, sl[1], None], w[None, None, sl[2]]


@dataclass(frozen=True)
class SmoothField:
    """A smooth random scalar field: a sum of a few random plane waves (random Fourier features).

    Defined in anatomy units, so it is independent of the voxel grid (same seed, same shape at any resolution).
    Used to make organ outlines irregular and to draw bowel loops.

    Args:
        k: wave vectors, shape ``(n, 3)``.
        phase: phases, shape ``(n,)``.
        amplitude: amplitude of each wave, shape ``(n,)``.
    """

    k: np.ndarray
    phase: np.ndarray
    amplitude: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, wavelength: float, amplitude: float) -> SmoothField:
        """Draw ``n`` waves with random directions and wavelengths around ``wavelength`` (anatomy units).

        The amplitudes are scaled so that the field's standard deviation is about ``amplitude``.
        """
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        lam = wavelength * rng.uniform(0.7, 1.4, size=n)
        k = direction * (2 * np.pi / lam)[:, None]
        phase = rng.uniform(0, 2 * np.pi, size=n)
        amp = np.full(n, amplitude * np.sqrt(2.0 / n))
        return cls(k.astype(np.float32), phase.astype(np.float32), amp.astype(np.float32))

    def scaled(self, s: float) -> SmoothField:
        """The same field stretched by ``s`` in space (wavelengths times ``s``), for self-similar organ scaling."""
        return SmoothField((self.k / np.float32(s)).astype(np.float32), self.phase, self.amplitude)

    def __call__(self, U: np.ndarray, V: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Evaluate on broadcastable grids (float32).

        On open grids (``U`` of shape ``(nu, 1, 1)``, ``V`` ``(1, nv, 1)``, ``W`` ``(1, 1, nw)``, what
        :meth:`BodyFrame.grids` returns) the sum ``sum_n a_n sin(k_n.p + phase_n)`` is the imaginary part of
        ``sum_n A_n(u, v) E_n(w)`` with ``A_n = a_n exp(i (k_x u + k_y v + phase))`` and ``E_n = exp(i k_z w)``: one
        real matrix product of shape ``(nu nv, 2n) x (2n, nw)`` (BLAS) instead of ``n`` passes over the volume.
        Other grids fall back to the per-wave product of three 1D complex exponentials.
        """
        shape = np.broadcast_shapes(U.shape, V.shape, W.shape)
        if U.shape == (shape[0], 1, 1) and V.shape == (1, shape[1], 1) and W.shape == (1, 1, shape[2]):
            k = self.k.astype(np.float64)
            a_uv = (self.amplitude * np.exp(1j * self.phase))[:, None, None] * (
                np.exp(1j * np.outer(k[:, 0], U.ravel()))[:, :, None]
                * np.exp(1j * np.outer(k[:, 1], V.ravel()))[:, None, :]
            )
            e_w = np.exp(1j * np.outer(k[:, 2], W.ravel()))
            left = np.concatenate([a_uv.real, a_uv.imag]).reshape(2 * len(k), -1).astype(np.float32)
            right = np.concatenate([e_w.imag, e_w.real]).astype(np.float32)
            return np.ascontiguousarray((left.T @ right).reshape(shape))
        acc = None
        for (kx, ky, kz), ph, a in zip(self.k, self.phase, self.amplitude, strict=True):
            eu = np.complex64(a * np.exp(1j * ph)) * np.exp(1j * kx * U).astype(np.complex64)
            ev = np.exp(1j * ky * V).astype(np.complex64)
            ew = np.exp(1j * kz * W).astype(np.complex64)
            term = (eu * ev) * ew
            if acc is None:
                acc = term
            else:
                acc += term
        out = np.broadcast_to(acc.imag, shape)
        return np.ascontiguousarray(out, dtype=np.float32)

    @property
    def bound(self) -> float:
        """Largest absolute value the field can take (sum of the amplitudes)."""
        return float(np.abs(self.amplitude).sum())


def rotation(angles: Sequence[float]) -> np.ndarray:
    """Rotation matrix from angles (radians) about x, then y, then z."""
    ax, ay, az = angles
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid(
    frame: BodyFrame,
    centre: Sequence[float],
    radii: Sequence[float],
    rot: np.ndarray | None = None,
    wobble: SmoothField | None = None,
    level: float | None = None,
) -> tuple[Slices, np.ndarray] | None:
    """Normalised field of a (rotated) ellipsoid: ``sum (q_i / r_i)^2`` plus the optional wobble (``<= 1`` inside).

    The field is evaluated in the smallest axis-aligned box that holds the level set ``field <= level``: the
    rotated ellipsoid's bounding box scaled by ``sqrt(level + |wobble|_max)``. On the open grids of the box the
    quadratic form ``d^T M d`` (``M = R diag(r^-2) R^T``) is a 2D part in ``(u, v)``, a 2D coefficient times ``w``
    and a 1D part in ``w``, so only two passes over the box are needed.

    Args:
        frame: the body frame.
        centre: centre in anatomy units.
        radii: semi-axes in anatomy units (in the rotated frame).
        rot: optional 3x3 rotation whose columns are the ellipsoid's axes in body coordinates.
        wobble: optional smooth field added to the normalised field (irregular outline).
        level: largest field level the box must hold (default 1: the surface); a caller that thresholds the
            field above 1, or adds its own wobble afterwards, passes that level.

    Returns:
        ``(slices, field)`` or ``None`` when the shape misses the volume.
    """
    c = np.asarray(centre, dtype=np.float64)
    r = np.asarray(radii, dtype=np.float64)
    R = np.eye(3) if rot is None else np.asarray(rot, dtype=np.float64)
    top = (1.0 if level is None else float(level)) + (wobble.bound if wobble is not None else 0.0)
    half = np.sqrt(((R * r[None, :]) ** 2).sum(axis=1)) * np.sqrt(max(top, 1e-6))
    sl = frame.box(c, half)
    if sl is None:
        return None
    U, V, W = frame.grids(sl)
    du, dv, dw = (U - np.float32(c[0]))[:, 0, 0], (V - np.float32(c[1]))[0, :, 0], (W - np.float32(c[2]))[0, 0, :]
    M = (R / r[None, :] ** 2) @ R.T
    plane = M[0, 0] * du[:, None] ** 2 + 2.0 * M[0, 1] * du[:, None] * dv[None, :] + M[1, 1] * dv[None, :] ** 2
    slope = 2.0 * (M[0, 2] * du[:, None] + M[1, 2] * dv[None, :])
    f = np.empty((len(du), len(dv), len(dw)), dtype=np.float32)
    np.multiply(slope.astype(np.float32)[:, :, None], dw[None, None, :], out=f)
    f += plane.astype(np.float32)[:, :, None]
    f += (M[2, 2] * dw.astype(np.float64) ** 2).astype(np.float32)[None, None, :]
    if wobble is not None:
        f += wobble(U - np.float32(c[0]), V - np.float32(c[1]), W - np.float32(c[2]))
    return sl, f


def tube(
    frame: BodyFrame,
    points: np.ndarray,
    radii: np.ndarray,
    wobble: SmoothField | None = None,
    stretch: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[Slices, np.ndarray] | None:
    """Normalised field of a tube along a polyline with linearly varying radius (a chain of tapered capsules).

    The field is ``min over segments of distance / local radius`` (``<= 1`` inside), so it also measures depth.

    Args:
        frame: the body frame.
        points: polyline vertices, shape ``(n, 3)``, anatomy units.
        radii: radius at each vertex, shape ``(n,)``.
        wobble: optional smooth field added to the result.
        stretch: per-axis factors of the cross-section (the tube is round in coordinates divided by ``stretch``;
            ``(1, 1, 1.5)`` gives a section 1.5 times taller than deep, as the pancreas).

    Returns:
        ``(slices, field)`` over the tube's bounding box, or ``None`` when it misses the volume.
    """
    p = np.asarray(points, dtype=np.float32)
    rad = np.asarray(radii, dtype=np.float32)
    st = np.asarray(stretch, dtype=np.float32)
    lo = p.min(0) - rad.max() * st
    hi = p.max(0) + rad.max() * st
    sl = frame.box((lo + hi) / 2, (hi - lo) / 2)
    if sl is None:
        return None
    field = np.full(tuple(s.stop - s.start for s in sl), np.inf, dtype=np.float32)
    for a, b, ra, rb in zip(p[:-1], p[1:], rad[:-1], rad[1:], strict=True):
        seg = capsule(frame, a, b, ra, rb, st)
        if seg is None:
            continue
        ssl, f = seg
        # the segment's box is inside the tube's box (same rounding of a smaller box); clip defensively anyway
        a0 = [max(s.start, o.start) for s, o in zip(ssl, sl, strict=True)]
        a1 = [min(s.stop, o.stop) for s, o in zip(ssl, sl, strict=True)]
        if any(x >= y for x, y in zip(a0, a1, strict=True)):
            continue
        dst = tuple(slice(x - o.start, y - o.start) for x, y, o in zip(a0, a1, sl, strict=True))
        src = tuple(slice(x - s.start, y - s.start) for x, y, s in zip(a0, a1, ssl, strict=True))
        np.minimum(field[dst], f[src], out=field[dst])
    if wobble is not None:
        U, V, W = frame.grids(sl)
        field += wobble(U, V, W)
    return sl, field


def capsule(
    frame: BodyFrame, a: np.ndarray, b: np.ndarray, ra: float, rb: float, stretch: np.ndarray
) -> tuple[Slices, np.ndarray] | None:
    """Distance-over-radius field of one tapered capsule from ``a`` to ``b`` (in coordinates divided by stretch)."""
    rmax = max(ra, rb)
    lo = np.minimum(a, b) - rmax * stretch
    hi = np.maximum(a, b) + rmax * stretch
    sl = frame.box((lo + hi) / 2, (hi - lo) / 2)
    if sl is None:
        return None
    U, V, W = frame.grids(sl)
    if np.any(stretch != 1.0):
        U, V, W = U / stretch[0], V / stretch[1], W / stretch[2]
        a, b = a / stretch, b / stretch
    ab = b - a
    L2 = float(ab @ ab) + 1e-12
    du, dv, dw = U - a[0], V - a[1], W - a[2]
    t = np.clip((du * ab[0] + dv * ab[1] + dw * ab[2]) / L2, 0.0, 1.0)
    d2 = (du - t * ab[0]) ** 2 + (dv - t * ab[1]) ** 2 + (dw - t * ab[2]) ** 2
    r = ra + t * (rb - ra)
    return sl, (np.sqrt(d2) / np.maximum(r, 1e-6)).astype(np.float32)


def paint(
    tissue: np.ndarray,
    shape: tuple[Slices, np.ndarray] | None,
    value: int,
    where: np.ndarray | None = None,
    threshold: float = 1.0,
) -> np.ndarray | None:
    """Write ``value`` into ``tissue`` where the shape's field is ``<= threshold`` (and ``where`` allows).

    Args:
        tissue: the tissue map being composed (modified in place).
        shape: ``(slices, field)`` from a primitive, or ``None`` (nothing painted).
        value: tissue id to write.
        where: optional boolean mask over the same slices restricting the write (for example "inside the cavity").
        threshold: level of the implicit field that is the surface.

    Returns:
        The painted boolean mask over the shape's slices, or ``None``.
    """
    if shape is None:
        return None
    sl, f = shape
    m = f <= threshold
    if where is not None:
        m &= where[sl] if where.shape == tissue.shape else where
    tissue[sl][m] = value
    return m


def smooth_curve(control: np.ndarray, n: int) -> np.ndarray:
    """Sample a smooth curve through control points (Catmull-Rom spline), ``n`` points in all."""
    c = np.asarray(control, dtype=np.float64)
    ext = np.vstack([2 * c[0] - c[1], c, 2 * c[-1] - c[-2]])
    t = np.linspace(0, len(c) - 1, n)
    i = np.minimum(t.astype(int), len(c) - 2)
    s = (t - i)[:, None]
    p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
    return 0.5 * (
        2 * p1 + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * s**3
    )
