"""Analytic pelvic anatomy for the synthetic test phantoms (:mod:`ProstateKDLib.phantom`).

The anatomy lives in an *anatomy frame* in millimetres whose origin is the gland
centre (x: patient left, y: posterior, z: superior, as LPS). Every shape is a
closed-form function of a point in that frame, evaluated at each voxel's
physical position, so image and label agree under any oblique direction.
Shapes are evaluated only inside their index-space bounding boxes, which keeps a
full-size case cheap. The shapes are plausible, not anatomically accurate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

Box = tuple[slice, slice, slice]  # (z, y, x) slices of a numpy array


class Tissue(IntEnum):
    """Tissue classes of the phantom's tissue map."""

    AIR = 0
    MUSCLE = 1
    FAT = 2
    URINE = 3
    BLADDER_WALL = 4
    RECTAL_WALL = 5
    RECTAL_CONTENT = 6
    CORTICAL_BONE = 7
    MARROW = 8
    CENTRAL_ZONE = 9
    PERIPHERAL_ZONE = 10
    COIL = 11  # endorectal coil / balloon: signal void


# Unit-sphere terms of the gland's radial deformation (all have zero mean).
_DEFORM_TERMS = 8


@dataclass(frozen=True)
class Anatomy:
    """Random anatomy of one case, in the anatomy frame (mm)."""

    gland_axes: tuple[float, float, float, float]  # (left-right, anterior, posterior, sup-inf) half axes
    taper: float  # base (superior) wider than apex
    deform: tuple[float, ...]  # radial deformation coefficients
    fat_margin: float  # periprostatic fat shell, mm
    cz_centre: tuple[float, float, float]
    cz_axes: tuple[float, float, float]
    bladder_centre: tuple[float, float, float]
    bladder_axes: tuple[float, float, float]
    bladder_wall: float
    rectum_gap: float  # gland to rectal wall, mm
    rectum_axes: tuple[float, float]  # x, y radii, mm
    rectum_slope: tuple[float, float]  # dx/dz, dy/dz
    rectum_x: float
    rectal_wall: float
    body: tuple[float, float, float, float]  # (half width, anterior skin y, posterior skin y, fat thickness)
    femoral_heads: tuple[tuple[float, float, float, float], ...]  # (x, y, z, radius)
    fossae: tuple[tuple[float, ...], ...]  # ischioanal fat ellipsoids (x, y, z, ax, ay, az)
    tilt: tuple[float, ...]  # 3x3 rotation, gland frame -> patient, row major
    pz_signal: float  # per-case peripheral-zone signal change
    textures: tuple[tuple[float, ...], ...]  # plane waves (kx, ky, kz, phase), rad/mm

    def gland_bounds(self, fat: bool = False) -> tuple[float, float, float]:
        """Half axes (mm) of an ellipsoid, centred at the origin, that contains the gland.

        With ``fat=True`` it also contains the periprostatic fat shell.
        """
        a, b_ant, b_post, c = self.gland_axes
        grow = 1.0 + float(np.abs(self.deform).sum())
        if fat:
            grow += self.fat_margin / min(a, b_ant, b_post, c)
        return (a * (1.0 + self.taper) * grow, max(b_ant, b_post) * grow, c * grow)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one case's anatomy (gland 20-60 ml for most cases)."""
    volume_ml = float(np.clip(rng.lognormal(math.log(36.0), 0.3), 14.0, 80.0))
    ratio_b = rng.uniform(0.58, 0.8)  # antero-posterior / left-right
    ratio_c = rng.uniform(0.72, 1.0)  # superior-inferior / left-right
    flatten = rng.uniform(0.75, 0.95)  # posterior half is flatter
    a = (volume_ml * 1000.0 / (4.0 / 3.0 * math.pi * ratio_b * ratio_c * (1.0 + flatten) / 2.0)) ** (1 / 3)
    b = a * ratio_b
    c = a * ratio_c
    deform = tuple(float(v) for v in rng.uniform(-0.05, 0.05, _DEFORM_TERMS))
    tz = float(np.clip(0.3 + 0.35 * (volume_ml - 20.0) / 45.0 + rng.normal(0.0, 0.04), 0.25, 0.65))
    k = tz ** (1 / 3)
    cz_axes = (a * k * 1.05, b * k * 0.9, c * k)
    cz_centre = (rng.normal(0.0, 1.0), -(b - cz_axes[1]) * rng.uniform(0.8, 1.1), c * (1.0 - k) * 0.6)
    bladder_axes = (rng.uniform(28, 50), rng.uniform(20, 38), rng.uniform(18, 36))
    bladder_centre = (
        rng.normal(0.0, 4.0),
        -0.35 * b - rng.uniform(0.0, 8.0),
        0.8 * c + 0.7 * bladder_axes[2],
    )
    heads = []
    for side in (-1.0, 1.0):
        heads.append((side * (a + rng.uniform(48, 62)), rng.uniform(-5, 10), rng.uniform(-5, 15), rng.uniform(22, 27)))
    fossae = []  # ischioanal fat, lateral to the rectum
    for side in (-1.0, 1.0):
        axes = (rng.uniform(12, 20), rng.uniform(18, 28), rng.uniform(25, 40))
        fossae.append((side * rng.uniform(28, 38), b + rng.uniform(15, 30), -rng.uniform(10, 25), *axes))
    ant_skin = -(b + rng.uniform(45, 75))
    body = (rng.uniform(150, 190), ant_skin, rng.uniform(110, 150), rng.uniform(8, 30))
    tilt = _rotation(rng.uniform(-15, 15), 0) @ _rotation(rng.uniform(-5, 5), 2)
    textures = []
    for _ in range(6):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        wave = direction * 2.0 * math.pi / rng.uniform(6.0, 20.0)
        textures.append((*wave.tolist(), rng.uniform(0, 2 * math.pi)))
    return Anatomy(
        gland_axes=(a, b, b * flatten, c),
        taper=float(rng.uniform(0.0, 0.2)),
        deform=deform,
        fat_margin=float(rng.uniform(1.5, 4.0)),
        cz_centre=tuple(float(v) for v in cz_centre),
        cz_axes=cz_axes,
        bladder_centre=tuple(float(v) for v in bladder_centre),
        bladder_axes=tuple(float(v) for v in bladder_axes),
        bladder_wall=float(rng.uniform(2.0, 4.0)),
        rectum_gap=float(rng.uniform(1.0, 4.0)),
        rectum_axes=(float(rng.uniform(13, 20)), float(rng.uniform(10, 16))),
        rectum_slope=(float(rng.normal(0, 0.08)), float(rng.uniform(0.05, 0.35))),
        rectum_x=float(rng.normal(0.0, 3.0)),
        rectal_wall=float(rng.uniform(2.5, 4.5)),
        body=tuple(float(v) for v in body),
        femoral_heads=tuple(tuple(float(v) for v in h) for h in heads),
        fossae=tuple(tuple(float(v) for v in f) for f in fossae),
        tilt=tuple(tilt.ravel().tolist()),
        pz_signal=float(rng.normal(0.0, 0.04)),
        textures=tuple(textures),
    )


