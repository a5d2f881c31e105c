"""Synthetic T2-like prostate MRI phantoms for tests and demos.

These are *test phantoms*, not anatomy-accurate images: an ellipsoidal gland
(darker central/transition zone, brighter peripheral zone) with bladder, rectum,
fat, muscle and bone neighbours (:mod:`ProstateKDLib.phantom_anatomy`), a smooth
multiplicative bias field, Rician noise, anisotropic spacing and a random
oblique direction. Six :data:`SITES` named after the public multi-site prostate
data set differ in resolution, contrast, noise, bias and raw intensity scale.
Never use them to claim segmentation accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import OutputError
from .phantom_anatomy import Anatomy, Grid, Tissue, rasterize, sample_anatomy, texture

MIN_SIZE = 8  # voxels per axis


def _check_size(size: Any) -> tuple[int, int, int]:
    try:
        values = tuple(operator.index(v) for v in size)
    except TypeError:
        values = ()
    if len(values) != 3 or min(values) < MIN_SIZE:
        raise ValueError(f"size must be three integers >= {MIN_SIZE} (x, y, z voxels), got {size!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class SiteProfile:
    """Scanner/protocol of one site (intensities relative to urine = 1 before scaling)."""

    name: str
    spacing_xy: float  # in-plane spacing, mm
    slice_thickness: float  # mm (slice spacing, no gap)
    matrix: tuple[int, int, int]  # default size (x, y, z)
    gland_contrast: float  # multiplies the gland's signal difference to muscle
    noise: float  # Rician sigma relative to urine signal
    bias: float  # log amplitude of the smooth bias field
    scale: float  # raw value of urine
    offset: float  # raw value added everywhere
    erc_gain: float = 0.0  # endorectal coil near-field gain (0: surface coil only)
    field_strength: float = 3.0  # tesla (descriptive)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"SiteProfile name must be a non-empty string, got {self.name!r}")
        for key in ("spacing_xy", "slice_thickness", "gland_contrast", "scale"):
            if not getattr(self, key) > 0:
                raise ValueError(f"SiteProfile {self.name!r}: {key} must be positive")
        for key in ("noise", "bias", "offset", "erc_gain"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"SiteProfile {self.name!r}: {key} must be >= 0")
        _check_size(self.matrix)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Default spacing (x, y, z) in mm."""
        return (self.spacing_xy, self.spacing_xy, self.slice_thickness)

    @property
    def field_of_view(self) -> tuple[float, float, float]:
        """Field of view (x, y, z) in mm, kept when ``size`` is changed."""
        return tuple(n * s for n, s in zip(self.matrix, self.spacing))


SITES: dict[str, SiteProfile] = {
    p.name: p
    for p in (
        SiteProfile("RUNMC", 0.6, 3.6, (320, 320, 24), 1.0, 0.030, 0.25, 800.0, 0.0, 0.0, 3.0),
        SiteProfile("BMC", 0.5, 3.0, (384, 384, 28), 0.85, 0.045, 0.30, 1500.0, 0.0, 1.6, 1.5),
        SiteProfile("HCRUDB", 0.75, 3.0, (256, 256, 30), 1.1, 0.035, 0.20, 350.0, 20.0, 0.0, 3.0),
        SiteProfile("UCL", 0.55, 3.5, (352, 352, 24), 0.95, 0.040, 0.30, 1000.0, 50.0, 0.0, 1.5),
        SiteProfile("BIDMC", 0.5, 3.2, (384, 384, 26), 1.15, 0.025, 0.35, 2500.0, 0.0, 2.5, 3.0),
        SiteProfile("HK", 0.7, 4.0, (256, 256, 20), 0.9, 0.060, 0.30, 600.0, 10.0, 1.4, 1.5),
    )
}

