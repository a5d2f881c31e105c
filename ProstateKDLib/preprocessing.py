"""Preprocessing shared by inference and training, with MONAI transforms.

SimpleITK images (LPS world) become MONAI ``MetaTensor`` s (RAS affine), are
reoriented to the model's axis codes and resampled to its spacing
(``Orientation`` + ``Spacing``, invertible), and intensity-normalised. The
prediction is mapped back to the input grid with the inverse of the same
spatial transforms, so the mask lands exactly on the input voxels.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
PERCENTILE_SAMPLE = 200_000


def lps_affine(image: Any) -> np.ndarray:
    """4x4 voxel (i, j, k) -> LPS mm affine of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return affine


def image_to_tensor(image: Any) -> Any:
    """SimpleITK 3D image -> ``MetaTensor`` of shape (1, X, Y, Z) with a RAS affine."""
    import SimpleITK as sitk
    import torch
    from monai.data import MetaTensor

    array = sitk.GetArrayViewFromImage(image)  # (z, y, x)
    data = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32))
    affine = torch.as_tensor(LPS_TO_RAS @ lps_affine(image), dtype=torch.float64)
    return MetaTensor(data[None], affine=affine)


def spatial_transform(orientation: str, spacing: Sequence[float], mode: str = "bilinear") -> Any:
    """Invertible ``Orientation`` + ``Spacing`` to the model's axis codes and voxel size."""
    import torch
    from monai.transforms import Compose, Orientation, Spacing

    return Compose(
        [
            Orientation(axcodes=orientation, labels=None),
            # float32 resampling: half the memory of MONAI's float64 default, and
            # differences far below the intensity noise of an MRI.
            Spacing(
                pixdim=tuple(float(s) for s in spacing),
                mode=mode,
                padding_mode="border",
                dtype=torch.float32,
            ),
        ]
    )


def normalize_intensity(tensor: Any, normalization: Mapping[str, Any]) -> Any:
    """Apply the bundle's intensity normalisation (``zscore`` with optional percentile clip)."""
    import torch

    name = normalization.get("name", "zscore")
    if name == "none":
        return tensor
    if name != "zscore":
        raise ValueError(f"unknown normalization {name!r}")
    data = tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor
    clip = normalization.get("clip_percentiles")
    if clip:
        # Percentiles of a regular sub-sample (about 200k voxels) are as good as
        # those of the whole volume for clipping, and ten times cheaper.
        flat = data.reshape(-1)
        sample = flat[:: max(1, flat.numel() // PERCENTILE_SAMPLE)].float().cpu().numpy()
        low, high = np.percentile(sample, [clip[0], clip[1]])
        data = data.clamp(float(low), float(high))
    mean, std = data.mean(), data.std()
    out = (data - mean) / (std if std > 0 else 1.0)
    if hasattr(tensor, "as_tensor"):
        tensor = tensor.clone()
        tensor.set_array(out)
        return tensor
    return out


def preprocess_image(
    image: Any, orientation: str, spacing: Sequence[float], normalization: Mapping[str, Any]
) -> tuple[Any, Any]:
    """Input image -> (normalised tensor on the model grid, spatial transform to invert).

    Returns:
        ``(tensor, transform)``: a (1, X, Y, Z) ``MetaTensor`` carrying its applied
        operations, and the transform whose inverse maps predictions back.
    """
    transform = spatial_transform(orientation, spacing)
    tensor = transform(image_to_tensor(image))
    return normalize_intensity(tensor, normalization), transform


def preprocess_label(label: Any, orientation: str, spacing: Sequence[float]) -> Any:
    """Label image -> (1, X, Y, Z) tensor on the model grid (nearest-neighbour)."""
    return spatial_transform(orientation, spacing, mode="nearest")(image_to_tensor(label))


def invert_prediction(prediction: Any, reference: Any, transform: Any) -> Any:
    """Map a (C, X', Y', Z') prediction on the model grid back to the input grid.

    Args:
        prediction: network output (probabilities) on the grid of ``reference``.
        reference: the preprocessed ``MetaTensor`` the prediction was made from.
        transform: the spatial transform returned by :func:`preprocess_image`.
    """
    from monai.data import MetaTensor

    pred = MetaTensor(
        prediction.as_tensor() if hasattr(prediction, "as_tensor") else prediction,
        meta=dict(reference.meta),
        applied_operations=list(reference.applied_operations),
    )
    return transform.inverse(pred)
