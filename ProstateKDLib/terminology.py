"""Standard terminology of output segments, in the string form 3D Slicer stores."""

from __future__ import annotations

from typing import Mapping, Sequence

SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
PROSTATE_TERMINOLOGY = {
    "category": ["SCT", "123037004", "Anatomical Structure"],
    "type": ["SCT", "41216001", "Prostate"],
}


def slicer_terminology_tag(terminology: Mapping[str, Sequence[str]] | None) -> str | None:
    """``{"category": [scheme, code, meaning], "type": [...]}`` -> Slicer's ``TerminologyEntry`` string.

    The string is exactly what Slicer's ``SerializeTerminologyEntry`` gives
    (``<context>~<category>~<type>~<modifier>~<anatomic context>~<region>~<region modifier>``),
    with no ``|``: that character only separates tags in ``.seg.nrrd`` headers.
    Returns ``None`` when no terminology is given.
    """
    if not terminology:
        return None
    category = "^".join(terminology["category"])
    kind = "^".join(terminology["type"])
    modifier = "^".join(terminology.get("type_modifier", ["", "", ""]))
    region = "^".join(terminology.get("region", ["", "", ""]))
    region_modifier = "^".join(terminology.get("region_modifier", ["", "", ""]))
    return f"{SLICER_CONTEXT}~{category}~{kind}~{modifier}~{ANATOMIC_CONTEXT}~{region}~{region_modifier}"
