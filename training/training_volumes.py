"""The volumes a training run holds in memory: image, label and any cached teacher maps, on the model grid.

A labelled case is read and preprocessed exactly as inference does
(:func:`ProstateKDLib.datasets.load_case`); an unlabelled image (``label`` None) gets an
all-zero label and is flagged unlabelled. Each external teacher's map of the case
(:mod:`training.external_teacher`) is resampled with the same spatial transform as the
image (linear interpolation) and stacked as one channel of ``teacher``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ProstateKDLib.errors import DataError


def load_training_volume(
    record: Any, orientation: str, spacing: Sequence[float], normalization: Mapping[str, Any],
    externals: Sequence[Any] = (),
) -> tuple[Any, ...]:
    """``(image, label)`` or ``(image, label, teacher)`` tensors on the model grid for one case.

    Args:
        record: a :class:`~ProstateKDLib.datasets.CaseRecord` (``label`` None: unlabelled).
        externals: :class:`~training.external_teacher.ExternalTeacher` folders whose maps to load.

    Raises:
        DataError: unreadable image or label, a missing map, or a map on another grid.
    """
    import torch

    from ProstateKDLib.datasets import load_case, read_image
    from ProstateKDLib.preprocessing import image_to_tensor, preprocess_image, spatial_transform

    if record.label is not None:
        image, label = load_case(record, orientation, spacing, normalization)
    else:
        tensor, _ = preprocess_image(read_image(record), orientation, spacing, normalization)
        image = torch.as_tensor(tensor.as_tensor(), dtype=torch.float32).contiguous()
        label = torch.zeros((1, *image.shape[1:]), dtype=torch.uint8)
    if not externals:
        return image, label
    reference = read_image(record)
    maps = []
    for external in externals:
        prob = external.read_map(record.case_id, reference)
        moved = spatial_transform(orientation, spacing)(image_to_tensor(prob))
        moved = torch.as_tensor(moved.as_tensor(), dtype=torch.float32).clamp(0.0, 1.0)
        if tuple(moved.shape[1:]) != tuple(image.shape[1:]):  # pragma: no cover - same transform, same grid
            raise DataError(f"case {record.case_id}: teacher map of {external.name!r} differs from the image in shape")
        maps.append(moved)
    return image, label, torch.cat(maps).contiguous()
