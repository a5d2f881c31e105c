"""The numpy sliding window equals MONAI's SlidingWindowInferer; the whole-volume pass pads and crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import SlidingWindowInferer

from ProstateKDLib.networks import build_network
from ProstateKDLib.window_inference import (
    count_windows,
    importance_map,
    sliding_window_logits,
    whole_volume_logits,
    whole_volume_shape,
)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return build_network("unet", {"in_channels": 1, "out_channels": 2, "channels": [4, 8, 16],
                                  "strides": [2, 2], "num_res_units": 0}).eval()


def _numpy(network):
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(batch)).numpy()
    return run


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_importance_map_matches_monai(mode):
    expected = compute_importance_map((32, 24, 8), mode=mode).numpy()
    np.testing.assert_allclose(importance_map((32, 24, 8), mode), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,overlap,batch,mode", [
    ((70, 52, 19), 0.25, 1, "gaussian"),
    ((70, 52, 19), 0.5, 2, "gaussian"),
    ((20, 40, 6), 0.25, 3, "constant"),  # smaller than the window on two axes: replicate padding
])
def test_sliding_window_matches_monai(network, shape, overlap, batch, mode):
    roi = (32, 32, 8)
    image = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    calls = []
    ours = sliding_window_logits(image, _numpy(network), roi, overlap, mode, batch, step=lambda d, t: calls.append(t))
    inferer = SlidingWindowInferer(roi, sw_batch_size=batch, overlap=overlap, mode=mode, padding_mode="replicate")
    with torch.inference_mode():
        expected = inferer(torch.from_numpy(image[None]), network)[0].numpy()
    assert ours.shape == expected.shape == (2, *shape)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert len(calls) == -(-count_windows(shape, roi, overlap) // batch)


def test_whole_volume_pads_to_the_divisor_and_crops_back(network):
    shape = (45, 37, 9)
    assert whole_volume_shape(shape, (32, 32, 8), (4, 4, 4)) == (48, 40, 12)
    assert whole_volume_shape((20, 20, 4), (32, 32, 8), (4, 4, 4)) == (32, 32, 8)
    seen = []

    def run(batch):
        seen.append(batch.shape)
        return _numpy(network)(batch)

    image = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    logits = whole_volume_logits(image, run, (32, 32, 8), (4, 4, 4))
    assert seen == [(1, 1, 48, 40, 12)] and logits.shape == (2, *shape)


def test_one_window_and_whole_volume_agree(network):
    """A volume that one window covers: the whole-volume pass and the sliding window are the same pass."""
    image = np.random.default_rng(2).standard_normal((1, 30, 27, 7)).astype(np.float32)
    whole = whole_volume_logits(image, _numpy(network), (32, 32, 8), (4, 4, 4))
    sliding = sliding_window_logits(image, _numpy(network), (32, 32, 8), 0.25)
    np.testing.assert_allclose(whole, sliding, atol=1e-5)


def test_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_logits(np.zeros((1, 8, 8, 8), np.float32), lambda b: b, (8, 8, 8), 1.0)
