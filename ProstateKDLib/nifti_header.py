"""The voxel spacing a NIfTI header really holds (ITK replaces a zero ``pixdim`` by 1 mm)."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path


def nifti_pixdim(path: str | os.PathLike) -> tuple[float, ...] | None:
    """``pixdim[1..3]`` (the spatial spacing) of a NIfTI-1/2 file, plain or gzipped; None if not NIfTI.

    ITK (SimpleITK 2.5) reads a ``pixdim`` of 0 as 1 mm without a word, so
    the header is read here to tell a real 1 mm from a missing spacing.
    """
    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(540)
    except (EOFError, OSError, zlib.error):
        return None
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            dims = struct.unpack(endian + "8h", header[40:56])
            pixdim = struct.unpack(endian + "8f", header[76:108])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            dims = struct.unpack(endian + "8q", header[16:80])
            pixdim = struct.unpack(endian + "8d", header[104:168])
            break
    else:
        return None
    count = min(max(int(dims[0]), 0), 3)
    return tuple(float(v) for v in pixdim[1 : count + 1])


def spacing_is_missing(spacing: tuple[float, ...]) -> bool:
    """True when a header spacing holds a zero, negative zero or non-finite value."""
    return any(not math.isfinite(s) or s == 0 for s in spacing)
