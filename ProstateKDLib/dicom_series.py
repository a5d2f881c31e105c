"""Finding the DICOM series in a study folder and choosing the axial T2 among them.

A PACS export is a folder (often with one subfolder per series) holding
several series: T2 in three planes, diffusion, ADC, localizers. The headers of
every file (never the pixels) are read with pydicom and grouped by
SeriesInstanceUID. The series to segment is chosen by its DICOM attributes:

1. ``series`` given: the series with that SeriesInstanceUID, or that SeriesNumber.
2. a folder with a single image series: that series, unless it is a
   diffusion/ADC series or has ImageType LOCALIZER (one that mixes
   orientations fails later, when its slices are stacked).
3. otherwise the *axial T2*: slices closest to the transverse plane (oblique
   allowed), not a localizer, one image per slice position, T2-weighted by its
   SeriesDescription/ProtocolName (``t2``, not diffusion/ADC) or, when neither
   names it, by EchoTime >= 60 ms and RepetitionTime >= 1500 ms. Of several,
   the one named T2 wins, then the one with most slices, then the highest
   SeriesNumber (a repeat is acquired after the first, usually for motion).

Every problem raises :class:`~ProstateKDLib.errors.InputError` with one line
listing what the folder holds, so a user can pick with ``--series``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError

__all__ = ["DicomSeries", "SeriesChoice", "choose_series", "find_series"]

_HEADER_TAGS = (
    "SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ProtocolName", "Modality",
    "ImageType", "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
    "InstanceNumber", "EchoTime", "RepetitionTime", "ScanningSequence", "SpacingBetweenSlices", "SliceThickness",
)
_PLANES = ("sagittal", "coronal", "axial")  # the patient axis (x, y, z) the slice normal is closest to
_OBLIQUE_DEG = 1.0
_SAME_POSITION_MM = 1e-2
_DIFFUSION_WORDS = re.compile(r"diff|dwi|adc|ep2d|trace|\bb\d{2,4}\b|resolve|fa\b|tensor", re.IGNORECASE)
_T2_WORDS = re.compile(r"t2(?![\s_-]*\*|[\s_-]*star|[\s_-]*map)|tse|fse|haste|space", re.IGNORECASE)
_T2_NAMED = re.compile(r"t2(?![\s_-]*\*|[\s_-]*star|[\s_-]*map)", re.IGNORECASE)
_LOCALIZER_WORDS = re.compile(r"loc|scout|survey|tri[\s_-]*pl|3[\s_-]*pl", re.IGNORECASE)
_T2_ECHO_MS, _T2_REPETITION_MS = 60.0, 1500.0


@dataclass(frozen=True)
class DicomSeries:
    """One image series of a folder, described from its headers.

    ``files`` are sorted along the slice normal (then by InstanceNumber).
    ``plane`` is ``axial``, ``coronal``, ``sagittal`` or ``mixed`` (images in
    several orientations); ``oblique_deg`` is the angle between the slice
    normal and that plane's axis.
    """

    uid: str
    number: int | None
    description: str
    protocol: str
    modality: str
    image_type: tuple[str, ...]
    rows: int
    columns: int
    positions: int
    files: tuple[Path, ...]
    plane: str
    oblique_deg: float
    pixel_spacing_mm: tuple[float, float] | None
    slice_spacing_mm: float | None
    echo_time_ms: float | None
    repetition_time_ms: float | None
    scanning_sequence: str

    @property
    def name(self) -> str:
        """SeriesDescription, else ProtocolName, else ``""``."""
        return self.description or self.protocol

    @property
    def orientation(self) -> str:
        """``axial``, ``axial oblique (18 deg)``, ``mixed`` ..."""
        if self.plane == "mixed" or self.oblique_deg < _OBLIQUE_DEG:
            return self.plane
        return f"{self.plane} oblique ({self.oblique_deg:.0f} deg)"

    @property
    def localizer(self) -> bool:
        """A scout/localizer: ImageType LOCALIZER, several orientations, or named so with few slices."""
        return (
            "LOCALIZER" in self.image_type
            or self.plane == "mixed"
            or (self.positions <= 5 and bool(_LOCALIZER_WORDS.search(self.name)))
        )

    @property
    def diffusion(self) -> bool:
        """Diffusion-weighted or a map derived from it (ADC, trace, FA)."""
        types = {"DIFFUSION", "ADC", "TRACEW", "TRACE", "FA"}
        return bool(types & set(self.image_type)) or bool(_DIFFUSION_WORDS.search(self.name)) or (
            "EP" in self.scanning_sequence.split("\\") and not _T2_NAMED.search(self.name)
        )

    @property
    def t2_evidence(self) -> str | None:
        """``"name"`` (described as T2), ``"timing"`` (long TE and TR) or None (not T2-weighted)."""
        if self.diffusion:
            return None
        text = f"{self.description} {self.protocol}"
        if _T2_WORDS.search(text):
            return "name"
        if self.echo_time_ms is not None and self.repetition_time_ms is not None and not text.strip():
            if self.echo_time_ms >= _T2_ECHO_MS and self.repetition_time_ms >= _T2_REPETITION_MS:
                return "timing"
        return None

    @property
    def volumetric(self) -> bool:
        """One image per slice position, at least three positions, a single orientation."""
        return self.plane != "mixed" and self.positions >= 3 and self.positions == len(self.files)

    @property
    def axial_t2(self) -> bool:
        """What ``segment`` wants: an axial (possibly oblique), volumetric, non-localizer T2 series."""
        return self.plane == "axial" and self.volumetric and not self.localizer and self.t2_evidence is not None

    def label(self) -> str:
        """One-line description, e.g. ``series 4 't2_tse_tra' (axial oblique (18 deg), 384x384x19, 0.5x0.5x3 mm)``."""
        number = self.uid if self.number is None else str(self.number)
        name = f"'{self.name}'" if self.name else "(no description)"
        size = f"{self.columns}x{self.rows}x{self.positions}"
        if len(self.files) != self.positions:
            size += f", {len(self.files)} images"
        parts = [self.orientation, size]
        if self.pixel_spacing_mm is not None:
            spacing = [*self.pixel_spacing_mm, *([self.slice_spacing_mm] if self.slice_spacing_mm else [])]
            parts.append("x".join(f"{s:.3g}" for s in spacing) + " mm")
        if self.localizer:
            parts.append("localizer")
        return f"series {number} {name} ({', '.join(parts)})"

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (what ``prostatekd series`` lists)."""
        return {
            "series_number": self.number,
            "series_uid": self.uid,
            "description": self.description,
            "protocol": self.protocol,
            "modality": self.modality,
            "image_type": list(self.image_type),
            "orientation": self.orientation,
            "size": [self.columns, self.rows, self.positions],
            "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
            "slice_spacing_mm": self.slice_spacing_mm,
            "files": len(self.files),
            "localizer": self.localizer,
            "t2": self.t2_evidence is not None,
            "axial_t2": self.axial_t2,
            "folder": str(os.path.commonpath([str(f.parent) for f in self.files])),
        }


