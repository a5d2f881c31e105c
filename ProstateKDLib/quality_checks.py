"""Checks that a segmentation can be trusted: does the input look like a T2 MRI, is the answer confident?

A network always answers. These checks look for the two ways that answer can
be confidently wrong, independent of which model gave it:

- the **input** does not look like a T2-weighted MRI: a label map (a handful of
  distinct values) or noise (neighbouring voxels unrelated);
- the **output** is not a gland the model is sure of: its own foreground
  probabilities sit near 0.5 (low margin), the mask lies far from the volume
  centre (prostate MRI is centred on the gland), or it is not compact; on
  request (it costs a second network pass) the model is also asked again on
  the left-right mirrored input, and must agree with itself (the gland is
  left-right symmetric, a confident wrong answer seldom is).

Each warning names its check (``[check: foreground-margin]``). The thresholds
are the constants below; a bundle may override any of them in
``model.json`` under ``postprocessing.quality_checks`` (same names), because
the margin a model reaches depends on the model. Firing rates on real and
hostile inputs: ``benchmarks/quality_check_rates.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import BundleError

# Calibration (2026-12-02): on the 36 real PROMISE12 cases the images have at least 371 distinct
# values (in the sample) and a neighbour correlation of at least 0.82; their expert masks a centre offset of at
# most 0.41 and a compactness of at least 0.54. The limits below leave a margin around those.

#: fewer distinct intensities than this (in a sample of the volume): a label map, not an MRI
MIN_DISTINCT_VALUES = 32
#: correlation of in-plane neighbouring voxels below this: noise, not an MRI
MIN_NEIGHBOUR_CORRELATION = 0.5
#: mean of 2p-1 over the voxels the model calls gland (p > 0.5) below this: the model is unsure
MIN_FOREGROUND_MARGIN = 0.5
#: mask centre farther from the volume centre than this fraction of the half extent (any axis)
MAX_CENTRE_OFFSET = 0.5
#: sphericity (face-counted surface, so a voxelised ball scores about 0.65) below this: not a compact gland
MIN_COMPACTNESS = 0.45
#: Dice between the mask and the mirrored mask of the left-right mirrored input (opt-in, ``--flip-check``)
MIN_FLIP_AGREEMENT = 0.8
SAMPLE_VOXELS = 200_000


@dataclass(frozen=True)
class QualityThresholds:
    """The limits of each check (see the module constants for their meaning)."""

    min_distinct_values: int = MIN_DISTINCT_VALUES
    min_neighbour_correlation: float = MIN_NEIGHBOUR_CORRELATION
    min_foreground_margin: float = MIN_FOREGROUND_MARGIN
    max_centre_offset: float = MAX_CENTRE_OFFSET
    min_compactness: float = MIN_COMPACTNESS
    min_flip_agreement: float = MIN_FLIP_AGREEMENT


def thresholds_from_model(raw: Mapping[str, Any]) -> QualityThresholds:
    """The thresholds of a decoded ``model.json``: defaults, overridden by ``postprocessing.quality_checks``.

    Raises:
        BundleError: ``model.json: postprocessing.quality_checks.<key> ...`` for an unknown key or a
            value that is not a finite number.
    """
    if not isinstance(raw, Mapping):
        raise TypeError(f"raw must be a mapping, got {type(raw).__name__}")
    post = raw.get("postprocessing", {})
    given = post.get("quality_checks", {}) if isinstance(post, Mapping) else {}
    if not isinstance(given, Mapping):
        raise BundleError("model.json: postprocessing.quality_checks must be an object")
    known = {f.name: f.type for f in fields(QualityThresholds)}
    values: dict[str, Any] = {}
    for key, value in given.items():
        if key not in known:
            raise BundleError(
                f"model.json: postprocessing.quality_checks.{key} is unknown (known: {', '.join(known)})"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BundleError(f"model.json: postprocessing.quality_checks.{key} must be a number, got {value!r}")
        values[key] = int(value) if key == "min_distinct_values" else float(value)
    return replace(QualityThresholds(), **values)


def _sample_indices(array: np.ndarray) -> np.ndarray:
    """Evenly strided flat indices (at most SAMPLE_VOXELS) that have an x neighbour."""
    step = max(1, int(math.ceil(array.size / SAMPLE_VOXELS)))
    if step % array.shape[2] == 0:
        step += 1  # never sample a single column only
    indices = np.arange(0, array.size - 1, step)
    return indices[indices % array.shape[2] != array.shape[2] - 1]


def input_measures(array: np.ndarray) -> dict[str, float]:
    """``distinct_values`` and ``neighbour_correlation`` of a 3D intensity array (z, y, x), on a sample.

    ``neighbour_correlation`` is the Pearson correlation of sampled voxels with
    their x neighbours (1.0 for a sample without variation).
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"array must be 3D, got shape {array.shape}")
    flat = array.reshape(-1)
    indices = _sample_indices(array)
    a, b = flat[indices].astype(np.float64), flat[indices + 1].astype(np.float64)
    distinct = int(np.unique(a).size)
    sa, sb = a.std(), b.std()
    correlation = float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb)) if sa > 0 and sb > 0 else 1.0
    return {"distinct_values": float(distinct), "neighbour_correlation": round(correlation, 4)}


