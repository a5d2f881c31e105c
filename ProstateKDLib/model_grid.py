"""The model grid without torch or MONAI: reorient, resample, normalise and map back with numpy.

Does what MONAI's ``Orientation`` + ``Spacing`` (bilinear, border padding) and the
bundle's z-score normalisation do in :mod:`ProstateKDLib.preprocessing` (training's
path), at a fraction of the import cost, so that inference needs neither torch nor
MONAI. The two agree to float32 rounding (``Testing/test_model_grid.py``):

* orientation: nibabel's ``io_orientation`` rule (each voxel axis goes to the world
  axis it changes most, in axis order), then flips and a transpose of the array;
* spacing: MONAI keeps the direction and the first voxel's centre, so the resampling
  is separable: output index ``j`` of an axis samples input index
  ``j * new_spacing / old_spacing`` (linear, clamped at the border), and the output
  size is ``round((n - 1) * old / new + 1)``;
* inversion: the same linear, border-clamped sampling the other way, then the
  orientation undone.

Arrays are in SimpleITK's voxel order (i, j, k) = (x, y, z), as MONAI sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

PERCENTILE_SAMPLE = 200_000  # as preprocessing.normalize_intensity
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_AXIS_CODES = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


@dataclass(frozen=True)
class GridMap:
    """How an input volume was put on the model grid, to map predictions back.

    ``order[k]`` is the input axis that became model axis ``k``; ``flips[k]`` says
    whether it was reversed; ``oriented_spacing`` and ``oriented_shape`` describe the
    volume after reorientation, ``shape`` the model grid.
    """

    order: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    oriented_spacing: tuple[float, float, float]
    oriented_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]


def orientation_axes(direction: Sequence[float], orientation: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Input axis and flip for each model axis, for a SimpleITK (LPS) direction matrix.

    Follows nibabel's ``io_orientation`` (as MONAI's ``Orientation`` does): input axes
    are taken in order, each assigned to the free world axis it moves along most.
    """
    codes = orientation.upper()
    if len(codes) != 3 or sorted(_AXIS_CODES[c][0] for c in codes if c in _AXIS_CODES) != [0, 1, 2]:
        raise ValueError(f"orientation must be three axis codes like 'RAS', got {orientation!r}")
    ras = LPS_TO_RAS @ np.asarray(direction, dtype=np.float64).reshape(3, 3)
    u, _, vt = np.linalg.svd(ras)
    rotation = u @ vt  # closest orthogonal matrix (io_orientation's polar decomposition)
    world_of_input: list[tuple[int, int]] = []
    for axis in range(3):
        column = rotation[:, axis]
        world = int(np.argmax(np.abs(column)))
        world_of_input.append((world, 1 if column[world] > 0 else -1))
        rotation[world, :] = 0
    order, flips = [], []
    for code in codes:
        world, sign = _AXIS_CODES[code]
        axis = next(i for i, (w, _) in enumerate(world_of_input) if w == world)
        order.append(axis)
        flips.append(world_of_input[axis][1] != sign)
    return tuple(order), tuple(flips)


def resample_axis(array: np.ndarray, axis: int, size: int, step: float) -> np.ndarray:
    """Linear resampling along one axis: output ``j`` samples input ``j * step`` (border-clamped)."""
    n = array.shape[axis]
    positions = np.arange(size, dtype=np.float64) * step
    if size == n and abs(step - 1.0) < 1e-12:
        return array
    positions = np.clip(positions, 0.0, n - 1.0)
    low = np.floor(positions).astype(np.intp)
    high = np.minimum(low + 1, n - 1)
    weight = (positions - low).astype(np.float32)
    shape = [1] * array.ndim
    shape[axis] = size
    weight = weight.reshape(shape)
    return np.take(array, low, axis=axis) * (1.0 - weight) + np.take(array, high, axis=axis) * weight


def resample(array: np.ndarray, shape: Sequence[int], steps: Sequence[float]) -> np.ndarray:
    """Separable linear resampling of the last three axes to ``shape`` (see :func:`resample_axis`)."""
    offset = array.ndim - 3
    out = array
    # Shrinking axes first keeps the intermediate arrays small.
    for axis in sorted(range(3), key=lambda a: shape[a] / array.shape[offset + a]):
        out = resample_axis(out, offset + axis, int(shape[axis]), float(steps[axis]))
    return np.ascontiguousarray(out, dtype=np.float32)


def to_model_grid(image: Any, orientation: str, spacing: Sequence[float]) -> tuple[np.ndarray, GridMap]:
    """SimpleITK 3D image -> (float32 array (X, Y, Z) on the model grid, map back)."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)  # (x, y, z) view
    order, flips = orientation_axes(image.GetDirection(), orientation)
    oriented = array.transpose(order)
    flip_slices = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    oriented = oriented[flip_slices]
    old = tuple(float(image.GetSpacing()[a]) for a in order)
    new = tuple(float(s) for s in spacing)
    # MONAI's np.round((n - 1) * old / new + 1): half to even, on the sum (a tie such as 38.5 -> 38)
    shape = tuple(int(np.round((n - 1) * o / s + 1.0)) for n, o, s in zip(oriented.shape, old, new))
    steps = [s / o for o, s in zip(old, new)]
    data = resample(np.asarray(oriented, dtype=np.float32), shape, steps)
    grid = GridMap(tuple(order), tuple(flips), old, tuple(oriented.shape), new, shape)  # type: ignore[arg-type]
    return data, grid


def from_model_grid(prediction: np.ndarray, grid: GridMap) -> np.ndarray:
    """Map a (C, X', Y', Z') prediction on the model grid back to the input's (C, x, y, z) voxels."""
    if prediction.ndim != 4 or tuple(prediction.shape[1:]) != grid.shape:
        raise ValueError(f"prediction must be (C, {', '.join(map(str, grid.shape))}), got {prediction.shape}")
    steps = [o / s for o, s in zip(grid.oriented_spacing, grid.spacing)]
    back = resample(prediction, grid.oriented_shape, steps)
    back = back[(slice(None),) + tuple(slice(None, None, -1) if f else slice(None) for f in grid.flips)]
    inverse = np.argsort(grid.order)
    return np.ascontiguousarray(back.transpose(0, *(1 + inverse)))


def normalize(array: np.ndarray, normalization: Mapping[str, Any]) -> np.ndarray:
    """The bundle's intensity normalisation (``zscore`` with optional percentile clip, or ``none``).

    Same rule as :func:`ProstateKDLib.preprocessing.normalize_intensity`: percentiles of a
    regular sub-sample, unbiased standard deviation.
    """
    name = normalization.get("name", "zscore")
    if name == "none":
        return array
    if name != "zscore":
        raise ValueError(f"unknown normalization {name!r}")
    data = array
    clip = normalization.get("clip_percentiles")
    if clip:
        flat = data.reshape(-1)
        sample = flat[:: max(1, flat.size // PERCENTILE_SAMPLE)]
        low, high = np.percentile(sample, [clip[0], clip[1]])
        data = np.clip(data, np.float32(low), np.float32(high))
    mean = data.mean(dtype=np.float64)
    std = data.std(dtype=np.float64, ddof=1) if data.size > 1 else 0.0
    return ((data - np.float32(mean)) / np.float32(std if std > 0 else 1.0)).astype(np.float32, copy=False)