def _rotation(degrees: float, axis: int) -> np.ndarray:
    """Rotation matrix about a coordinate axis."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i] = r[j, j] = c
    r[i, j], r[j, i] = -s, s
    return r


class Grid:
    """Voxel index (i, j, k) -> anatomy-frame coordinates, as broadcast sums of 1D arrays."""

    def __init__(self, size, spacing, origin, direction, centre, tilt) -> None:
        self.size = tuple(int(n) for n in size)  # (x, y, z)
        rot = np.asarray(tilt, dtype=np.float64).reshape(3, 3)
        d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
        self.matrix = rot.T @ d @ np.diag(spacing)  # anatomy = matrix @ index + offset
        self.offset = rot.T @ (np.asarray(origin, dtype=np.float64) - np.asarray(centre, dtype=np.float64))
        self.inverse = np.linalg.inv(self.matrix)
        self.shape = self.size[::-1]

    def full(self) -> Box:
        """The whole volume."""
        return (slice(0, self.shape[0]), slice(0, self.shape[1]), slice(0, self.shape[2]))

    def box(self, centre, half) -> Box | None:
        """Index box containing the anatomy-frame box ``centre +- half`` (None if outside)."""
        c = self.inverse @ (np.asarray(centre, dtype=np.float64) - self.offset)
        h = np.abs(self.inverse) @ np.asarray(half, dtype=np.float64)
        lo = np.maximum(np.floor(c - h).astype(int), 0)
        hi = np.minimum(np.ceil(c + h).astype(int) + 1, self.size)
        if np.any(hi <= lo):
            return None
        return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))

    def linear(self, box: Box, weights, bias: float = 0.0) -> np.ndarray:
        """``weights . q + bias`` for the anatomy-frame points q of ``box`` (float32, z-y-x)."""
        w = self.matrix.T @ np.asarray(weights, dtype=np.float64)
        const = float(np.dot(weights, self.offset) + bias)
        k, j, i = (np.arange(s.start, s.stop, dtype=np.float64) for s in box)
        plane = (w[0] * i)[None, :] + (w[1] * j)[:, None]
        return plane.astype(np.float32)[None] + (w[2] * k + const).astype(np.float32)[:, None, None]

    def axis(self, box: Box, m: int, centre: float = 0.0, scale: float = 1.0) -> np.ndarray:
        """``(q[m] - centre) * scale`` over ``box``."""
        w = np.zeros(3)
        w[m] = scale
        return self.linear(box, w, -centre * scale)

    def points(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        """Anatomy-frame points (n, 3) of voxels given as numpy (z, y, x) index arrays."""
        ijk = np.stack([index[2], index[1], index[0]], axis=1).astype(np.float64)
        return ijk @ self.matrix.T + self.offset


def _ellipsoid(grid: Grid, box: Box, centre, axes) -> np.ndarray:
    """Normalised squared radius of an axis-aligned ellipsoid over ``box``."""
    r2 = grid.axis(box, 0, centre[0], 1 / axes[0]) ** 2
    r2 += grid.axis(box, 1, centre[1], 1 / axes[1]) ** 2
    r2 += grid.axis(box, 2, centre[2], 1 / axes[2]) ** 2
    return r2


def _paint(tissue: np.ndarray, box: Box | None, mask: np.ndarray, value: Tissue) -> None:
    if box is not None:
        np.copyto(tissue[box], np.uint8(value), where=mask)


def _gland_radius(anat: Anatomy, grid: Grid, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius r and deformed surface radius 1 + delta(direction) over ``box``."""
    a, b_ant, b_post, c = anat.gland_axes
    z = grid.axis(box, 2, 0.0, 1 / c)
    x = grid.axis(box, 0) / (a * (1.0 + anat.taper * np.clip(z, -1.0, 1.0)))
    y = grid.axis(box, 1)
    y *= np.where(y > 0, np.float32(1 / b_post), np.float32(1 / b_ant))
    r = np.sqrt(x * x + y * y + z * z) + np.float32(1e-6)
    u, v, w = x / r, y / r, z / r
    terms = (u, v, w, u * v, v * w, u * w, u * u - v * v, u * v * w)
    surface = np.ones_like(r)
    for coef, term in zip(anat.deform, terms):
        surface += np.float32(coef) * term
    return r, surface