@dataclass(frozen=True)
class SeriesChoice:
    """The chosen series, how it was chosen (``given``, ``only series``, ``axial T2``) and the others."""

    series: DicomSeries
    reason: str
    candidates: tuple[DicomSeries, ...]
    all_series: tuple[DicomSeries, ...]

    def message(self) -> str:
        """One line for the user, e.g. ``using series 10 't2_tse_tra' (...): axial T2 (of 2: 6, 10)``."""
        text = f"using {self.series.label()}: {self.reason}"
        if len(self.candidates) > 1:
            numbers = ", ".join(str(c.number) for c in self.candidates)
            text += f" (of {len(self.candidates)} axial T2 series: {numbers}; choose with --series)"
        return text


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _vector(value: Any, length: int) -> np.ndarray | None:
    try:
        vector = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return vector if vector.shape == (length,) and np.isfinite(vector).all() else None


def _joined(value: Any) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, str) else "\\".join(str(v) for v in value)


def _read_headers(folder: Path) -> list[tuple[Path, Any]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    headers = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            path = Path(root) / name
            try:
                with open(path, "rb") as handle:
                    if handle.read(132)[128:132] != b"DICM":
                        continue
                dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
            except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError):
                continue
            if "Rows" in dataset and "SeriesInstanceUID" in dataset:  # an image, not a report or a SEG of its own
                headers.append((path, dataset))
    return headers


