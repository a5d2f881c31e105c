"""The ``model.json`` format of a model bundle, parsed and validated.

A bundle is a folder (or a ``.zip`` of one) holding ``model.json`` and the
weights file it names. Format version 1::

    {
      "format_version": 1,
      "name": "prostatekd-student", "version": "1.0.0", "description": "...",
      "network": {"name": "unet", "kwargs": {"channels": [8, 16, 32, 64], ...}},
      "weights": "model.safetensors",
      "input": {"channels": ["T2"], "orientation": "RAS",
                "spacing": [0.8, 0.8, 3.0], "patch_size": [128, 128, 32],
                "normalization": {"name": "zscore", "clip_percentiles": [0.5, 99.5]}},
      "inference": {"overlap": 0.25, "blend_mode": "gaussian", "sw_batch_size": 1,
                    "whole_volume_voxels": 4194304},
      "onnx": {"file": "model.onnx", "weights_sha256": "<sha256 of model.safetensors>", "opset": 17},
      "labels": [{"value": 1, "name": "Prostate", "color": [0.902, 0.62, 0.549],
                  "terminology": {"category": ["SCT", "123037004", "Anatomical Structure"],
                                  "type": ["SCT", "41216001", "Prostate"]}}],
      "postprocessing": {"largest_component": true, "volume_ml_range": [5, 250]},
      "license": "Apache-2.0",
      "provenance": {"training_data": "...", "method": "...", "teachers": [],
                     "validation_dice": 0.9, "date": "2026-11-22"}
    }

``provenance`` must hold the five keys shown; ``prostatekd export`` adds
``validation``, ``epochs_trained``, ``checkpoint_epoch``, ``git_commit``,
``software_version`` and ``parameters``. ``inference.whole_volume_voxels`` (optional)
is the largest padded model-grid volume run in one pass instead of a sliding window (0,
the default: always slide; set it only where the masks agree with the sliding window's). ``onnx`` (optional) names the network's ONNX export and the SHA-256 of
the weights file it was exported from, so a stale export is refused. Spacing and patch size are in the (x, y, z) order of the oriented volume
(``orientation`` axis codes, MONAI convention). Every missing or wrong field
raises :class:`~ProstateKDLib.errors.BundleError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from . import checks
from .errors import BundleError

FORMAT_VERSION = 1
NORMALIZATIONS = ("zscore", "none")
BLEND_MODES = ("gaussian", "constant")
# Off unless a bundle opts in: a network trained on patches with instance normalisation
# can see a whole volume differently (benchmarks/inference_agreement.py measures it).
DEFAULT_WHOLE_VOLUME_VOXELS = 0
PROVENANCE_FIELDS = ("training_data", "method", "teachers", "validation_dice", "date")
_MISSING = object()


@dataclass(frozen=True)
class LabelInfo:
    """One output label: its value in the mask, name, colour and terminology."""

    value: int
    name: str
    color: tuple[float, float, float]
    terminology: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BundleMeta:
    """Validated contents of ``model.json``."""

    name: str
    version: str
    description: str
    network_name: str
    network_kwargs: Mapping[str, Any]
    weights: str
    channels: tuple[str, ...]
    orientation: str
    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    normalization: Mapping[str, Any]
    overlap: float
    blend_mode: str
    sw_batch_size: int
    labels: tuple[LabelInfo, ...]
    largest_component: bool
    volume_ml_range: tuple[float, float]
    license: str
    provenance: Mapping[str, Any]
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    whole_volume_voxels: int = DEFAULT_WHOLE_VOLUME_VOXELS
    onnx_file: str | None = None
    onnx_weights_sha256: str | None = None

    @property
    def num_classes(self) -> int:
        """Channels of the network output: background plus the labels."""
        return 1 + max(label.value for label in self.labels)


class _Reader:
    """Reads typed fields out of nested dicts, raising BundleError with the dotted key."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def fail(self, key: str, problem: str) -> BundleError:
        return BundleError(f"{self.source}: field '{key}' {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if default is not _MISSING:
                    return default
                raise BundleError(f"{self.source}: missing field '{key}'")
            node = node[part]
        if kind is float and isinstance(node, int) and not isinstance(node, bool):
            node = float(node)
        if not isinstance(node, kind) or (isinstance(node, bool) and kind in (int, float)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be {names}, got {node!r}")
        return node

    def vector(self, key: str, length: int, kind: type, positive: bool = True) -> tuple:
        values = self.get(key, list)
        ok = checks.is_real if kind is float else checks.is_int
        if len(values) != length or not all(ok(v) for v in values):
            raise self.fail(key, f"must be a list of {length} {kind.__name__}s, got {values!r}")
        if positive and not all(v > 0 for v in values):
            raise self.fail(key, f"must be positive, got {values!r}")
        return tuple(kind(v) for v in values)


def _parse_label(reader: _Reader, index: int, entry: Any) -> LabelInfo:
    key = f"labels[{index}]"
    if not isinstance(entry, Mapping):
        raise reader.fail(key, f"must be an object, got {entry!r}")
    sub = _Reader(entry, f"{reader.source}: {key}")
    value = sub.get("value", int)
    if value < 1 or value > 255:
        raise reader.fail(f"{key}.value", f"must be 1-255, got {value}")
    color = sub.vector("color", 3, float, positive=False)
    if not all(0.0 <= c <= 1.0 for c in color):
        raise reader.fail(f"{key}.color", f"must hold 3 values in 0-1, got {list(color)}")
    terminology = sub.get("terminology", dict, None)
    if terminology is not None:
        for part in ("category", "type"):
            code = terminology.get(part)
            if not (isinstance(code, list) and len(code) == 3 and all(isinstance(c, str) for c in code)):
                raise reader.fail(
                    f"{key}.terminology.{part}", "must be [scheme, code, meaning] strings"
                )
    return LabelInfo(value, sub.get("name", str), color, terminology)


def parse_model_json(data: Any, source: str = "model.json") -> BundleMeta:
    """Validate a decoded ``model.json`` and return a :class:`BundleMeta`.

    Args:
        data: the decoded JSON object.
        source: how to name the file in error messages.

    Raises:
        BundleError: a field is missing or has the wrong type or value.
    """
    if not isinstance(data, Mapping):
        raise BundleError(f"{source}: must hold a JSON object")
    r = _Reader(data, source)
    version = r.get("format_version", int)
    if version != FORMAT_VERSION:
        raise r.fail("format_version", f"is {version}; this ProstateKD reads version {FORMAT_VERSION}")
    normalization = dict(r.get("input.normalization", dict))
    norm_name = _Reader(normalization, source).get("name", str) if "name" in normalization else None
    if norm_name not in NORMALIZATIONS:
        raise r.fail("input.normalization.name", f"must be one of {', '.join(NORMALIZATIONS)}, got {norm_name!r}")
    clip = normalization.get("clip_percentiles")
    if clip is not None and not (
        isinstance(clip, list) and len(clip) == 2 and 0 <= clip[0] < clip[1] <= 100
    ):
        raise r.fail("input.normalization.clip_percentiles", f"must be [low, high] in 0-100, got {clip!r}")
    orientation = r.get("input.orientation", str)
    if sorted(orientation.upper()) not in (sorted(p) for p in _orientation_sets()):
        raise r.fail("input.orientation", f"must be 3 axis codes such as RAS or LPS, got {orientation!r}")
    overlap = r.get("inference.overlap", float, 0.25)
    if not 0.0 <= overlap < 1.0:
        raise r.fail("inference.overlap", f"must be in [0, 1), got {overlap}")
    blend_mode = r.get("inference.blend_mode", str, "gaussian")
    if blend_mode not in BLEND_MODES:
        raise r.fail("inference.blend_mode", f"must be one of {', '.join(BLEND_MODES)}, got {blend_mode!r}")
    whole_volume_voxels = r.get("inference.whole_volume_voxels", int, DEFAULT_WHOLE_VOLUME_VOXELS)
    if whole_volume_voxels < 0:
        raise r.fail("inference.whole_volume_voxels", f"must be >= 0, got {whole_volume_voxels}")
    onnx_file, onnx_sha = None, None
    if "onnx" in data:
        onnx_file = r.get("onnx.file", str)
        onnx_sha = r.get("onnx.weights_sha256", str).lower()
        if len(onnx_sha) != 64 or any(c not in "0123456789abcdef" for c in onnx_sha):
            raise r.fail("onnx.weights_sha256", f"must be 64 hex digits, got {onnx_sha!r}")
    labels_raw = r.get("labels", list)
    if not labels_raw:
        raise r.fail("labels", "must list at least one label")
    labels = tuple(_parse_label(r, i, entry) for i, entry in enumerate(labels_raw))
    if len({label.value for label in labels}) != len(labels):
        raise r.fail("labels", "has duplicate label values")
    vmin, vmax = r.vector("postprocessing.volume_ml_range", 2, float) if "volume_ml_range" in data.get(
        "postprocessing", {}
    ) else (5.0, 250.0)
    if vmin >= vmax:
        raise r.fail("postprocessing.volume_ml_range", f"must be [low, high] with low < high, got {[vmin, vmax]}")
    provenance = r.get("provenance", dict)
    for key in PROVENANCE_FIELDS:
        r.get(f"provenance.{key}", object)
    channels = tuple(r.get("input.channels", list))
    if not channels or not all(isinstance(c, str) for c in channels):
        raise r.fail("input.channels", f"must list channel names such as ['T2'], got {list(channels)!r}")
    return BundleMeta(
        name=r.get("name", str),
        version=r.get("version", str),
        description=r.get("description", str, ""),
        network_name=r.get("network.name", str),
        network_kwargs=dict(r.get("network.kwargs", dict, {})),
        weights=r.get("weights", str),
        channels=channels,
        orientation=orientation.upper(),
        spacing=r.vector("input.spacing", 3, float),
        patch_size=r.vector("input.patch_size", 3, int),
        normalization=normalization,
        overlap=overlap,
        blend_mode=blend_mode,
        sw_batch_size=r.get("inference.sw_batch_size", int, 1),
        labels=labels,
        largest_component=r.get("postprocessing.largest_component", bool, True),
        volume_ml_range=(vmin, vmax),
        license=r.get("license", str),
        provenance=dict(provenance),
        raw=dict(data),
        whole_volume_voxels=whole_volume_voxels,
        onnx_file=onnx_file,
        onnx_weights_sha256=onnx_sha,
    )


def _orientation_sets() -> list[str]:
    return [a + b + c for a in "LR" for b in "PA" for c in "IS"]
