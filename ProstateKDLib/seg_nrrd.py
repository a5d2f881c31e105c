"""3D Slicer segmentation files (``.seg.nrrd``): segment descriptions and header keys.

A ``.seg.nrrd`` file is an ordinary NRRD labelmap whose header carries
``Segmentation_*`` and ``Segment{i}_*`` key/value pairs. 3D Slicer
(``vtkMRMLSegmentationStorageNode``) reads those keys to load the file as a
segmentation with named, coloured segments and their terminology, instead of
as a plain labelmap volume.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .terminology import PROSTATE_TERMINOLOGY, slicer_terminology_tag

TERMINOLOGY_TAG = "TerminologyEntry"
EMPTY_EXTENT = "0 -1 0 -1 0 -1"
AUTO_COLOR = (0.5, 0.5, 0.5)

# Slicer's "3D Slicer General Anatomy list" recommends RGB (230, 158, 140) for
# SCT 41216001 "Prostate" (SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json).
PROSTATE_COLOR = (230 / 255, 158 / 255, 140 / 255)


@dataclass(frozen=True)
class SegmentInfo:
    """One segment of a labelmap: its voxel value, name, display colour and terminology.

    ``color`` is RGB in 0-1. ``terminology`` is a Slicer terminology entry
    string (``"<context>~<category>~<type>~..."``, as made by
    :func:`ProstateKDLib.terminology.slicer_terminology_tag`; a trailing ``|``
    or a leading ``TerminologyEntry:`` is accepted) or ``None``.
    """

    label_value: int
    name: str
    color: tuple[float, float, float]
    terminology: str | None = None

    def __post_init__(self) -> None:
        value = self.label_value
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= 255:
            raise ValueError(f"segment label_value must be an integer in 1-255, got {value!r}")
        object.__setattr__(self, "label_value", int(value))
        if not isinstance(self.name, str) or not self.name.strip() or "\n" in self.name:
            raise ValueError(f"segment name must be a non-empty single-line string, got {self.name!r}")
        try:
            color = tuple(float(c) for c in self.color)
        except (TypeError, ValueError):
            raise ValueError(f"segment color must be 3 numbers in 0-1, got {self.color!r}") from None
        if len(color) != 3 or not all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in color):
            raise ValueError(f"segment color must be 3 numbers in 0-1, got {self.color!r}")
        object.__setattr__(self, "color", color)
        if self.terminology is not None and (not isinstance(self.terminology, str) or "\n" in self.terminology):
            raise ValueError(f"segment terminology must be a single-line string or None, got {self.terminology!r}")


PROSTATE_SEGMENT = SegmentInfo(1, "Prostate", PROSTATE_COLOR, slicer_terminology_tag(PROSTATE_TERMINOLOGY))


def segment_tags(terminology: str | None) -> str:
    """The ``Segment{i}_Tags`` value: ``"TerminologyEntry:<entry>|"``, or ``""`` without terminology."""
    if not terminology:
        return ""
    text = terminology.strip()
    if f"{TERMINOLOGY_TAG}:" in text:  # already a full tags string
        return text if text.endswith("|") else text + "|"
    return f"{TERMINOLOGY_TAG}:{text.rstrip('|')}|"


def label_extent(labels: np.ndarray, value: int) -> str:
    """Bounding box of ``value`` in a ``(z, y, x)`` array as Slicer's ``"i0 i1 j0 j1 k0 k1"``."""
    inside = labels == value
    if not inside.any():
        return EMPTY_EXTENT
    bounds = []
    for axis in ((0, 1), (0, 2), (1, 2)):  # -> i (x), j (y), k (z)
        hits = np.flatnonzero(inside.any(axis=axis))
        bounds += [int(hits[0]), int(hits[-1])]
    return " ".join(str(b) for b in bounds)


def _color_text(color: Sequence[float]) -> str:
    return " ".join(f"{c:.6g}" for c in color)


def slicer_segmentation_metadata(mask: sitk.Image, segments: Sequence[SegmentInfo]) -> dict[str, str]:
    """Header keys that make a 3D uint8 labelmap NRRD a 3D Slicer segmentation.

    Every label value in ``mask`` without a matching segment gets one named
    ``"Label <value>"`` with an auto-generated grey colour, so no labelled
    voxel is hidden in Slicer.

    Raises:
        ValueError: two segments share a label value or a name.
    """
    values = [s.label_value for s in segments]
    if len(set(values)) != len(values):
        raise ValueError(f"segments have duplicate label values: {values}")
    names = [s.name for s in segments]
    if len(set(names)) != len(names):
        raise ValueError(f"segments have duplicate names: {names}")
    labels = sitk.GetArrayViewFromImage(mask)
    present = {int(v) for v in np.unique(labels)} - {0}
    extra = [SegmentInfo(v, f"Label {v}", AUTO_COLOR) for v in sorted(present - set(values))]
    metadata = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for index, segment in enumerate([*segments, *extra]):
        key = f"Segment{index}_"
        metadata[key + "ID"] = f"Segment_{segment.label_value}"
        metadata[key + "Name"] = segment.name
        metadata[key + "NameAutoGenerated"] = "0"
        metadata[key + "Color"] = _color_text(segment.color)
        metadata[key + "ColorAutoGenerated"] = "1" if segment in extra else "0"
        metadata[key + "LabelValue"] = str(segment.label_value)
        metadata[key + "Layer"] = "0"
        metadata[key + "Extent"] = label_extent(labels, segment.label_value)
        metadata[key + "Tags"] = segment_tags(segment.terminology)
    return metadata
