"""ProstateKD: prostate MRI segmentation with knowledge-distilled students.

Pure Python library (no ``slicer``/``qt``/``vtk`` imports except in the MRML
logic module). Heavy imports (torch, monai) happen inside the modules that
need them, so ``import ProstateKDLib`` stays fast.

The Python API is loaded on first use (PEP 562), so importing the package
imports nothing else::

    from ProstateKDLib import Segmenter, read_volume, write_mask

    segmenter = Segmenter()                    # the bundled student, loaded once
    result = segmenter.segment(read_volume("t2.nii.gz"))
    write_mask(result.mask, "t2_prostate.nii.gz")

``python -m ProstateKDLib ...`` runs the library's ``prostatekd`` commands (the installed script, ``training.cli``, adds training).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public names and the module each lives in (imported when first used).
API = {
    "Segmenter": "inference",
    "SegmentationResult": "inference",
    "read_volume": "image_io",
    "write_mask": "image_io",
    "image_summary": "image_io",
    "image_from_array": "array_image",
    "find_series": "dicom_series",
    "choose_series": "dicom_series",
    "write_dicom_seg": "dicom_seg",
    "psa_density": "psa_density",
    "ProstateKDError": "errors",
}

__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    """Import an API name's module on first access (keeps ``import ProstateKDLib`` cheap)."""
    module = API.get(name)
    if module is None:
        raise AttributeError(f"module 'ProstateKDLib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