# T2-like signal of each tissue relative to urine (fluid) = 1.
_SIGNAL = {
    Tissue.AIR: 0.0, Tissue.MUSCLE: 0.22, Tissue.FAT: 0.85, Tissue.URINE: 1.0,
    Tissue.BLADDER_WALL: 0.2, Tissue.RECTAL_WALL: 0.18, Tissue.RECTAL_CONTENT: 0.3,
    Tissue.CORTICAL_BONE: 0.03, Tissue.MARROW: 0.55, Tissue.CENTRAL_ZONE: 0.38,
    Tissue.PERIPHERAL_ZONE: 0.68, Tissue.COIL: 0.02,
}


@dataclass(frozen=True, eq=False)
class Phantom:
    """One generated case: SimpleITK image (int16) and label (uint8), plus the ground truth."""

    image: sitk.Image
    label: sitk.Image
    tissue: np.ndarray  # Tissue map, numpy (z, y, x)
    site: SiteProfile
    seed: int
    anatomy: Anatomy

    @property
    def gland_volume_ml(self) -> float:
        """Gland volume of the label in millilitres."""
        return gland_volume_ml(self.label)


def get_site(site: str | SiteProfile) -> SiteProfile:
    """The :class:`SiteProfile` named ``site`` (ValueError lists the known sites)."""
    if isinstance(site, SiteProfile):
        return site
    if isinstance(site, str) and site in SITES:
        return SITES[site]
    raise ValueError(f"unknown site {site!r} (known sites: {', '.join(SITES)})")


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Rotation by 3-20 degrees about a random axis (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(3.0, 20.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _place(anat: Anatomy, rng: np.random.Generator, size, spacing, direction: np.ndarray):
    """Gland centre offset (image axes, mm) and a scale that keep the gland off the border."""
    tilt = np.asarray(anat.tilt).reshape(3, 3)
    bounds = np.asarray(anat.gland_bounds())
    extent = np.sqrt((((tilt.T @ direction) * bounds[:, None]) ** 2).sum(axis=0))  # per image axis
    room = (np.asarray(size) - 1) / 2 * spacing - spacing - 2.0
    shrink = min(1.0, float(np.min(room / extent)))
    if shrink < 0.5:
        raise ValueError(f"field of view too small for a gland phantom at size {tuple(size)}")
    free = np.maximum(room - extent * shrink, 0.0)
    shift = rng.uniform(-1, 1, 3) * np.minimum(free, (8.0, 8.0, 4.0))
    return shift, shrink


def _shrunk(anat: Anatomy, f: float) -> Anatomy:
    if f >= 1.0:
        return anat
    return dataclasses.replace(
        anat,
        gland_axes=tuple(v * f for v in anat.gland_axes),
        cz_axes=tuple(v * f for v in anat.cz_axes),
        cz_centre=tuple(v * f for v in anat.cz_centre),
    )


def _bias_field(rng: np.random.Generator, shape, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Smooth log-polynomial bias as an in-plane (y, x) factor and a (z,) factor."""
    nz, ny, nx = shape
    v, u = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    w = np.linspace(-1, 1, nz)
    c = rng.normal(size=7)
    plane = c[0] * u + c[1] * v + c[2] * u * u + c[3] * v * v + c[4] * u * v
    line = c[5] * w + c[6] * w * w
    span = (np.ptp(plane) + np.ptp(line)) / 2 or 1.0
    plane = strength * (plane - plane[ny // 2, nx // 2]) / span
    line = strength * (line - line[nz // 2]) / span
    return np.exp(plane).astype(np.float32), np.exp(line).astype(np.float32)


def make_phantom_case(
    seed: int, site: str | SiteProfile = "RUNMC", size: Sequence[int] | None = None, zones: bool = False
) -> Phantom:
    """Like :func:`make_phantom`, also returning the tissue map and anatomy parameters."""
    seed = _check_seed(seed)
    profile = get_site(site)
    size = profile.matrix if size is None else _check_size(size)
    spacing = np.asarray(profile.field_of_view) / np.asarray(size)
    anat = sample_anatomy(np.random.default_rng([seed, 0]))  # same anatomy at every site
    rng = np.random.default_rng([seed, 1, zlib.crc32(profile.name.encode())])

    direction = _random_rotation(rng)
    centre = rng.uniform(-40.0, 40.0, 3)  # physical centre of the image
    shift, shrink = _place(anat, rng, size, spacing, direction)
    anat = _shrunk(anat, shrink)
    origin = centre - direction @ (spacing * (np.asarray(size) - 1) / 2)
    grid = Grid(size, spacing, origin, direction, centre + direction @ shift, anat.tilt)
    tissue = rasterize(anat, grid, endorectal_coil=profile.erc_gain > 0)

    lut = np.zeros(len(Tissue), dtype=np.float32)
    for t, value in _SIGNAL.items():
        lut[t] = value
    muscle = lut[Tissue.MUSCLE]
    for zone, extra in ((Tissue.CENTRAL_ZONE, 0.0), (Tissue.PERIPHERAL_ZONE, anat.pz_signal)):
        lut[zone] = muscle + profile.gland_contrast * (lut[zone] + extra - muscle)
    signal = np.take(lut, tissue)
    for kind, waves, amplitude in (
        (Tissue.CENTRAL_ZONE, slice(0, 3), 0.07),
        (Tissue.PERIPHERAL_ZONE, slice(1, 4), 0.04),
        (Tissue.RECTAL_CONTENT, slice(3, 6), 0.25),
    ):
        index = np.nonzero(tissue == kind)
        signal[index] *= 1.0 + amplitude * texture(anat, grid, index, waves)

    plane, line = _bias_field(rng, tissue.shape, profile.bias * rng.uniform(0.7, 1.3))
    signal *= plane[None]
    signal *= line[:, None, None]
    if profile.erc_gain > 0:  # near field of the endorectal coil, along the rectal axis
        y0 = anat.gland_axes[2] + anat.rectum_gap + anat.rectum_axes[1] * 1.3
        sx, sy = anat.rectum_slope
        box = grid.full()
        d2 = grid.linear(box, (1.0, 0.0, -sx), -anat.rectum_x) ** 2
        d2 += grid.linear(box, (0.0, 1.0, -sy), -y0) ** 2
        d2 *= np.float32(1 / 30.0**2)
        d2 += 1
        signal *= 1 + np.float32(profile.erc_gain) / d2
        del d2

    sigma = np.float32(profile.noise * rng.uniform(0.85, 1.15))
    scale = profile.scale * math.exp(rng.normal(0.0, 0.08))
    real = rng.standard_normal(tissue.shape, dtype=np.float32)
    real *= sigma
    real += signal
    imag = rng.standard_normal(tissue.shape, dtype=np.float32)
    imag *= sigma
    np.square(real, out=real)
    np.square(imag, out=imag)
    real += imag
    del imag, signal
    np.sqrt(real, out=real)
    real *= np.float32(scale)
    real += np.float32(profile.offset + 0.5)
    np.clip(real, 0, 32767, out=real)
    image = sitk.GetImageFromArray(real.astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))

    label_lut = np.zeros(len(Tissue), dtype=np.uint8)
    label_lut[Tissue.CENTRAL_ZONE] = 1
    label_lut[Tissue.PERIPHERAL_ZONE] = 2 if zones else 1
    label = sitk.GetImageFromArray(np.take(label_lut, tissue))
    label.CopyInformation(image)
    return Phantom(image=image, label=label, tissue=tissue, site=profile, seed=seed, anatomy=anat)


def make_phantom(
    seed: int, site: str | SiteProfile = "RUNMC", size: tuple[int, int, int] | None = None, zones: bool = False
) -> tuple[sitk.Image, sitk.Image]:
    """A synthetic T2-like case: (image int16, label uint8) with identical geometry.

    The label is 1 = gland, or with ``zones=True`` 1 = central/transition zone and
    2 = peripheral zone. ``size`` (x, y, z voxels) keeps the site's field of view
    and scales the spacing. The anatomy depends only on ``seed`` (the same seed
    gives the same patient at every site); orientation, bias, noise and intensity
    scale also depend on the site. Deterministic for a given (seed, site, size).
    """
    case = make_phantom_case(seed, site, size, zones)
    return case.image, case.label


def gland_volume_ml(label: sitk.Image) -> float:
    """Volume (ml) of the non-zero voxels of a label image."""
    if not isinstance(label, sitk.Image):
        raise TypeError(f"label must be a SimpleITK image, got {type(label).__name__}")
    count = int(np.count_nonzero(sitk.GetArrayViewFromImage(label)))
    return count * float(np.prod(label.GetSpacing())) / 1000.0


def write_atomic(path: Path, write) -> None:
    """Write via a temporary file in the same folder (same suffix), then rename."""
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _case_counts(cases_per_site: int | Mapping[str, int], sites: Sequence[str] | None) -> dict[str, int]:
    if isinstance(sites, str):
        raise ValueError(f"sites must be a list of site names, got the string {sites!r}")
    if isinstance(cases_per_site, Mapping):
        names = list(cases_per_site) if sites is None else list(sites)
        missing = [s for s in names if s not in cases_per_site]
        if missing:
            raise ValueError(f"cases_per_site has no count for site {missing[0]!r}")
        counts = {s: cases_per_site[s] for s in names}
    else:
        names = list(SITES) if sites is None else list(sites)
        counts = {s: cases_per_site for s in names}
    for name, n in counts.items():
        get_site(name)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"cases_per_site must be a non-negative integer, got {n!r} for {name}")
    return {name: int(n) for name, n in counts.items()}


def write_phantom_dataset(
    outdir: str | Path,
    cases_per_site: int | dict[str, int] = 4,
    seed: int = 0,
    sites: Sequence[str] | None = None,
    size: tuple[int, int, int] | None = None,
    zones: bool = False,
    overwrite: bool = False,
) -> list[dict]:
    """Write ``<outdir>/<SITE>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz`` and ``phantom.json``.

    Returns one dict per case (site, case_id, seed, image, label, gland_volume_ml).
    Existing files are refused (OutputError) unless ``overwrite`` is true; nothing
    is written in that case. Each file is written atomically.
    """
    seed = _check_seed(seed)
    counts = _case_counts(cases_per_site, sites)
    if size is not None:
        size = _check_size(size)
    outdir = Path(outdir)
    plan = []
    for name, n in counts.items():
        for index in range(n):
            case_id = f"Case{index:02d}"
            case_seed = int(np.random.default_rng([seed, zlib.crc32(name.encode()), index]).integers(2**31))
            folder = outdir / name
            plan.append((name, case_id, case_seed, folder / f"{case_id}.nii.gz", folder / f"{case_id}_segmentation.nii.gz"))
    if not overwrite:
        for path in [p for item in plan for p in item[3:]] + [outdir / "phantom.json"]:
            if path.exists():
                raise OutputError(f"{path} exists (use --overwrite to replace it)")
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir} is not a folder")

    records = []
    for name, case_id, case_seed, image_path, label_path in plan:
        image_path.parent.mkdir(parents=True, exist_ok=True)
        image, label = make_phantom(case_seed, name, size, zones)
        write_atomic(image_path, lambda p, im=image: sitk.WriteImage(im, str(p), True))
        write_atomic(label_path, lambda p, lb=label: sitk.WriteImage(lb, str(p), True))
        records.append({
            "site": name, "case_id": case_id, "seed": case_seed, "image": str(image_path),
            "label": str(label_path), "gland_volume_ml": round(gland_volume_ml(label), 3),
        })
    meta = {
        "description": "Synthetic T2-like prostate MRI phantoms generated by ProstateKDLib.phantom.",
        "note": "Synthetic test phantoms, not anatomy-accurate; for testing and demos only, "
        "never for accuracy claims.",
        "seed": seed,
        "size": list(size) if size is not None else None,
        "labels": {"1": "central zone", "2": "peripheral zone"} if zones else {"1": "gland"},
        "sites": {name: {"cases": n, **dataclasses.asdict(get_site(name))} for name, n in counts.items()},
        "cases": [
            {**r, "image": os.path.relpath(r["image"], outdir), "label": os.path.relpath(r["label"], outdir)}
            for r in records
        ],
    }
    outdir.mkdir(parents=True, exist_ok=True)
    write_atomic(outdir / "phantom.json", lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return records
