"""Numpy arrays with their geometry <-> SimpleITK images: how notebook users hand volumes to a Segmenter.

Two conventions, as the two worlds store them:

- ``affine`` (nibabel, NIfTI, MONAI): the array is indexed ``[i, j, k]`` (x fastest in
  the file, first axis = i) and the 4x4 affine maps ``(i, j, k, 1)`` to RAS millimetres.
- ``spacing`` / ``origin`` / ``direction`` (SimpleITK, ITK, DICOM): the array is indexed
  ``[z, y, x]``, as ``SimpleITK.GetArrayFromImage`` returns it, and the geometry is
  ITK's, in LPS millimetres (``direction``: 3x3, columns = axis directions, or 9 values row-major).

Results come back in the layout of the input (``"ijk"`` or ``"zyx"``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["LPS_FROM_RAS", "array_from_image", "image_from_array"]

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def image_from_array(
    array: Any,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    direction: Any = None,
    affine: Any = None,
) -> tuple[Any, str]:
    """A 3D float32 SimpleITK image from ``array`` and its geometry; returns ``(image, layout)``.

    ``layout`` is ``"ijk"`` for an ``affine``, ``"zyx"`` for ``spacing``/``origin``/``direction``.

    Raises:
        ValueError: not a 3D numeric array, no geometry, both conventions at once, an affine
            that is not 4x4 with a non-singular 3x3 part, spacing not 3 positive numbers,
            origin not 3 numbers, or direction not 3x3.
    """
    import SimpleITK as sitk

    data = np.asarray(array)
    if data.ndim != 3 or data.dtype.kind not in "biuf":
        raise ValueError(f"array must be a 3D numeric array, got shape {data.shape} of {data.dtype}")
    itk_geometry = spacing is not None or origin is not None or direction is not None
    if affine is not None and itk_geometry:
        raise ValueError("give either affine or spacing/origin/direction, not both")
    if affine is None and spacing is None:
        raise ValueError(
            "a numpy array needs its geometry: affine=4x4 (nibabel/RAS, array [i, j, k]) or "
            "spacing=(sx, sy, sz) with optional origin and direction (SimpleITK/LPS, array [z, y, x])"
        )
    if affine is not None:
        matrix = np.asarray(affine, dtype=float)
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise ValueError(f"affine must be a finite 4x4 matrix, got shape {matrix.shape}")
        linear = LPS_FROM_RAS @ matrix[:3, :3]
        voxel = np.linalg.norm(linear, axis=0)
        if np.any(voxel <= 0):
            raise ValueError("affine has a zero-length voxel axis")
        spacing_v, direction_m = voxel, linear / voxel
        origin_v = LPS_FROM_RAS @ matrix[:3, 3]
        volume, layout = np.ascontiguousarray(np.transpose(data, (2, 1, 0))), "ijk"
    else:
        spacing_v = np.asarray(spacing, dtype=float)
        if spacing_v.shape != (3,) or not np.all(np.isfinite(spacing_v)) or np.any(spacing_v <= 0):
            raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}")
        origin_v = np.zeros(3) if origin is None else np.asarray(origin, dtype=float)
        if origin_v.shape != (3,) or not np.all(np.isfinite(origin_v)):
            raise ValueError(f"origin must be 3 numbers, got {origin!r}")
        direction_m = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(-1)
        if direction_m.size != 9:
            raise ValueError(f"direction must be 3x3 (or 9 values), got {np.shape(direction)}")
        direction_m = direction_m.reshape(3, 3)
        volume, layout = np.ascontiguousarray(data), "zyx"
    image = sitk.GetImageFromArray(volume.astype(np.float32, copy=False))
    image.SetSpacing([float(s) for s in spacing_v])
    image.SetOrigin([float(o) for o in origin_v])
    image.SetDirection([float(d) for d in direction_m.ravel()])
    return image, layout


def array_from_image(image: Any, layout: str = "zyx") -> np.ndarray:
    """The voxels of a SimpleITK image as a numpy array in ``layout`` (``"zyx"`` or ``"ijk"``)."""
    import SimpleITK as sitk

    if layout not in ("zyx", "ijk"):
        raise ValueError(f"layout must be 'zyx' or 'ijk', got {layout!r}")
    array = sitk.GetArrayFromImage(image)
    return np.ascontiguousarray(np.transpose(array, (2, 1, 0))) if layout == "ijk" else array
