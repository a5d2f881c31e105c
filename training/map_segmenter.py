"""An external teacher's cached maps evaluated like a model: mask = probability above its threshold.

``prostatekd evaluate`` takes an external-teacher folder (:mod:`training.external_teacher`) as
one of its models, so a peer whose probabilities were cached (TAPS) is scored on exactly the
same cases and metrics as our bundles. The mask is the map thresholded at ``teacher.json``'s
``threshold`` (0.5 when absent), without the peer's own post-processing (TAPS additionally keeps
its largest component and cleans slices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .external_teacher import ExternalTeacher

DEFAULT_THRESHOLD = 0.5


@dataclass
class MapResult:
    """What :meth:`MapSegmenter.segment_case` returns: the mask and (no) warnings."""

    mask: Any
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MapMeta:
    """Name and version shown in reports."""

    name: str
    version: str


class MapSegmenter:
    """Masks from an external teacher's maps (see the module docstring)."""

    device = "cached maps"

    def __init__(self, teacher: ExternalTeacher) -> None:
        self.teacher = teacher
        self.threshold = float(teacher.meta.get("threshold", DEFAULT_THRESHOLD))
        self.meta = MapMeta(teacher.name, str(teacher.meta.get("version", "")))

    @property
    def path(self) -> str:
        return str(self.teacher.folder)

    def segment_case(self, case_id: str, image: Any) -> MapResult:
        """The mask of ``case_id`` on ``image``'s grid (uint8 {0, 1}).

        Raises:
            DataError: the map is missing, unreadable or on another grid.
        """
        import SimpleITK as sitk

        prob = self.teacher.read_map(case_id, image)
        mask = sitk.Cast(prob > self.threshold, sitk.sitkUInt8)
        return MapResult(mask, [f"cached maps of {self.meta.name}, threshold {self.threshold:g}"])

    def segments(self) -> list[Any]:
        """No segment metadata (the masks are written as plain labels)."""
        return []