def foreground_margin(probabilities: Any) -> float:
    """Mean ``2p - 1`` of the foreground probability ``p = 1 - P(background)`` over voxels with ``p > 0.5``.

    ``probabilities``: softmax output (C, ...) as a numpy array or CPU tensor.
    NaN when no voxel is foreground.
    """
    background = np.asarray(probabilities[0], dtype=np.float32)
    foreground = 1.0 - background
    inside = foreground > 0.5
    if not inside.any():
        return float("nan")
    return round(float((2.0 * foreground[inside] - 1.0).mean()), 4)


def mask_measures(mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """``centre_offset`` and ``compactness`` of a (z, y, x) mask on a grid with (x, y, z) ``spacing``.

    ``centre_offset``: largest per-axis distance of the mask's centre from the
    volume centre, as a fraction of the half extent (0 = centred, 1 = at the
    border). ``compactness``: sphericity ``pi^(1/3) (6V)^(2/3) / A`` with ``A``
    the area of the voxel faces between mask and background. NaN for an empty mask.
    """
    mask = np.asarray(mask) > 0
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D, got shape {mask.shape}")
    if not mask.any():
        return {"centre_offset": float("nan"), "compactness": float("nan")}
    sx, sy, sz = (float(s) for s in spacing)
    coordinates = np.nonzero(mask)
    offsets = [abs(c.mean() - (n - 1) / 2) / max((n - 1) / 2, 0.5) for c, n in zip(coordinates, mask.shape)]
    padded = np.pad(mask, 1)
    faces = {axis: int(np.count_nonzero(np.diff(padded, axis=axis))) for axis in range(3)}
    area = faces[0] * sx * sy + faces[1] * sx * sz + faces[2] * sy * sz  # axis 0 is z, 2 is x
    volume = float(mask.sum()) * sx * sy * sz
    compactness = math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area
    return {"centre_offset": round(float(max(offsets)), 4), "compactness": round(compactness, 4)}


def measure_quality(image_array: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
                    probabilities: Any) -> dict[str, float]:
    """All measures of one segmentation (input, model margin, mask shape), as plain floats."""
    return {**input_measures(image_array), "foreground_margin": foreground_margin(probabilities),
            **mask_measures(mask, spacing)}


def left_right_axis(direction: Sequence[float]) -> int:
    """The numpy axis (z, y, x order) of a 3D image whose direction is closest to patient left-right."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)  # columns: image axes i, j, k in LPS
    image_axis = int(np.argmax(np.abs(matrix[0])))  # the i/j/k axis with the largest L-R component
    return 2 - image_axis


def flip_agreement(segment: Callable[[Any], Any], image: Any, mask: np.ndarray) -> float:
    """Dice between ``mask`` and the segmentation of the left-right mirrored ``image``, mirrored back.

    Args:
        segment: ``segment(sitk_image) -> sitk_mask`` (for example
            ``lambda im: segmenter.segment(im).mask``).
        image: the 3D SimpleITK input that ``mask`` (z, y, x array) was segmented from.
        mask: its mask.
    """
    import SimpleITK as sitk

    axis = left_right_axis(image.GetDirection())
    mirrored = sitk.GetImageFromArray(np.flip(sitk.GetArrayFromImage(image), axis).copy())
    mirrored.CopyInformation(image)
    again = np.flip(sitk.GetArrayFromImage(segment(mirrored)), axis) > 0
    mask = np.asarray(mask) > 0
    total = int(mask.sum() + again.sum())
    return 1.0 if total == 0 else round(float(2 * (mask & again).sum() / total), 4)


def quality_warnings(measures: Mapping[str, float], thresholds: QualityThresholds | None = None) -> list[str]:
    """The warnings the ``measures`` of :func:`measure_quality` call for; each names its check."""
    t = thresholds or QualityThresholds()
    m = dict(measures)
    warnings = []
    not_t2 = "the input does not look like a T2 prostate MRI"
    if m.get("distinct_values", math.inf) < t.min_distinct_values:
        warnings.append(f"{not_t2}: it holds only {m['distinct_values']:.0f} distinct values, like a label "
                        f"map [check: distinct-values < {t.min_distinct_values}]")
    if m.get("neighbour_correlation", 1.0) < t.min_neighbour_correlation:
        warnings.append(f"{not_t2}: neighbouring voxels are unrelated (correlation "
                        f"{m['neighbour_correlation']:.2f}), like noise "
                        f"[check: neighbour-correlation < {t.min_neighbour_correlation:g}]")
    unsure = "the segmentation may be wrong"
    if m.get("foreground_margin", 1.0) < t.min_foreground_margin:
        warnings.append(f"{unsure}: the model is unsure of it (mean foreground margin "
                        f"{m['foreground_margin']:.2f}) [check: foreground-margin < {t.min_foreground_margin:g}]")
    if m.get("centre_offset", 0.0) > t.max_centre_offset:
        warnings.append(f"{unsure}: the mask lies far from the volume centre (offset {m['centre_offset']:.2f} "
                        f"of the half extent) [check: centre-offset > {t.max_centre_offset:g}]")
    if m.get("flip_agreement", 1.0) < t.min_flip_agreement:
        warnings.append(f"{unsure}: the model disagrees with itself on the mirrored input (Dice "
                        f"{m['flip_agreement']:.2f}) [check: flip-agreement < {t.min_flip_agreement:g}]")
    if m.get("compactness", 1.0) < t.min_compactness:
        warnings.append(f"{unsure}: the mask is not a compact gland (compactness {m['compactness']:.2f}) "
                        f"[check: compactness < {t.min_compactness:g}]")
    return warnings
