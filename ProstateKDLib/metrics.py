"""Segmentation metrics on the original image grid, in physical units.

Dice, 95th-percentile Hausdorff distance (HD95), average symmetric surface
distance (ASD) in mm and gland volume errors in ml and percent, for binary
masks given as SimpleITK images (spacing from the images) or numpy arrays plus
the spacing of each array axis. Non-zero voxels are foreground. The distances
are MONAI's (``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance(symmetric=True)``): distances between the
boundary voxels of the two masks (voxels with a face neighbour outside the
mask), HD95 the larger of the two directed 95th percentiles, ASD the mean over
the boundary voxels of both masks.

Empty masks are defined explicitly, never an exception:

* both empty: Dice 1, HD95 0, ASD 0, volume errors 0;
* one empty: Dice 0, HD95 and ASD are infinite and reported as NaN, with a note;
* reference empty: ``volume_error_pct`` is NaN, with a note.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

METRICS = ("dice", "hd95_mm", "asd_mm", "volume_ml", "volume_true_ml", "volume_error_ml", "volume_error_pct")
NOTE_BOTH_EMPTY = "prediction and reference both empty: Dice 1, distances 0, volume error 0"
NOTE_PREDICTION_EMPTY = "prediction empty: surface distances undefined (infinite), reported as NaN"
NOTE_REFERENCE_EMPTY = (
    "reference empty: surface distances undefined (infinite), reported as NaN; volume error % undefined"
)
_GRID_ATOL = 1e-4


@dataclass(frozen=True)
class SegmentationMetrics:
    """Metrics of one prediction against its reference (distances in mm, volumes in ml)."""

    dice: float
    hd95_mm: float
    asd_mm: float
    volume_ml: float
    volume_true_ml: float
    volume_error_ml: float
    volume_error_pct: float
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (metrics in :data:`METRICS` order, then ``note``)."""
        return asdict(self)


def _as_masks(prediction: Any, reference: Any, spacing: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Boolean arrays of the two masks and the spacing of each array axis."""
    import SimpleITK as sitk

    images = [m for m in (prediction, reference) if isinstance(m, sitk.Image)]
    for name, mask in (("prediction", prediction), ("reference", reference)):
        if not isinstance(mask, (sitk.Image, np.ndarray)):
            raise TypeError(f"{name} must be a SimpleITK.Image or numpy array, got {type(mask).__name__}")
    if images:
        if spacing is not None:
            raise ValueError("spacing is taken from the SimpleITK images; pass spacing only with numpy arrays")
        first = images[0]
        if len(images) == 2:
            a, b = images
            same = (
                a.GetSize() == b.GetSize()
                and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=_GRID_ATOL, atol=0)
                and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-3)
                and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=_GRID_ATOL)
            )
            if not same:
                raise ValueError("prediction and reference must share size, spacing, origin and direction")
        spacing = tuple(float(s) for s in reversed(first.GetSpacing()))  # array axes are (z, y, x)
        arrays = [sitk.GetArrayViewFromImage(m) if isinstance(m, sitk.Image) else m for m in (prediction, reference)]
    else:
        if spacing is None:
            raise ValueError("spacing (mm per array axis) is needed with numpy masks")
        arrays = [prediction, reference]
        spacing = tuple(float(s) for s in spacing)
    pred, ref = (np.asarray(a) != 0 for a in arrays)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred.shape} vs {ref.shape}")
    if pred.ndim not in (2, 3) or len(spacing) != pred.ndim:
        raise ValueError(f"need 2D or 3D masks with one spacing per axis, got shape {pred.shape} and spacing {spacing}")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return pred, ref, spacing


def _crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to their union's bounding box plus one voxel (distances unchanged)."""
    union = pred | ref
    slices = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        slices.append(slice(max(int(present[0]) - 1, 0), int(present[-1]) + 2))
    return pred[tuple(slices)], ref[tuple(slices)]


def _monai_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float, float]:
    """(Dice, HD95, ASD) with MONAI for two non-empty masks."""
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
    )

    pred, ref = _crop_to_union(pred, ref)
    y_pred = torch.from_numpy(np.ascontiguousarray(pred))[None, None].float()
    y = torch.from_numpy(np.ascontiguousarray(ref))[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = compute_dice(y_pred, y, include_background=True)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=list(spacing))
        asd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=list(spacing))
    return float(dice.item()), float(hd95.item()), float(asd.item())


def segmentation_metrics(
    prediction: Any, reference: Any, spacing: Sequence[float] | None = None
) -> SegmentationMetrics:
    """Dice, HD95 (mm), ASD (mm) and volume errors of ``prediction`` against ``reference``.

    Args:
        prediction: predicted mask, SimpleITK image or numpy array (non-zero = foreground).
        reference: reference mask on the same grid, same type.
        spacing: mm per array axis, only for numpy masks (for arrays from
            ``sitk.GetArrayFromImage`` that is the image spacing reversed).

    Returns:
        :class:`SegmentationMetrics`; ``volume_error_ml`` = predicted - reference,
        ``volume_error_pct`` = 100 * that / reference volume. See the module
        docstring for empty masks.

    Raises:
        TypeError, ValueError: masks of another type, shape or grid; missing or bad spacing.
    """
    pred, ref, spacing = _as_masks(prediction, reference, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volume, volume_true = float(pred.sum()) * voxel_ml, float(ref.sum()) * voxel_ml
    error = volume - volume_true
    percent = 100.0 * error / volume_true if volume_true > 0 else math.nan
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if has_pred and has_ref:
        dice, hd95, asd = _monai_metrics(pred, ref, spacing)
        note = ""
    elif not has_pred and not has_ref:
        dice, hd95, asd, percent, note = 1.0, 0.0, 0.0, 0.0, NOTE_BOTH_EMPTY
    else:
        dice, hd95, asd = 0.0, math.nan, math.nan
        note = NOTE_PREDICTION_EMPTY if has_ref else NOTE_REFERENCE_EMPTY
    return SegmentationMetrics(dice, hd95, asd, volume, volume_true, error, percent, note)