def rasterize(anat: Anatomy, grid: Grid, endorectal_coil: bool = False) -> np.ndarray:
    """Tissue map (uint8 :class:`Tissue`, numpy z-y-x order) of ``anat`` on ``grid``."""
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    full = grid.full()
    half_width, ant, post, fat = anat.body
    centre_y, half_ap = (ant + post) / 2, (post - ant) / 2
    x2 = grid.axis(full, 0) ** 2
    y2 = grid.axis(full, 1, centre_y) ** 2
    _paint(tissue, full, x2 / half_width**2 + y2 / half_ap**2 <= 1, Tissue.FAT)
    _paint(tissue, full, x2 / (half_width - fat) ** 2 + y2 / (half_ap - fat) ** 2 <= 1, Tissue.MUSCLE)
    del x2, y2

    for x, y, z, radius in anat.femoral_heads:
        box = grid.box((x, y, z), (radius,) * 3)
        if box is not None:
            r2 = _ellipsoid(grid, box, (x, y, z), (radius,) * 3)
            _paint(tissue, box, r2 <= 1, Tissue.CORTICAL_BONE)
            _paint(tissue, box, r2 <= (1 - 3.0 / radius) ** 2, Tissue.MARROW)

    for fossa in anat.fossae:
        box = grid.box(fossa[:3], fossa[3:])
        if box is not None:
            _paint(tissue, box, _ellipsoid(grid, box, fossa[:3], fossa[3:]) <= 1, Tissue.FAT)

    gbox = grid.box((0.0, 0.0, 0.0), anat.gland_bounds(fat=True))
    if gbox is not None:
        r, surface = _gland_radius(anat, grid, gbox)
        _paint(tissue, gbox, r <= surface + anat.fat_margin / min(anat.gland_axes), Tissue.FAT)

    # Rectum: an elliptic tube along z (slightly oblique) behind the gland.
    rx, ry = anat.rectum_axes
    if endorectal_coil:
        rx, ry = rx * 1.3, ry * 1.3
    y0 = anat.gland_axes[2] + anat.rectum_gap + ry
    sx, sy = anat.rectum_slope
    rbox = grid.box((anat.rectum_x, y0, 0.0), (rx + 8 + 60 * abs(sx), ry + 8 + 60 * sy, 60.0))
    if rbox is not None:
        dx = grid.linear(rbox, (1.0 / rx, 0.0, -sx / rx), -anat.rectum_x / rx)
        dy = grid.linear(rbox, (0.0, 1.0 / ry, -sy / ry), -y0 / ry)
        rho = np.sqrt(dx * dx + dy * dy)
        del dx, dy
        _paint(tissue, rbox, rho <= 1 + 6.0 / ry, Tissue.FAT)  # mesorectal fat
        _paint(tissue, rbox, rho <= 1, Tissue.RECTAL_WALL)
        _paint(tissue, rbox, rho <= 1 - anat.rectal_wall / min(rx, ry), Tissue.RECTAL_CONTENT)
        if endorectal_coil:
            z = np.abs(grid.axis(rbox, 2))
            _paint(tissue, rbox, (rho <= 1 - anat.rectal_wall / min(rx, ry)) & (z <= 30), Tissue.COIL)

    bc, ba, wall = anat.bladder_centre, anat.bladder_axes, anat.bladder_wall
    bbox = grid.box(bc, tuple(v + wall for v in ba))
    if bbox is not None:
        _paint(tissue, bbox, _ellipsoid(grid, bbox, bc, tuple(v + wall for v in ba)) <= 1, Tissue.BLADDER_WALL)
        _paint(tissue, bbox, _ellipsoid(grid, bbox, bc, ba) <= 1, Tissue.URINE)

    if gbox is not None:
        gland = r <= surface
        _paint(tissue, gbox, gland, Tissue.PERIPHERAL_ZONE)
        _paint(tissue, gbox, gland & (_ellipsoid(grid, gbox, anat.cz_centre, anat.cz_axes) <= 1), Tissue.CENTRAL_ZONE)
    return tissue


def texture(anat: Anatomy, grid: Grid, index: tuple[np.ndarray, ...], waves: slice) -> np.ndarray:
    """Smooth zero-mean, unit-variance texture at the given voxels (random plane waves)."""
    if index[0].size == 0:
        return np.zeros(0, dtype=np.float32)
    q = grid.points(index)
    chosen = anat.textures[waves]
    out = np.zeros(len(q))
    for kx, ky, kz, phase in chosen:
        out += np.cos(q @ np.array([kx, ky, kz]) + phase)
    return (out / math.sqrt(len(chosen) / 2)).astype(np.float32)
