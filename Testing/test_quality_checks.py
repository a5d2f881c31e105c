"""Output-quality and not-a-T2 checks (issue 15, items 8 and 9): real PROMISE12 data and built failures."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.errors import BundleError
from ProstateKDLib.quality_checks import (
    MAX_CENTRE_OFFSET,
    MIN_COMPACTNESS,
    QualityThresholds,
    foreground_margin,
    input_measures,
    mask_measures,
    quality_warnings,
    thresholds_from_model,
)

REAL_CASES = ("BIDMC/Case04", "HK/Case17", "RUNMC/Case38", "UCL/Case26")  # one per (inferred) site


def _checks(warnings):
    return sorted(w.split("[check: ")[1].split(" ")[0] for w in warnings)


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_t2_and_its_expert_mask_pass_every_check(shared_data, case):
    image = sitk.ReadImage(str(shared_data / "promise12" / f"{case}.nii.gz"))
    expert = sitk.ReadImage(str(shared_data / "promise12" / f"{case}_segmentation.nii.gz"))
    measures = {**input_measures(sitk.GetArrayFromImage(image)),
                **mask_measures(sitk.GetArrayFromImage(expert), expert.GetSpacing())}
    assert quality_warnings(measures) == [], measures
    assert measures["centre_offset"] < MAX_CENTRE_OFFSET - 0.05 and measures["compactness"] > MIN_COMPACTNESS + 0.05

    as_input = input_measures(sitk.GetArrayFromImage(expert).astype(np.float32))  # the mask given as the image
    assert _checks(quality_warnings(as_input)) == ["distinct-values"]
    noise = np.random.default_rng(0).normal(300, 100, sitk.GetArrayFromImage(image).shape)
    assert _checks(quality_warnings(input_measures(noise))) == ["neighbour-correlation"]


def test_an_off_centre_or_scattered_mask_is_flagged(shared_data):
    expert = sitk.ReadImage(str(shared_data / "promise12" / "RUNMC/Case38_segmentation.nii.gz"))
    mask = sitk.GetArrayFromImage(expert)
    shift = mask.shape[2] // 3
    moved = np.zeros_like(mask)
    moved[:, :, shift:] = mask[:, :, : mask.shape[2] - shift]  # the same gland shape, a third of the FOV aside
    assert _checks(quality_warnings(mask_measures(moved, expert.GetSpacing()))) == ["centre-offset"]
    scattered = mask.copy()
    scattered[:, ::2, :] = 0  # every second row gone: a comb, not a gland
    assert _checks(quality_warnings(mask_measures(scattered, expert.GetSpacing()))) == ["compactness"]


def test_foreground_margin_measures_the_model_s_certainty():
    confident = np.zeros((2, 8, 8, 8), np.float32)
    confident[1, 2:6, 2:6, 2:6] = 0.98
    confident[0] = 1 - confident[1]
    assert foreground_margin(confident) == pytest.approx(0.96, abs=1e-4)
    unsure = confident.copy()
    unsure[1][unsure[1] > 0] = 0.6
    unsure[0] = 1 - unsure[1]
    assert foreground_margin(unsure) == pytest.approx(0.2, abs=1e-4)
    assert _checks(quality_warnings({"foreground_margin": foreground_margin(unsure)})) == ["foreground-margin"]
    assert np.isnan(foreground_margin(np.stack([np.ones((4, 4, 4)), np.zeros((4, 4, 4))])))
    assert quality_warnings({"foreground_margin": float("nan"), "compactness": float("nan")}) == []


def test_thresholds_come_from_model_json(model_json):
    assert thresholds_from_model(model_json) == QualityThresholds()
    model_json["postprocessing"]["quality_checks"] = {"min_foreground_margin": 0.7, "min_distinct_values": 10}
    thresholds = thresholds_from_model(model_json)
    assert thresholds.min_foreground_margin == 0.7 and thresholds.min_distinct_values == 10
    assert _checks(quality_warnings({"foreground_margin": 0.65}, thresholds)) == ["foreground-margin"]
    model_json["postprocessing"]["quality_checks"] = {"margin": 0.7}
    with pytest.raises(BundleError, match=r"postprocessing.quality_checks.margin is unknown \(known: "):
        thresholds_from_model(model_json)
    model_json["postprocessing"]["quality_checks"] = {"max_centre_offset": "far"}
    with pytest.raises(BundleError, match="must be a number, got 'far'"):
        thresholds_from_model(model_json)


def test_flip_agreement_and_its_left_right_axis(make_volume):
    from ProstateKDLib.quality_checks import flip_agreement, left_right_axis

    assert left_right_axis(np.eye(3).ravel()) == 2  # x (numpy axis 2) is L-R in LPS
    assert left_right_axis(np.eye(3)[:, [1, 0, 2]].ravel()) == 1  # axes swapped: j is L-R
    image = make_volume(direction=np.eye(3))
    array = sitk.GetArrayFromImage(image)
    symmetric = (array > 200).astype(np.uint8)

    def threshold(im):  # a "model" that only looks at intensities: agrees with itself
        return sitk.GetImageFromArray((sitk.GetArrayFromImage(im) > 200).astype(np.uint8))

    assert flip_agreement(threshold, image, symmetric) > 0.95

    def left_half(im):  # a "model" that always answers on the same side: disagrees under a flip
        out = np.zeros(array.shape, np.uint8)
        out[:, :, : array.shape[2] // 2] = 1
        return sitk.GetImageFromArray(out)

    mask = sitk.GetArrayFromImage(left_half(image))
    agreement = flip_agreement(left_half, image, mask)
    assert agreement == 0.0
    assert _checks(quality_warnings({"flip_agreement": agreement})) == ["flip-agreement"]


def test_real_dicom_t2_series_pass_the_input_checks(shared_data):
    from ProstateKDLib.image_io import read_volume

    series = sorted(shared_data.glob("dicom/ProstateX-*/*/*t2tsetra*"))
    assert len(series) == 3
    for folder in series:
        image = read_volume(folder)  # kept alive: an array view does not own the image's buffer
        measures = input_measures(sitk.GetArrayViewFromImage(image))
        assert quality_warnings(measures) == [], (folder, measures)
