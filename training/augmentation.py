"""Training augmentation of real MRI patches, declared in a config's ``augmentation`` section.

Built from MONAI dictionary transforms, so one random draw moves the image,
the label and any teacher map together (spatial transforms), while intensity
transforms touch the image only:

============== ================================================ ==========================
key            what                                             MONAI transform
============== ================================================ ==========================
affine         rotation (deg per axis x, y, z: z is the slice   ``RandAffined``
               axis of a RAS volume) and scaling factor range
elastic        smooth random deformation (off by default)       ``Rand3DElasticd``
flip           mirror along the listed axes (0 = left-right)    ``RandFlipd``
gamma          gamma curve                                      ``RandAdjustContrastd``
contrast       multiply intensities                             ``RandScaleIntensityd``
brightness     add to intensities (z-score units)               ``RandShiftIntensityd``
bias_field     smooth multiplicative field (coil shading)       ``RandBiasFieldd``
noise          Gaussian noise (standard deviation)              ``RandGaussianNoised``
blur           Gaussian blur (sigma in voxels)                  ``RandGaussianSmoothd``
low_resolution down- and up-sampling (zoom factor range)        ``RandSimulateLowResolutiond``
============== ================================================ ==========================

Each key takes ``prob`` (0 switches it off) and its own range; keys left out
keep :data:`DEFAULTS`. The scale range 0.7-1.4 also covers the estimated
voxel spacing of most PROMISE12 cases (up to about 25 % off). The sampler
crops a patch large enough for the largest rotation and zoom
(:func:`crop_size`) and the affine resamples it to the patch size, so a
rotated patch has no empty corners. All randomness comes from a seed drawn
from the sampler's generator per patch: a resumed run draws the same
augmentations as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

DEFAULTS: dict[str, dict[str, Any]] = {
    "affine": {"prob": 0.8, "rotate_deg": [5.0, 5.0, 15.0], "scale": [0.7, 1.4]},
    "elastic": {"prob": 0.0, "sigma": [5.0, 8.0], "magnitude": [50.0, 150.0]},
    "flip": {"prob": 0.5, "axes": [0]},
    "gamma": {"prob": 0.3, "range": [0.7, 1.5]},
    "contrast": {"prob": 0.3, "range": [0.75, 1.25]},
    "brightness": {"prob": 0.3, "range": [-0.2, 0.2]},
    "bias_field": {"prob": 0.3, "coeff": [0.0, 0.3]},
    "noise": {"prob": 0.15, "std": 0.1},
    "blur": {"prob": 0.15, "sigma": [0.5, 1.0]},
    "low_resolution": {"prob": 0.15, "zoom": [0.5, 1.0]},
}
SPATIAL_KEYS = ("affine", "elastic", "flip")


class AugmentationError(ValueError):
    """A bad value in the ``augmentation`` section: ``args == (dotted key, problem)``."""


def _number(key: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AugmentationError(key, f"must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise AugmentationError(key, f"must be {bounds}, got {value:g}")
    return float(value)


def _pair(key: str, value: Any, low: float | None = None, high: float | None = None) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise AugmentationError(key, f"must be [low, high], got {value!r}")
    pair = [_number(key, v, low, high) for v in value]
    if pair[0] > pair[1]:
        raise AugmentationError(key, f"must be [low, high] with low <= high, got {value!r}")
    return pair


def _check_entry(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    entry = copy.deepcopy(DEFAULTS[name])
    unknown = [k for k in given if k not in entry]
    if unknown:
        raise AugmentationError(f"{name}.{unknown[0]}", f"is unknown (known: {', '.join(sorted(entry))})")
    entry.update(given)
    key = f"{name}."
    entry["prob"] = _number(key + "prob", entry["prob"], 0.0, 1.0)
    if name == "affine":
        rot = entry["rotate_deg"]
        if not isinstance(rot, (list, tuple)) or len(rot) != 3:
            raise AugmentationError(key + "rotate_deg", f"must be 3 angles in degrees (x, y, z), got {rot!r}")
        entry["rotate_deg"] = [_number(key + "rotate_deg", v, 0.0, 90.0) for v in rot]
        entry["scale"] = _pair(key + "scale", entry["scale"], 0.1, 10.0)
    elif name == "elastic":
        entry["sigma"] = _pair(key + "sigma", entry["sigma"], 0.0)
        entry["magnitude"] = _pair(key + "magnitude", entry["magnitude"], 0.0)
    elif name == "flip":
        axes = entry["axes"]
        if not isinstance(axes, (list, tuple)) or not all(a in (0, 1, 2) and not isinstance(a, bool) for a in axes):
            raise AugmentationError(key + "axes", f"must list axes among 0, 1, 2, got {axes!r}")
        entry["axes"] = sorted(set(int(a) for a in axes))
    elif name in ("gamma", "contrast"):
        entry["range"] = _pair(key + "range", entry["range"], 0.01)
    elif name == "brightness":
        entry["range"] = _pair(key + "range", entry["range"])
    elif name == "bias_field":
        entry["coeff"] = _pair(key + "coeff", entry["coeff"], 0.0, 1.0)
    elif name == "noise":
        entry["std"] = _number(key + "std", entry["std"], 0.0)
    elif name == "blur":
        entry["sigma"] = _pair(key + "sigma", entry["sigma"], 0.0)
    elif name == "low_resolution":
        entry["zoom"] = _pair(key + "zoom", entry["zoom"], 0.1, 1.0)
    return entry


def check_augmentation(section: Mapping[str, Any]) -> dict[str, Any]:
    """The ``augmentation`` section completed with :data:`DEFAULTS`.

    Raises:
        AugmentationError: an unknown transform or option, or a bad value; ``args`` is
            ``(dotted key below 'augmentation', problem)``.
    """
    if not isinstance(section, Mapping):
        raise AugmentationError("", f"must be a mapping, got {section!r}")
    unknown = [k for k in section if k not in DEFAULTS]
    if unknown:
        raise AugmentationError(str(unknown[0]), f"is not a known augmentation (known: {', '.join(DEFAULTS)})")
    out = {}
    for name in DEFAULTS:
        given = section.get(name) or {}
        if not isinstance(given, Mapping):
            raise AugmentationError(name, f"must be a mapping, got {given!r}")
        out[name] = _check_entry(name, given)
    return out


def crop_size(augmentation: Mapping[str, Any], patch_size: Sequence[int]) -> tuple[int, int, int]:
    """Size of the crop the affine resamples from, so rotated and zoomed-out patches stay filled.

    Per axis: patch size x the largest scale factor (or its inverse) x the
    bounding factor ``|cos| + |sin|`` of the largest rotation about another axis.
    """
    affine = augmentation["affine"]
    if affine["prob"] <= 0:
        return tuple(int(p) for p in patch_size)  # type: ignore[return-value]
    low, high = affine["scale"]
    zoom = max(high, 1.0 / low, 1.0)
    angles = [math.radians(a) for a in affine["rotate_deg"]]
    size = []
    for axis, patch in enumerate(patch_size):
        others = [a for i, a in enumerate(angles) if i != axis]
        spread = max(abs(math.cos(a)) + abs(math.sin(a)) for a in others)
        need = int(math.ceil(patch * zoom * spread))
        # an even margin keeps the patch centre on a voxel centre: an affine that happens to be the
        # identity then moves nothing by half a voxel (the nearest-neighbour label would round it)
        size.append(patch + 2 * ((max(need, patch) - patch + 1) // 2))
    return tuple(size)  # type: ignore[return-value]


def build_augmentation(
    augmentation: Mapping[str, Any], patch_size: Sequence[int], keys: Sequence[str] = ("image", "label"),
) -> Any:
    """A MONAI ``Compose`` over dict samples: spatial transforms on every key, intensity on ``image``.

    Keys other than ``image`` and ``label`` (e.g. ``teacher``: cached teacher
    probabilities) are interpolated linearly like the image; ``label`` uses
    nearest neighbour and pads with 0, the others replicate their border.
    The output has exactly ``patch_size`` voxels.
    """
    from monai import transforms as mt

    keys = list(keys)
    modes = ["nearest" if k == "label" else "bilinear" for k in keys]
    pads = ["zeros" if k == "label" else "border" for k in keys]
    spatial: list[Any] = []
    a = augmentation["affine"]
    scale = [(a["scale"][0] - 1.0, a["scale"][1] - 1.0)] * 3
    rotate = [math.radians(v) for v in a["rotate_deg"]]
    spatial.append(mt.RandAffined(keys, spatial_size=tuple(patch_size), prob=a["prob"], rotate_range=rotate,
                                  scale_range=scale, mode=modes, padding_mode=pads))
    spatial.append(mt.CenterSpatialCropd(keys, roi_size=tuple(patch_size)))  # a no-op after the affine
    e = augmentation["elastic"]
    if e["prob"] > 0:
        spatial.append(mt.Rand3DElasticd(keys, sigma_range=tuple(e["sigma"]), magnitude_range=tuple(e["magnitude"]),
                                         prob=e["prob"], mode=modes, padding_mode=pads))
    for axis in augmentation["flip"]["axes"]:
        spatial.append(mt.RandFlipd(keys, prob=augmentation["flip"]["prob"], spatial_axis=axis))
    i = augmentation
    intensity = [
        mt.RandAdjustContrastd("image", prob=i["gamma"]["prob"], gamma=tuple(i["gamma"]["range"]), retain_stats=True),
        mt.RandScaleIntensityd("image", prob=i["contrast"]["prob"],
                               factors=(i["contrast"]["range"][0] - 1.0, i["contrast"]["range"][1] - 1.0)),
        mt.RandShiftIntensityd("image", prob=i["brightness"]["prob"], offsets=tuple(i["brightness"]["range"])),
        mt.RandBiasFieldd("image", prob=i["bias_field"]["prob"], coeff_range=tuple(i["bias_field"]["coeff"])),
        mt.RandGaussianNoised("image", prob=i["noise"]["prob"], std=i["noise"]["std"]),
        mt.RandGaussianSmoothd("image", prob=i["blur"]["prob"], sigma_x=tuple(i["blur"]["sigma"]),
                               sigma_y=tuple(i["blur"]["sigma"]), sigma_z=tuple(i["blur"]["sigma"])),
        mt.RandSimulateLowResolutiond("image", prob=i["low_resolution"]["prob"],
                                      zoom_range=tuple(i["low_resolution"]["zoom"])),
    ]
    return mt.Compose(spatial + [t for t in intensity if t.prob > 0])


def augment(transform: Any, sample: dict[str, Any], seed: int) -> dict[str, Any]:
    """``transform`` applied to ``sample`` with every random draw seeded by ``seed`` (plain tensors out)."""
    transform.set_random_state(seed=int(seed))
    out = transform(sample)
    return {k: (v.as_tensor() if hasattr(v, "as_tensor") else v) for k, v in out.items()}
