"""keep_largest_component (SimpleITK) keeps the same component as scipy.ndimage.label with 26-connectivity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ProstateKDLib.postprocessing import keep_largest_component


def scipy_largest(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    for value in np.unique(mask):
        if value == 0:
            continue
        components, count = ndimage.label(mask == value, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        out[components == int(sizes.argmax())] = value
    return out


@pytest.mark.parametrize("seed", range(40))
def test_same_as_scipy_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 12, size=3))
    mask = (rng.random(shape) < rng.uniform(0.05, 0.4)).astype(np.uint8) * rng.integers(1, 3, shape).astype(np.uint8)
    np.testing.assert_array_equal(keep_largest_component(mask), scipy_largest(mask))


def test_diagonal_neighbours_connect_and_empty_stays_empty():
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = mask[3, 3, 3] = 1  # one 26-connected chain
    mask[0, 4, 4] = mask[0, 4, 3] = 1  # a 2-voxel component
    kept = keep_largest_component(mask)
    assert kept.sum() == 3 and kept[0, 4, 4] == 0
    assert not keep_largest_component(np.zeros((4, 4, 4), np.uint8)).any()
    with pytest.raises(ValueError, match="mask must be 3D"):
        keep_largest_component(np.zeros((4, 4), np.uint8))
