"""Post-processing of a predicted gland mask and its plausibility checks."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest 3D connected component (26-connectivity) of each label.

    Uses SimpleITK's ``ConnectedComponent`` (fully connected) and
    ``RelabelComponent`` (largest first): the same components as
    ``scipy.ndimage.label`` with a 3x3x3 structure, without importing scipy
    (0.2 s of a segmentation command). An empty mask stays empty.
    """
    import SimpleITK as sitk

    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D, got shape {mask.shape}")
    out = np.zeros_like(mask)
    for value in np.unique(mask):
        if value == 0:
            continue
        binary = sitk.GetImageFromArray((mask == value).astype(np.uint8))
        ranked = sitk.RelabelComponent(sitk.ConnectedComponent(binary, True), sortByObjectSize=True)
        out[sitk.GetArrayViewFromImage(ranked) == 1] = value
    return out


def mask_volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume in millilitres of the non-zero voxels of ``mask`` with voxel ``spacing`` in mm."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0


def plausibility_warnings(
    mask: np.ndarray, spacing: Sequence[float], volume_ml_range: Sequence[float] = (5.0, 250.0)
) -> list[str]:
    """Warnings for a gland mask a reader should double-check.

    Flags an empty mask, a volume outside ``volume_ml_range`` and a mask that
    touches the volume border (the gland may be cut off by the field of view).
    """
    low, high = volume_ml_range
    volume = mask_volume_ml(mask, spacing)
    if volume == 0:
        return ["no prostate found: the mask is empty"]
    warnings = []
    if volume < low:
        warnings.append(f"gland volume {volume:.1f} ml is below the plausible range {low:g}-{high:g} ml")
    elif volume > high:
        warnings.append(f"gland volume {volume:.1f} ml is above the plausible range {low:g}-{high:g} ml")
    touched = _touched_borders(mask)
    if touched:
        warnings.append(f"mask touches the volume border ({', '.join(touched)}): the gland may be cut off")
    return warnings


def _touched_borders(mask: np.ndarray) -> list[str]:
    """Names of the array faces (in SimpleITK k, j, i order) that hold mask voxels."""
    names = (("first slice", "last slice"), ("first row", "last row"), ("first column", "last column"))
    touched = []
    for axis, (low_name, high_name) in enumerate(names):
        if mask.shape[axis] < 2:
            continue
        if np.take(mask, 0, axis=axis).any():
            touched.append(low_name)
        if np.take(mask, -1, axis=axis).any():
            touched.append(high_name)
    return touched

