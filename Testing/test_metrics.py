"""Segmentation metrics against hand-computed values (anisotropic spacing, empty masks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.metrics import (
    METRICS,
    NOTE_BOTH_EMPTY,
    NOTE_PREDICTION_EMPTY,
    NOTE_REFERENCE_EMPTY,
    segmentation_metrics,
)

SPACING = (3.0, 0.5, 0.8)  # mm per array axis


def slab_pair(offset_axis: int, thin_axis: int, shift: int = 3, length: int = 10):
    """Two boxes, 2 voxels thin along ``thin_axis`` (every voxel is a boundary voxel),
    ``length`` long along ``offset_axis``, the second shifted by ``shift`` voxels along it.

    Every boundary voxel's nearest boundary voxel of the other box lies on the same
    line along ``offset_axis``, so per direction the distances are 0 for
    ``length - shift`` of the ``length`` positions and ``d * spacing`` for d = 1..shift.
    """
    shape, box = [16, 16, 16], [slice(4, 10)] * 3
    shape[offset_axis] = length + shift + 4
    box[thin_axis] = slice(4, 6)
    reference = np.zeros(shape, bool)
    prediction = np.zeros(shape, bool)
    ref_box, pred_box = list(box), list(box)
    ref_box[offset_axis] = slice(2, 2 + length)
    pred_box[offset_axis] = slice(2 + shift, 2 + shift + length)
    reference[tuple(ref_box)] = True
    prediction[tuple(pred_box)] = True
    return prediction, reference


@pytest.mark.parametrize("offset_axis,thin_axis", [(1, 0), (0, 2), (2, 1)])
def test_shifted_boxes_hand_computed(offset_axis, thin_axis):
    prediction, reference = slab_pair(offset_axis, thin_axis)
    step = SPACING[offset_axis]
    m = segmentation_metrics(prediction, reference, SPACING)
    assert m.dice == pytest.approx(0.7, abs=1e-6)  # 7 of 10 positions overlap
    # distances per direction: 7 x 0, 1 x step, 1 x 2 step, 1 x 3 step (each a whole column)
    assert m.hd95_mm == pytest.approx(3 * step, abs=1e-5)  # 95th percentile falls in the last 10 %
    assert m.asd_mm == pytest.approx(step * (1 + 2 + 3) / 10, abs=1e-5)
    voxel_ml = np.prod(SPACING) / 1000
    assert m.volume_ml == pytest.approx(reference.sum() * voxel_ml)
    assert m.volume_error_ml == pytest.approx(0.0) and m.volume_error_pct == pytest.approx(0.0)
    assert m.note == ""


def test_solid_cubes_dice_and_volume_error():
    reference = np.zeros((20, 20, 20), np.uint8)
    reference[3:13, 3:13, 3:13] = 1
    prediction = np.zeros_like(reference)
    prediction[5:17, 3:13, 3:13] = 2  # any non-zero value is foreground; 12 slices vs 10
    m = segmentation_metrics(prediction, reference, SPACING)
    overlap, sizes = 8 * 100, (1200, 1000)
    assert m.dice == pytest.approx(2 * overlap / sum(sizes), abs=1e-6)
    voxel_ml = np.prod(SPACING) / 1000
    assert m.volume_true_ml == pytest.approx(1000 * voxel_ml)
    assert m.volume_error_ml == pytest.approx(200 * voxel_ml)
    assert m.volume_error_pct == pytest.approx(20.0)
    assert m.hd95_mm >= 0 and m.asd_mm >= 0
    assert list(m.as_dict())[: len(METRICS)] == list(METRICS)


def test_sitk_images_use_their_spacing_reversed():
    prediction, reference = slab_pair(offset_axis=1, thin_axis=0)  # array axis 1 = image y
    images = []
    for array in (prediction, reference):
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.SetSpacing(tuple(reversed(SPACING)))
        image.SetOrigin((1.0, 2.0, 3.0))
        images.append(image)
    m = segmentation_metrics(*images)
    assert m.hd95_mm == pytest.approx(3 * SPACING[1], abs=1e-5)
    other = sitk.Image(images[1])
    other.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="must share size, spacing, origin and direction"):
        segmentation_metrics(images[0], other)
    with pytest.raises(ValueError, match="spacing is taken from the SimpleITK images"):
        segmentation_metrics(*images, spacing=SPACING)


def test_empty_masks_are_defined():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:5, 2:5, 2:5] = True
    empty = np.zeros_like(mask)
    both = segmentation_metrics(empty, empty, SPACING)
    assert (both.dice, both.hd95_mm, both.asd_mm, both.volume_error_pct) == (1.0, 0.0, 0.0, 0.0)
    assert both.note == NOTE_BOTH_EMPTY
    missed = segmentation_metrics(empty, mask, SPACING)
    assert missed.dice == 0.0 and math.isnan(missed.hd95_mm) and math.isnan(missed.asd_mm)
    assert missed.volume_error_pct == pytest.approx(-100.0) and missed.note == NOTE_PREDICTION_EMPTY
    spurious = segmentation_metrics(mask, empty, SPACING)
    assert spurious.dice == 0.0 and math.isnan(spurious.hd95_mm) and math.isnan(spurious.volume_error_pct)
    assert spurious.note == NOTE_REFERENCE_EMPTY


def test_argument_checks():
    mask = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(mask, mask)
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_metrics(mask, np.ones((4, 4, 5), bool), SPACING)
    with pytest.raises(ValueError, match="positive and finite"):
        segmentation_metrics(mask, mask, (1.0, 0.0, 1.0))
    with pytest.raises(TypeError, match="numpy array"):
        segmentation_metrics([[1]], mask, SPACING)
