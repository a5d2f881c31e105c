"""Read a case's image and label, check them, and load them preprocessed as inference does.

Labels hold 0 = background and 1 or 2 (zones), both merged to 1 = gland. Every
problem with the data raises :class:`~ProstateKDLib.errors.DataError` naming the
case. Cases are preprocessed with exactly the functions inference uses
(:func:`~ProstateKDLib.preprocessing.preprocess_image`), so training and
inference see the same grid and intensities.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError, InputError
from .records import LABEL_VALUES, CaseRecord

_SPACING_RTOL = 1e-4
_ORIGIN_ATOL_MM = 1e-3
_DIRECTION_ATOL = 1e-4


def read_image(record: CaseRecord) -> Any:
    try:
        from ..image_io import read_volume
    except ImportError:  # pragma: no cover - image_io is part of the library
        read_volume = None
    import SimpleITK as sitk

    try:
        if read_volume is not None:
            return read_volume(record.image, channel=record.channel)
        return sitk.Cast(sitk.ReadImage(str(record.image)), sitk.sitkFloat32)
    except InputError as exc:
        raise DataError(f"case {record.case_id}: {exc}") from None
    except RuntimeError as exc:
        raise DataError(f"case {record.case_id}: cannot read image {record.image}: {_first_line(exc)}") from None


def read_label(record: CaseRecord) -> Any:
    import SimpleITK as sitk

    try:
        label = sitk.ReadImage(str(record.label))
    except RuntimeError as exc:
        raise DataError(f"case {record.case_id}: cannot read label {record.label}: {_first_line(exc)}") from None
    if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"case {record.case_id}: label must be a 3D scalar image")
    return label


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def check_geometry(record: CaseRecord, image: Any, label: Any) -> None:
    """Raise DataError unless image and label share size, spacing, origin and direction.

    Message: ``case <id>: image and label geometry differ (<what> <image> vs <label>)``.
    """
    problem = None
    if image.GetSize() != label.GetSize():
        problem = f"size {'x'.join(map(str, image.GetSize()))} vs {'x'.join(map(str, label.GetSize()))}"
    elif not np.allclose(image.GetSpacing(), label.GetSpacing(), rtol=_SPACING_RTOL, atol=0):
        problem = f"spacing {_fmt(image.GetSpacing())} vs {_fmt(label.GetSpacing())}"
    elif not np.allclose(image.GetOrigin(), label.GetOrigin(), rtol=0, atol=_ORIGIN_ATOL_MM):
        problem = f"origin {_fmt(image.GetOrigin())} vs {_fmt(label.GetOrigin())}"
    elif not np.allclose(image.GetDirection(), label.GetDirection(), rtol=0, atol=_DIRECTION_ATOL):
        problem = f"direction {_fmt(image.GetDirection())} vs {_fmt(label.GetDirection())}"
    if problem:
        raise DataError(f"case {record.case_id}: image and label geometry differ ({problem})")


def gland_mask(record: CaseRecord, label: Any) -> np.ndarray:
    """Label array (z, y, x) as uint8 0/1 (1 and 2 merged); DataError on other values.

    Message: ``case <id>: label values must be 0, 1 or 2, found 0, 1, 5``.
    """
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(label)
    values = np.unique(array)
    if not np.all(np.isin(values, LABEL_VALUES)):
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise DataError(f"case {record.case_id}: label values must be 0, 1 or 2, found {shown}")
    return (array > 0).astype(np.uint8)


def read_case(record: CaseRecord, keep_zones: bool = False) -> tuple[Any, Any]:
    """Read and check one case on its original grid, without resampling.

    Returns:
        ``(image, label)``: the float32 image (``record.channel`` selected) and a
        uint8 label with the image's geometry: 0/1 gland, or the zone values
        0/1/2 as stored when ``keep_zones`` is true.

    Raises:
        DataError: unreadable files, geometry mismatch or label values outside {0, 1, 2}
            (the messages of :func:`check_geometry` and :func:`gland_mask`).
    """
    import SimpleITK as sitk

    image = read_image(record)
    label = read_label(record)
    check_geometry(record, image, label)
    mask = gland_mask(record, label)
    if keep_zones:
        mask = sitk.GetArrayFromImage(label).astype(np.uint8)
    result = sitk.GetImageFromArray(mask)
    result.CopyInformation(image)
    return image, result


def check_case(record: CaseRecord) -> dict[str, Any]:
    """Read and check one case as training and evaluation will; a short summary of it.

    Returns:
        ``size``, ``spacing_mm``, ``label_values`` (values present) and ``gland_ml``.

    Raises:
        DataError: as :func:`read_case`.
    """
    import SimpleITK as sitk

    image, label = read_case(record, keep_zones=True)
    array = sitk.GetArrayViewFromImage(label)
    spacing = image.GetSpacing()
    return {
        "size": list(image.GetSize()),
        "spacing_mm": [float(v) for v in spacing],
        "label_values": [int(v) for v in np.unique(array)],
        "gland_ml": float(np.count_nonzero(array)) * float(np.prod(spacing)) / 1000.0,
    }


def load_case(
    record: CaseRecord, orientation: str, spacing: Sequence[float], normalization: Mapping[str, Any]
) -> tuple[Any, Any]:
    """Read and preprocess one case exactly as inference does.

    Returns:
        ``(image, label)``: float32 tensor (C, X, Y, Z), normalised (C = 1, or
        ``len(record.channels)`` with each channel normalised on its own), and uint8
        tensor (1, X, Y, Z) in {0, 1}, both on the model grid (plain tensors).

    Raises:
        DataError: unreadable files, geometry mismatch or label values outside {0, 1, 2}.
    """
    import SimpleITK as sitk
    import torch

    from ..preprocessing import preprocess_image, preprocess_label

    parts = [replace(record, channel=c, channels=None) for c in record.channels] if record.channels else [record]
    label = read_label(record)
    tensors = []
    for part in parts:
        image = read_image(part)
        check_geometry(part, image, label)
        tensor, _ = preprocess_image(image, orientation, spacing, normalization)
        tensors.append(torch.as_tensor(tensor.as_tensor(), dtype=torch.float32))
    mask = sitk.GetImageFromArray(gland_mask(record, label))
    mask.CopyInformation(image)
    target = preprocess_label(mask, orientation, spacing)
    if tuple(tensors[0].shape) != tuple(target.shape):  # pragma: no cover - same transform on same grid
        raise DataError(f"case {record.case_id}: preprocessed image and label differ in shape")
    image_t = torch.cat(tensors).contiguous()
    label_t = (torch.as_tensor(target.as_tensor()) > 0.5).to(torch.uint8).contiguous()
    return image_t, label_t
