"""Preprocessing: RAS/LPS conversion, resampling to the model grid and back."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ProstateKDLib.preprocessing import (
    LPS_TO_RAS,
    image_to_tensor,
    invert_prediction,
    lps_affine,
    normalize_intensity,
    preprocess_image,
    preprocess_label,
)

from conftest import oblique_direction


def _grid_image(tensor) -> sitk.Image:
    """A SimpleITK image with the grid (RAS affine) of a MONAI (1, X, Y, Z) tensor."""
    lps = LPS_TO_RAS @ tensor.affine.numpy()
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.Image([int(s) for s in tensor.shape[1:]], sitk.sitkFloat32)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def test_tensor_affine_is_ras_of_sitk_geometry(make_volume):
    image = make_volume()
    tensor = image_to_tensor(image)
    assert tensor.shape == (1,) + image.GetSize()
    # voxel (i, j, k) maps to the same physical point, in RAS, as SimpleITK says in LPS
    ijk = (5, 7, 3)
    lps_point = np.array(image.TransformIndexToPhysicalPoint(ijk))
    ras_point = tensor.affine.numpy() @ np.array([*ijk, 1.0])
    np.testing.assert_allclose(ras_point[:3], lps_point * [-1, -1, 1], atol=1e-6)
    assert float(tensor[0, 5, 7, 3]) == pytest.approx(image[ijk])


@pytest.mark.parametrize("direction", [None, np.eye(3), np.diag([-1.0, -1.0, 1.0])])
def test_resampled_voxels_sit_where_simpleitk_puts_them(make_volume, direction):
    """MONAI's model-grid image equals SimpleITK's resampling onto that grid."""
    image = make_volume(direction=direction)
    tensor, _ = preprocess_image(image, "RAS", (0.8, 0.8, 2.0), {"name": "none"})
    reference = sitk.Resample(image, _grid_image(tensor), sitk.Transform(), sitk.sitkLinear, 0.0)
    expected = sitk.GetArrayFromImage(reference).transpose(2, 1, 0)
    inside = expected > 0  # ignore the padded border
    assert inside.mean() > 0.5
    corr = np.corrcoef(expected[inside], tensor[0].numpy()[inside])[0, 1]
    assert corr > 0.99


def test_prediction_maps_back_to_the_input_voxels(make_volume):
    image = make_volume(seed=3)
    truth = sitk.GetArrayFromImage(image) > 200
    tensor, transform = preprocess_image(image, "RAS", (1.0, 1.0, 3.0), {"name": "zscore"})
    foreground = (tensor[0] > 0.5).float()
    probabilities = torch.stack([1 - foreground, foreground])
    back = invert_prediction(probabilities, tensor, transform)
    assert tuple(back.shape[1:]) == image.GetSize()
    mask = back.argmax(0).numpy().transpose(2, 1, 0).astype(bool)
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.9


def test_label_preprocessing_is_nearest(make_volume):
    image = make_volume()
    label = sitk.Cast(image > 200, sitk.sitkUInt8)
    out = preprocess_label(label, "RAS", (1.0, 1.0, 3.0))
    assert set(np.unique(out.numpy())) <= {0.0, 1.0}


def test_zscore_normalisation():
    data = torch.arange(1000, dtype=torch.float32).reshape(1, 10, 10, 10)
    out = normalize_intensity(data, {"name": "zscore"})
    assert float(out.mean()) == pytest.approx(0, abs=1e-5)
    assert float(out.std()) == pytest.approx(1, abs=1e-4)
    clipped = normalize_intensity(data, {"name": "zscore", "clip_percentiles": [10, 90]})
    assert float(clipped.min()) == pytest.approx(float(clipped[0, 0, 0, 0]))
    with pytest.raises(ValueError, match="unknown normalization 'minmax'"):
        normalize_intensity(data, {"name": "minmax"})


def test_lps_affine():
    image = sitk.Image(4, 5, 6, sitk.sitkFloat32)
    image.SetSpacing((0.5, 0.6, 3.0))
    image.SetDirection(oblique_direction().ravel().tolist())
    image.SetOrigin((1, 2, 3))
    affine = lps_affine(image)
    np.testing.assert_allclose(affine @ [1, 2, 3, 1], [*image.TransformIndexToPhysicalPoint((1, 2, 3)), 1])
