"""The Python packages the 3D Slicer module installs into Slicer's Python.

Segmenting needs only onnxruntime besides what Slicer ships (numpy, SimpleITK):
the bundled models carry an ONNX export and the library preprocesses and maps back
with SimpleITK/numpy, so neither PyTorch nor MONAI is installed for inference
(:data:`INFERENCE_REQUIREMENTS`). psutil, when present, makes Cancel kill a whole
process tree; without it the worker process itself is killed.

PyTorch stays optional: with the PyTorch extension installed, the device list names
the GPUs, ``mps`` and bundles without an ONNX export run on the torch backend, which
needs MONAI matched to that torch (:func:`torch_backend_requirements`). MONAI is
installed with ``--no-deps`` (so pip never replaces that torch), hence its version must
be chosen here to work with the torch that is installed, not simply the newest one:

==================  ===============  ====================
torch               Python           MONAI
==================  ===============  ====================
>= 2.8              >= 3.10          ``>=1.6,<1.7``
>= 2.4.1            any (3.9+)       ``>=1.5.2,<1.6``
older (>= 2.2)      any (3.9+)       ``>=1.4,<1.5``
==================  ===============  ====================

(MONAI 1.6 needs torch 2.8 and Python 3.10; 1.5.2 needs torch 2.4.1; 1.4 needs torch 1.9.)
Pure Python: no ``slicer``, ``qt`` or torch import.
"""

from __future__ import annotations

import re
import sys
from typing import Sequence

#: What the module installs to segment (the ONNX backend): nothing else besides Slicer's own packages.
INFERENCE_REQUIREMENTS = ("onnxruntime>=1.17",)
#: What the optional torch backend needs besides torch (PyTorch extension) and MONAI (matched).
#: nibabel: MONAI's ``Orientation`` imports it at run time.
TORCH_BACKEND_REQUIREMENTS = ("safetensors>=0.4", "nibabel>=5")
#: Never installed or upgraded by the module.
NEVER_INSTALL = ("torch", "numpy", "SimpleITK")
#: The oldest torch the torch backend accepts.
MINIMUM_TORCH = ">=2.2"


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.5.1+cu121"`` -> ``(2, 5, 1)``; the leading numeric release part only.

    Raises:
        ValueError: the string does not start with a number.
    """
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(version))
    if not match:
        raise ValueError(f"not a version number: {version!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def monai_requirement(torch_version: str, python_version: Sequence[int] | None = None) -> str:
    """The MONAI requirement that works with ``torch_version`` on ``python_version`` (default: this one)."""
    torch = version_tuple(torch_version)
    python = tuple(python_version if python_version is not None else sys.version_info[:2])
    if torch >= (2, 8) and python >= (3, 10):
        return "monai>=1.6,<1.7"
    if torch >= (2, 4, 1):
        return "monai>=1.5.2,<1.6"
    return "monai>=1.4,<1.5"


def module_requirements() -> list[str]:
    """What the module installs before its first segmentation (no torch, no MONAI)."""
    return list(INFERENCE_REQUIREMENTS)


def torch_backend_requirements(torch_version: str, python_version: Sequence[int] | None = None) -> list[str]:
    """What the optional torch backend needs for this torch: MONAI (matched) first, then the rest."""
    return [monai_requirement(torch_version, python_version), *TORCH_BACKEND_REQUIREMENTS]


def requirement_name(requirement: str) -> str:
    """``"monai>=1.5.2,<1.6"`` -> ``"monai"``."""
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0]


def requirement_satisfied(requirement: str) -> bool:
    """Whether ``requirement`` (``name>=x,<y``) is installed in this Python."""
    import importlib.util
    from importlib import metadata

    name = requirement_name(requirement)
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no 'packaging': importable is good enough
        return importlib.util.find_spec(name) is not None
    parsed = Requirement(requirement)
    try:
        return parsed.specifier.contains(metadata.version(parsed.name), prereleases=True)
    except metadata.PackageNotFoundError:
        return False
