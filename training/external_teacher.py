"""External teachers: a folder of per-case foreground probability maps standing in for a network.

Any model that can write, for every case, its foreground probability on the case image's own
grid can teach a student: the TAPS peer (``benchmarks/peer/taps_probabilities.py``) and our
own bundles (``prostatekd teach-cache``) write such folders. Distillers that need only the
teacher's outputs read the maps instead of running the teacher at every step; the maps are
resampled onto the student's preprocessing grid with the image (linear interpolation) and
cropped and augmented together with it (:class:`~training.sampling.PatchSampler`).

Layout::

    FOLDER/teacher.json          {"format": "prostatekd-external-teacher", "format_version": 1,
                                  "name", "version", "license", "scale" (255 for uint8 maps, 1 for
                                  float maps), "training_data", ...}
    FOLDER/<case_id>.nii.gz      one map per case, e.g. FOLDER/HK/Case13.nii.gz

A map must have its case image's size, spacing, origin and direction, and values in
``[0, scale]``; anything else is a :class:`~ProstateKDLib.errors.DataError` naming the case.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ProstateKDLib.errors import ConfigError, DataError

FORMAT = "prostatekd-external-teacher"
FORMAT_VERSION = 1
TEACHER_JSON = "teacher.json"
#: ``scale`` of uint8 maps: stored value = round(probability x 255)
SCALE_UINT8 = 255
MAP_SUFFIX = ".nii.gz"
SPACING_RTOL = 1e-3
ORIGIN_ATOL_MM = 1e-2
DIRECTION_ATOL = 1e-3


def is_external_teacher(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a ``teacher.json`` of this format."""
    folder = Path(path)
    if not (folder / TEACHER_JSON).is_file():
        return False
    try:
        return json.loads((folder / TEACHER_JSON).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@dataclass(frozen=True)
class ExternalTeacher:
    """A folder of probability maps (see the module docstring)."""

    folder: Path
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.folder.name))

    @property
    def scale(self) -> float:
        return float(self.meta.get("scale", 1))

    def map_path(self, case_id: str) -> Path:
        """Where the map of ``case_id`` lives (it may be missing)."""
        return self.folder / f"{case_id}{MAP_SUFFIX}"

    def missing(self, case_ids: Sequence[str]) -> list[str]:
        """The case ids that have no map here."""
        return [c for c in case_ids if not self.map_path(c).is_file()]

    def read_map(self, case_id: str, reference: Any) -> Any:
        """The map of ``case_id`` as a float32 SimpleITK image in [0, 1] on ``reference``'s grid.

        Raises:
            DataError: map missing or unreadable, on another grid, or values outside [0, scale].
        """
        import numpy as np
        import SimpleITK as sitk

        path = self.map_path(case_id)
        if not path.is_file():
            raise DataError(f"case {case_id}: teacher {self.name!r} has no map {path}")
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            line = [s for s in str(exc).splitlines() if s.strip()]
            raise DataError(f"case {case_id}: cannot read teacher map {path}: {line[-1] if line else exc}") from None
        problem = grid_difference(image, reference)
        if problem:
            raise DataError(f"case {case_id}: teacher map {path} is not on the case image's grid: {problem}")
        values = sitk.GetArrayFromImage(image).astype(np.float32)
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > self.scale * (1 + 1e-6):
            raise DataError(f"case {case_id}: teacher map {path} holds values {low:g}..{high:g}, "
                            f"outside [0, {self.scale:g}] (teacher.json 'scale')")
        out = sitk.GetImageFromArray(values / self.scale)
        out.CopyInformation(reference)
        return out

    def describe(self) -> dict[str, Any]:
        """Provenance record: name, version, licence, training data, folder."""
        keep = ("name", "version", "license", "training_data", "network", "maps", "made_by")
        return {"kind": "external", "path": str(self.folder), **{k: self.meta[k] for k in keep if k in self.meta}}


def grid_difference(image: Any, reference: Any) -> str:
    """What differs between two SimpleITK images' grids ('' when they match)."""
    if image.GetDimension() != reference.GetDimension() or image.GetNumberOfComponentsPerPixel() != 1:
        return "it must be a 3D scalar image"
    if tuple(image.GetSize()) != tuple(reference.GetSize()):
        return f"size {tuple(image.GetSize())} vs {tuple(reference.GetSize())}"
    pairs = (("spacing", image.GetSpacing(), reference.GetSpacing(), lambda a, b: math.isclose(a, b, rel_tol=SPACING_RTOL)),
             ("origin", image.GetOrigin(), reference.GetOrigin(), lambda a, b: abs(a - b) <= ORIGIN_ATOL_MM),
             ("direction", image.GetDirection(), reference.GetDirection(), lambda a, b: abs(a - b) <= DIRECTION_ATOL))
    for what, mine, theirs, same in pairs:
        if not all(same(a, b) for a, b in zip(mine, theirs)):
            show = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
            return f"{what} {show(mine)} vs {show(theirs)}"
    return ""


def read_external_teacher(path: str | os.PathLike) -> ExternalTeacher:
    """Open an external teacher folder.

    Raises:
        ConfigError: no readable ``teacher.json`` of this format, or a bad ``scale``.
    """
    folder = Path(path).expanduser()
    try:
        meta = json.loads((folder / TEACHER_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"external teacher {folder}: cannot read {TEACHER_JSON}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"external teacher {folder}: {TEACHER_JSON} is not a {FORMAT!r} file")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigError(f"external teacher {folder}: format_version {meta['format_version']} is newer than "
                          f"this ProstateKD reads ({FORMAT_VERSION})")
    scale = meta.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(f"external teacher {folder}: {TEACHER_JSON} 'scale' must be a number > 0, got {scale!r}")
    return ExternalTeacher(folder, meta)


def write_teacher_json(folder: Path, meta: Mapping[str, Any]) -> Path:
    """Write ``folder/teacher.json`` (format fields added) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **dict(meta)}
    path = folder / TEACHER_JSON
    tmp = path.with_name(f".{TEACHER_JSON}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