def _describe(uid: str, members: list[tuple[Path, Any]]) -> DicomSeries:
    first = members[0][1]
    orientations = [_vector(d.get("ImageOrientationPatient"), 6) for _, d in members]
    positions = [_vector(d.get("ImagePositionPatient"), 3) for _, d in members]
    plane, oblique, distinct = "mixed", 0.0, len(members)
    order = sorted(range(len(members)), key=lambda i: _number(members[i][1].get("InstanceNumber")) or 0.0)
    reference = orientations[0]
    same = reference is not None and all(o is not None and np.abs(o - reference).max() <= 1e-3 for o in orientations)
    slice_spacing = None
    if same:
        normal = np.cross(reference[:3], reference[3:])
        axis = int(np.argmax(np.abs(normal)))
        plane = _PLANES[axis]
        cosine = min(1.0, abs(normal[axis]) / max(np.linalg.norm(normal), 1e-12))
        oblique = float(np.degrees(np.arccos(cosine)))
        if all(p is not None for p in positions):
            heights = np.array([p @ normal for p in positions])
            order = sorted(order, key=lambda i: heights[i])  # stable: InstanceNumber breaks ties
            sorted_heights = heights[order]
            gaps = np.diff(sorted_heights)
            distinct = int((gaps > _SAME_POSITION_MM).sum()) + 1
            steps = gaps[gaps > _SAME_POSITION_MM]
            if steps.size:
                slice_spacing = round(float(np.median(steps)), 4)
    if slice_spacing is None:
        slice_spacing = _number(first.get("SpacingBetweenSlices")) or _number(first.get("SliceThickness"))
    pixel_spacing = _vector(first.get("PixelSpacing"), 2)
    number = _number(first.get("SeriesNumber"))
    return DicomSeries(
        uid=uid,
        number=None if number is None else int(number),
        description=str(first.get("SeriesDescription", "") or "").strip(),
        protocol=str(first.get("ProtocolName", "") or "").strip(),
        modality=str(first.get("Modality", "") or ""),
        image_type=tuple(str(v).upper() for v in (first.get("ImageType") or ())),
        rows=int(first.Rows),
        columns=int(first.get("Columns", 0) or 0),
        positions=distinct,
        files=tuple(members[i][0] for i in order),
        plane=plane,
        oblique_deg=oblique,
        pixel_spacing_mm=None if pixel_spacing is None else (float(pixel_spacing[1]), float(pixel_spacing[0])),
        slice_spacing_mm=slice_spacing,
        echo_time_ms=_number(first.get("EchoTime")),
        repetition_time_ms=_number(first.get("RepetitionTime")),
        scanning_sequence=_joined(first.get("ScanningSequence")),
    )


def find_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every image series under ``folder`` (searched recursively), ordered by SeriesNumber.

    Raises:
        InputError: ``input not found: <folder>``, ``<folder> is not a folder``.
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a str or os.PathLike, got {type(folder).__name__}")
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"input not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for path, dataset in _read_headers(folder):
        groups.setdefault(str(dataset.SeriesInstanceUID), []).append((path, dataset))
    found = [_describe(uid, members) for uid, members in groups.items()]
    return sorted(found, key=lambda s: (s.number is None, s.number or 0, s.uid))


def _listing(found: Sequence[DicomSeries]) -> str:
    return "; ".join(series.label() for series in found)


def choose_series(folder: str | os.PathLike, series: str | int | None = None) -> SeriesChoice:
    """The series of ``folder`` to segment (see the module docstring for the rules).

    Args:
        folder: a series folder or a whole study/patient folder.
        series: a SeriesInstanceUID or a SeriesNumber (as int or digits); None chooses the axial T2.

    Raises:
        InputError: with one of these messages:

            - ``no DICOM series found in folder <folder>``
            - ``DICOM series <series> not found in folder <folder>; it holds <label>; <label>``
            - ``series number <n> is ambiguous in folder <folder>: <label>; <label>; give the SeriesInstanceUID``
            - ``no axial T2 series in folder <folder>; it holds <label>; <label>; choose one with --series UID|NUMBER``
    """
    if series is not None and (isinstance(series, bool) or not isinstance(series, (str, int))):
        raise TypeError(f"series must be a str, an int or None, got {type(series).__name__}")
    found = find_series(folder)
    if not found:
        raise InputError(f"no DICOM series found in folder {folder}")
    if series is not None:
        wanted = str(series).strip()
        matches = [s for s in found if s.uid == wanted]
        if not matches and wanted.isdigit():
            matches = [s for s in found if s.number == int(wanted)]
            if len(matches) > 1:
                raise InputError(
                    f"series number {wanted} is ambiguous in folder {folder}: {_listing(matches)}; "
                    "give the SeriesInstanceUID"
                )
        if not matches:
            raise InputError(f"DICOM series {wanted} not found in folder {folder}; it holds {_listing(found)}")
        return SeriesChoice(matches[0], "as given", (matches[0],), tuple(found))
    if len(found) == 1 and not (found[0].diffusion or "LOCALIZER" in found[0].image_type):
        return SeriesChoice(found[0], "the only series", (found[0],), tuple(found))
    candidates = [s for s in found if s.axial_t2]
    if not candidates:
        raise InputError(
            f"no axial T2 series in folder {folder}; it holds {_listing(found)}; choose one with --series UID|NUMBER"
        )
    best = max(candidates, key=lambda s: (s.t2_evidence == "name", s.positions, s.number or 0))
    return SeriesChoice(best, "axial T2", tuple(candidates), tuple(found))
