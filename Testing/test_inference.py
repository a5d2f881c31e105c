"""Segmenter: the mask lands on the input grid, post-processing and plausibility."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.errors import CancelledError, DeviceError
from ProstateKDLib.inference import Segmenter, count_windows
from ProstateKDLib.postprocessing import keep_largest_component, plausibility_warnings

from conftest import assert_same_geometry, oblique_direction


@pytest.fixture(scope="module")
def segmenter(tiny_bundle):
    return Segmenter(tiny_bundle, device="cpu", num_threads=2)


@pytest.mark.parametrize(
    "direction", [oblique_direction(), np.eye(3), np.diag([-1.0, 1.0, -1.0]), oblique_direction(35, (1, 0, 0))]
)
def test_mask_has_the_input_grid(segmenter, make_volume, direction):
    image = make_volume(direction=direction, size=(50, 44, 11))
    result = segmenter.segment(image)
    assert_same_geometry(result.mask, image, tol=0)
    assert result.mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(result.mask))) <= {0, 1}
    assert set(result.timings) == {"preprocess", "network", "postprocess"}
    assert result.device == "cpu"
    assert result.model == "tiny-test-model 0.0.1"


def test_progress_and_cancel(segmenter, make_volume):
    image = make_volume(size=(80, 80, 12))
    seen = []
    segmenter.segment(image, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert any(m.startswith("network: window batch") for _, m in seen)
    with pytest.raises(CancelledError, match="segmentation cancelled"):
        segmenter.segment(image, cancelled=lambda: True)


def test_count_windows_matches_monai():
    from monai.inferers import SlidingWindowInferer
    import torch

    calls = []

    def network(x):
        calls.append(x.shape[0])
        return x

    for shape in [(240, 240, 29), (32, 32, 16), (100, 31, 40)]:
        calls.clear()
        SlidingWindowInferer((128, 128, 32) if shape[0] > 100 else (32, 32, 16), sw_batch_size=1, overlap=0.25)(
            torch.zeros(1, 1, *shape), network
        )
        roi = (128, 128, 32) if shape[0] > 100 else (32, 32, 16)
        assert count_windows(shape, roi, 0.25) == len(calls)


def test_unknown_device_is_refused(tiny_bundle):
    with pytest.raises(DeviceError) as info:
        Segmenter(tiny_bundle, device="tpu")
    assert str(info.value) == "unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"


def test_unavailable_cuda_is_explained(tiny_bundle):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(DeviceError) as info:
        Segmenter(tiny_bundle, device="cuda:1")
    assert str(info.value) == (
        "device cuda:1 is not available: this torch has no usable CUDA (available: cpu)"
    )


def test_keep_largest_component():
    mask = np.zeros((10, 20, 20), np.uint8)
    mask[2:8, 2:10, 2:10] = 1
    mask[2:4, 15:18, 15:18] = 1
    out = keep_largest_component(mask)
    assert out.sum() == 6 * 8 * 8
    assert keep_largest_component(np.zeros_like(mask)).sum() == 0


def test_plausibility_warnings():
    spacing = (1.0, 1.0, 1.0)  # mm, so 1000 voxels = 1 ml
    mask = np.zeros((40, 40, 40), np.uint8)
    assert plausibility_warnings(mask, spacing) == ["no prostate found: the mask is empty"]
    mask[10:30, 10:30, 10:30] = 1  # 8 ml, inside
    assert plausibility_warnings(mask, spacing) == []
    assert plausibility_warnings(mask, spacing, (10, 250)) == [
        "gland volume 8.0 ml is below the plausible range 10-250 ml"
    ]
    mask[:, 10:30, 10:30] = 1  # touches the first and last slices
    assert plausibility_warnings(mask, spacing) == [
        "mask touches the volume border (first slice, last slice): the gland may be cut off"
    ]
