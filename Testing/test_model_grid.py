"""The numpy model grid equals MONAI's Orientation + Spacing + normalisation and their inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ProstateKDLib.image_io import read_volume
from ProstateKDLib.model_grid import from_model_grid, normalize, orientation_axes, to_model_grid
from ProstateKDLib.preprocessing import invert_prediction, normalize_intensity, preprocess_image

from conftest import oblique_direction

NORM = {"name": "zscore", "clip_percentiles": [0.5, 99.5]}


def _compare(image, orientation="RAS", spacing=(0.8, 0.8, 3.0)):
    array, grid = to_model_grid(image, orientation, spacing)
    array = normalize(array, NORM)
    tensor, transform = preprocess_image(image, orientation, spacing, NORM)
    expected = tensor.as_tensor()[0].numpy()
    assert array.shape == expected.shape == grid.shape
    np.testing.assert_allclose(array, expected, atol=2e-3)
    # two-channel "probabilities" mapped back to the input grid
    prediction = np.stack([1 - expected / 10, expected / 10]).astype(np.float32)
    back = from_model_grid(prediction, grid)
    monai_back = invert_prediction(torch.from_numpy(prediction), tensor, transform).as_tensor().numpy()
    assert back.shape == monai_back.shape == (2, *image.GetSize())
    np.testing.assert_allclose(back, monai_back, atol=1e-4)


@pytest.mark.parametrize("direction", [
    oblique_direction(), np.eye(3), np.diag([-1.0, 1.0, -1.0]), oblique_direction(35, (1, 0, 0)),
    np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),  # sagittal-like: voxel axes permuted
])
def test_matches_monai_on_oblique_permuted_volumes(make_volume, direction):
    _compare(make_volume(direction=direction, size=(50, 44, 11)))


@pytest.mark.parametrize("orientation,spacing", [("LPS", (1.0, 0.7, 2.0)), ("RAS", (0.3, 0.3, 1.5))])
def test_matches_monai_for_other_grids(make_volume, orientation, spacing):
    _compare(make_volume(size=(40, 36, 10)), orientation, spacing)


def test_matches_monai_on_real_mri(shared_data):
    """PROMISE12 HK Case17 (160x160x20, upsampled to the model grid) and the oblique ProstateX T2."""
    _compare(read_volume(shared_data / "promise12" / "HK" / "Case17.nii.gz"))
    _compare(read_volume(shared_data / "dicom" / "ProstateX-0000" / "07-07-2011" / "4.000000-t2tsetra-00702"))


def test_normalize_matches_normalize_intensity():
    rng = np.random.default_rng(1)
    data = rng.gamma(2.0, 50.0, size=(37, 29, 11)).astype(np.float32)
    for norm in (NORM, {"name": "zscore"}, {"name": "none"}):
        expected = normalize_intensity(torch.from_numpy(data.copy()), norm).numpy()
        np.testing.assert_allclose(normalize(data.copy(), norm), expected, atol=1e-4)
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize(data, {"name": "minmax"})


def test_orientation_rejects_bad_codes():
    with pytest.raises(ValueError, match="three axis codes"):
        orientation_axes(np.eye(3).ravel(), "RAR")


def test_from_model_grid_checks_the_shape(make_volume):
    _, grid = to_model_grid(make_volume(), "RAS", (1.0, 1.0, 3.0))
    with pytest.raises(ValueError, match="prediction must be"):
        from_model_grid(np.zeros((2, 3, 3, 3), np.float32), grid)
