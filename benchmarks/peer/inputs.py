"""Benchmark inputs: synthetic phantom volumes of named sizes, with their ground-truth label."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

PRESETS: dict[str, tuple[int, int, int]] = {
    "small": (160, 160, 16),
    "typical": (320, 320, 24),
    "large": (512, 512, 40),
}
DEFAULT_SPACING = (0.6, 0.6, 3.6)  # mm, a typical prostate T2 (the RUNMC profile)
SEED = 7
SITE = "RUNMC"


@dataclass(frozen=True)
class InputSpec:
    """A named input size (x, y, z voxels) at a spacing (mm)."""

    name: str
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def voxels(self) -> int:
        return self.size[0] * self.size[1] * self.size[2]

    @property
    def label(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.size))}"


def parse_size(text: str, spacing: Sequence[float] = DEFAULT_SPACING) -> InputSpec:
    """``small``/``typical``/``large`` or ``XxYxZ`` (e.g. ``64x64x8``) -> :class:`InputSpec`."""
    spacing = tuple(float(s) for s in spacing)
    if text in PRESETS:
        return InputSpec(text, PRESETS[text], spacing)  # type: ignore[arg-type]
    match = re.fullmatch(r"(\d+)x(\d+)x(\d+)", text)
    if not match:
        raise ValueError(f"size {text!r}: expected one of {', '.join(PRESETS)} or XxYxZ such as 64x64x8")
    return InputSpec(text, tuple(int(v) for v in match.groups()), spacing)  # type: ignore[arg-type]


def make_input(spec: InputSpec, folder: Path) -> dict[str, Any]:
    """Write ``image.nii.gz`` and ``label.nii.gz`` for ``spec`` into ``folder``; describe them.

    The phantom keeps the anatomy at its physical size and the spacing asked for, so a
    larger matrix means a larger field of view (more tissue around the gland), as on a
    scanner. Where the field of view is too small for the gland, the site's field of view
    is kept instead (the spacing then differs from the one asked for; the record says so).
    """
    import SimpleITK as sitk

    from ProstateKDLib.phantom import SITES, gland_volume_ml, make_phantom

    profile = dataclasses.replace(SITES[SITE], matrix=spec.size, spacing_xy=spec.spacing[0],
                                  slice_thickness=spec.spacing[2])
    note = f"synthetic phantom ({SITE} profile, seed {SEED}), anatomy at physical size"
    try:
        image, label = make_phantom(SEED, profile)
        if spec.spacing[0] != spec.spacing[1]:
            image.SetSpacing(spec.spacing)
            label.SetSpacing(spec.spacing)
    except ValueError:  # field of view too small for the gland
        image, label = make_phantom(SEED, SITE, spec.size)
        note = f"synthetic phantom ({SITE} profile, seed {SEED}), {SITE} field of view kept (size too small)"
    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / "image.nii.gz", folder / "label.nii.gz"
    sitk.WriteImage(image, str(image_path), useCompression=True)
    sitk.WriteImage(label, str(label_path), useCompression=True)
    spacing = [round(s, 4) for s in image.GetSpacing()]
    return {
        "name": spec.name,
        "size": list(image.GetSize()),
        "spacing_mm": spacing,
        "field_of_view_mm": [round(n * s, 1) for n, s in zip(image.GetSize(), spacing)],
        "gland_volume_ml": round(gland_volume_ml(label), 2),
        "source": note,
        "image": str(image_path),
        "label": str(label_path),
    }
