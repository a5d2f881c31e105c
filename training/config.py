"""Training configuration: a YAML file validated at load time into frozen dataclasses.

Every problem raises :class:`~ProstateKDLib.errors.ConfigError` naming the
file and the dotted key, with one of these messages::

    config <file>: unknown key 'train.lr' (known: amp, batch_size, ...)
    config <file>: missing required key 'train.epochs'
    config <file>: key 'train.epochs' must be an integer, got 'ten'
    config <file>: key 'model.network' names unknown network 'unet3' (known: dynunet, segresnet, unet)
    config <file>: key 'distiller.temperature' must be a number > 0, got 0
    config <file>: key 'teachers' lists 2 teachers but distiller 'seed_kd' needs exactly 1 teacher

The ``distiller`` section holds ``name``, ``weights`` (one per loss term of the
method) and the method's options (``temperature``, ``tau``, ...; see
:attr:`training.distillers.Distiller.options`). ``teachers`` lists model
bundles (paths or installed names), training runs (their ``bundle/``) or
``train-teacher`` folders (every teacher in its ``teachers.json``).

Relative ``data.root`` and teacher paths are resolved against the current folder at load
time, so the ``config.yaml`` a run writes is self-contained.
"""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ProstateKDLib import checks
from ProstateKDLib.checks import plain_data
from ProstateKDLib.errors import ConfigError

ORIENTATION_LETTERS = ("LR", "PA", "IS")
NORMALIZATIONS = ("zscore", "none")
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("poly", "constant")
_REQUIRED = object()
TEACHERS_JSON = "teachers.json"


@dataclass(frozen=True)
class SubsetConfig:
    """The ``index``-th (0-based) of ``count`` random disjoint subsets of the cases (seed: ``data.seed``)."""

    index: int
    count: int


@dataclass(frozen=True)
class DataConfig:
    """Where the cases are, which of them to use, and how they are split.

    ``sites`` keeps only those sites; ``subset`` keeps one of ``count`` random
    disjoint subsets (limit-trained teachers). Both apply before the train/val split.
    ``channels`` loads several channels of multi-channel images (e.g. ``[0, 1]`` = T2
    and ADC of the Decathlon prostate), each normalised on its own and stacked: what a
    ``cross_modality`` teacher sees (the student then picks ``distiller.student_channels``).
    ``index`` (a dataset index written by ``prostatekd prepare``) replaces the folder scan:
    the run trains on fold ``fold``'s training cases, validates on its validation cases, and
    never sees the index's test cases (``root`` defaults to the index's data root).
    ``unlabelled`` (a folder of images without masks, ``<SITE>/<name>.nii.gz`` or flat) adds
    training images for distillers that accept them (label terms skip them; the teachers'
    maps guide their patches); an image that is also a test case of the index is refused.
    """

    root: str
    val_fraction: float = 0.2
    seed: int = 0
    cases: int | None = None
    sites: tuple[str, ...] | None = None
    subset: SubsetConfig | None = None
    channels: tuple[int, ...] | None = None
    index: str | None = None
    fold: int = 0
    unlabelled: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """The student network: a registered name plus keyword arguments."""

    network: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    num_classes: int = 2

    def network_kwargs(self) -> dict[str, Any]:
        """All arguments for :func:`~ProstateKDLib.networks.build_network`."""
        return {"in_channels": self.in_channels, "out_channels": self.num_classes, **copy.deepcopy(dict(self.kwargs))}


@dataclass(frozen=True)
class NormalizationConfig:
    """Intensity normalisation, as in a bundle's ``input.normalization``."""

    name: str = "zscore"
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)

    def as_dict(self) -> dict[str, Any]:
        """The ``normalization`` mapping preprocessing and ``model.json`` use."""
        out: dict[str, Any] = {"name": self.name}
        if self.clip_percentiles is not None:
            out["clip_percentiles"] = list(self.clip_percentiles)
        return out


@dataclass(frozen=True)
class PreprocessingConfig:
    """Model grid (orientation, spacing), patch size and normalisation."""

    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    orientation: str = "RAS"
    normalization: NormalizationConfig = NormalizationConfig()


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    ``warmup_steps`` ramps the learning rate up linearly before the schedule;
    ``grad_clip`` clips the gradient norm; ``val_overlap`` is the sliding-window
    overlap of the per-epoch validation.
    """

    epochs: int
    batch_size: int = 2
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "adamw"
    lr_schedule: str = "poly"
    patches_per_volume: int = 2
    positive_fraction: float = 0.5
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    amp: bool = True
    warmup_steps: int = 0
    grad_clip: float | None = None
    val_overlap: float = 0.25


@dataclass(frozen=True)
class DistillerConfig:
    """Distillation method (``none``: the student alone), its loss weights and options."""

    name: str = "none"
    weights: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def resolved_options(self) -> dict[str, Any]:
        """Every option of the method, defaults filled in."""
        from training.distillers import DISTILLERS

        return DISTILLERS.get(self.name).check_options(self.options)


@dataclass(frozen=True)
class ExportConfig:
    """What an exported bundle says about itself."""

    name: str
    training_data: str
    version: str = "0.1.0"
    description: str = ""
    license: str = "Apache-2.0"


@dataclass(frozen=True)
class Config:
    """A validated training configuration."""

    data: DataConfig
    model: ModelConfig
    preprocessing: PreprocessingConfig
    train: TrainConfig
    distiller: DistillerConfig
    export: ExportConfig
    teachers: tuple[str, ...] = ()
    augmentation: Mapping[str, Any] | None = None
    source: str = field(default="<dict>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, no tuples) that :func:`config_from_dict` reads back."""
        out = asdict(self)
        out.pop("source")
        options = out["distiller"].pop("options")
        out["distiller"].update(options)
        for key in ("sites", "subset", "channels", "index", "unlabelled"):
            if out["data"][key] is None:
                out["data"].pop(key)
        if "index" not in out["data"]:
            out["data"].pop("fold")
        if out["train"]["warmup_steps"] == 0:  # defaults of later keys are left out, so runs of
            out["train"].pop("warmup_steps")    # earlier versions resume and configs stay as they were
        if out["train"]["grad_clip"] is None:
            out["train"].pop("grad_clip")
        if out["train"]["val_overlap"] == 0.25:
            out["train"].pop("val_overlap")
        if not out["teachers"]:
            out.pop("teachers")
        if out["augmentation"] is None:
            out.pop("augmentation")
        return plain_data(out)


# ------------------------------------------------------------------ validation
class _Section:
    """Reads one mapping of the YAML, failing with the dotted key."""

    def __init__(self, data: Any, prefix: str, source: str) -> None:
        self.prefix = prefix
        self.source = source
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise self.error(prefix.rstrip("."), f"must be a mapping, got {_show(data)}")
        self.data = dict(data)
        self.used: list[str] = []

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"config {self.source}: key '{key}' {problem}")

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def get(self, name: str, check: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
        self.used.append(name)
        if name not in self.data:
            if default is _REQUIRED:
                raise ConfigError(f"config {self.source}: missing required key '{self.key(name)}'")
            return default
        return check(self, self.key(name), self.data[name])

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            known = ", ".join(sorted(self.used))
            raise ConfigError(f"config {self.source}: unknown key '{self.key(str(unknown[0]))}' (known: {known})")


def _show(value: Any) -> str:
    return checks.show(value)


def _raw(section: _Section, key: str, value: Any) -> Any:
    return value


def _checked(primitive: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[_Section, str, Any], Any]:
    """A section check from a :mod:`ProstateKDLib.checks` primitive: its message, prefixed with the key."""

    def check(section: _Section, key: str, value: Any) -> Any:
        try:
            return primitive(value, *args, **kwargs)
        except ValueError as exc:
            raise section.error(key, str(exc)) from None

    return check


def _int(low: int | None = None) -> Callable[[_Section, str, Any], int]:
    return _checked(checks.integer, low)


def _optional(check: Callable[[_Section, str, Any], Any]) -> Callable[[_Section, str, Any], Any]:
    def wrapped(section: _Section, key: str, value: Any) -> Any:
        return None if value is None else check(section, key, value)

    return wrapped


def _float(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Callable[[_Section, str, Any], float]:
    return _checked(checks.number, low, high, low_open, high_open)


_bool = _checked(checks.boolean)
_text = _checked(checks.text, non_empty=False)


def _str(choices: tuple[str, ...] | None = None) -> Callable[[_Section, str, Any], str]:
    return _checked(checks.text, choices)


def _mapping(section: _Section, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise section.error(key, f"must be a mapping, got {_show(value)}")
    return plain_data(value)


def _vector(length: int, kind: type) -> Callable[[_Section, str, Any], tuple]:
    noun = "integers" if kind is int else "numbers"

    def check(section: _Section, key: str, value: Any) -> tuple:
        ok_types = (int,) if kind is int else (int, float)
        if not (
            isinstance(value, (list, tuple))
            and len(value) == length
            and all(isinstance(v, ok_types) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise section.error(key, f"must be a list of {length} positive {noun}, got {_show(value)}")
        return tuple(kind(v) for v in value)

    return check


def _orientation(section: _Section, key: str, value: Any) -> str:
    code = value.upper() if isinstance(value, str) else ""
    axes = sorted(next((i for i, pair in enumerate(ORIENTATION_LETTERS) if c in pair), -1) for c in code)
    if axes != [0, 1, 2]:
        raise section.error(key, f"must be 3 axis codes such as RAS or LPS, got {_show(value)}")
    return code


def _device(section: _Section, key: str, value: Any) -> str:
    from ProstateKDLib.device import DEVICE_PATTERN

    if not isinstance(value, str) or not DEVICE_PATTERN.match(value.strip().lower()):
        raise section.error(key, f"must be auto, cpu, cuda, cuda:N or mps, got {_show(value)}")
    return value.strip().lower()


def _clip(section: _Section, key: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not (
        isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] < value[1] <= 100
    ):
        raise section.error(key, f"must be [low, high] percentiles with 0 <= low < high <= 100, got {_show(value)}")
    return (float(value[0]), float(value[1]))


def _resolve_root(section: _Section, key: str, value: Any) -> str:
    text = _str()(section, key, value)
    return str(Path(os.path.expanduser(text)).absolute())


def _total_stride(factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """Product of the network's ``strides`` per axis (None when it has none)."""
    strides = kwargs.get("strides")
    if strides is None:
        parameter = inspect.signature(factory).parameters.get("strides")
        strides = None if parameter is None else parameter.default
    if not isinstance(strides, (list, tuple)):
        return None
    total = [1, 1, 1]
    for stride in strides:
        per_axis = list(stride) if isinstance(stride, (list, tuple)) else [stride] * 3
        if len(per_axis) != 3 or not all(isinstance(s, int) and s > 0 for s in per_axis):
            return None
        total = [t * s for t, s in zip(total, per_axis)]
    return tuple(total)  # type: ignore[return-value]


def check_model(model: ModelConfig, patch: tuple[int, int, int], source: str) -> None:
    from ProstateKDLib.networks import NETWORKS

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"config {source}: key '{key}' {problem}")

    if model.network not in NETWORKS:
        raise fail("model.network", f"names unknown network {model.network!r} (known: {', '.join(NETWORKS.names())})")
    for name, owner in (("in_channels", "model.in_channels"), ("out_channels", "model.num_classes")):
        if name in model.kwargs:
            raise fail(f"model.kwargs.{name}", f"is not allowed; set '{owner}' instead")
    factory = NETWORKS.get(model.network)
    try:
        inspect.signature(factory).bind(**model.network_kwargs())
    except TypeError as exc:
        raise fail("model.kwargs", f"is invalid for network {model.network!r}: {exc}") from None
    stride = _total_stride(factory, model.kwargs)
    if stride is not None and any(p % s for p, s in zip(patch, stride)):
        raise fail(
            "preprocessing.patch_size",
            f"must be divisible by the network's total stride {list(stride)}, got {list(patch)}",
        )


def _check_distiller(distiller: DistillerConfig, source: str) -> None:
    from training.distillers import DISTILLERS

    if distiller.name not in DISTILLERS:
        raise ConfigError(
            f"config {source}: key 'distiller.name' names unknown distiller {distiller.name!r} "
            f"(known: {', '.join(DISTILLERS.names())})"
        )
    cls = DISTILLERS.get(distiller.name)
    for key, value in distiller.options.items():
        if key not in cls.options:
            known = ", ".join(sorted(["name", "weights", *cls.options]))
            raise ConfigError(f"config {source}: unknown key 'distiller.{key}' (known: {known})")
        try:
            cls.options[key].check(value)
        except ValueError as exc:
            raise ConfigError(f"config {source}: key 'distiller.{key}' {exc}") from None
    names = cls.loss_names
    for term, weight in distiller.weights.items():
        if term not in names:
            raise ConfigError(
                f"config {source}: unknown key 'distiller.weights.{term}' (known: {', '.join(sorted(names))})"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(
                f"config {source}: key 'distiller.weights.{term}' must be a number >= 0, got {_show(weight)}"
            )


def _check_teacher_count(distiller: DistillerConfig, teachers: tuple[str, ...], source: str) -> None:
    from training.distillers import DISTILLERS

    cls = DISTILLERS.get(distiller.name)
    try:
        cls.check_teacher_count(len(teachers))
    except ValueError:
        n = len(teachers)
        raise ConfigError(
            f"config {source}: key 'teachers' lists {n} teacher{'' if n == 1 else 's'} but distiller "
            f"{distiller.name!r} {'takes' if cls.max_teachers == 0 else 'needs'} {cls.teacher_count_text()}"
        ) from None


def _sites(section: _Section, key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple)) or not value
        or not all(isinstance(v, str) and v.strip() for v in value) or len(set(value)) != len(value)
    ):
        raise section.error(key, f"must be a non-empty list of unique site names, got {_show(value)}")
    return tuple(value)


def _channels(section: _Section, key: str, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple)) or len(value) < 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        or len(set(value)) != len(value)
    ):
        raise section.error(key, f"must be null or a list of at least 2 unique channel indices >= 0, got {_show(value)}")
    return tuple(value)


def _subset(section: _Section, key: str, value: Any) -> SubsetConfig | None:
    if value is None:
        return None
    s = _Section(value, f"{key}.", section.source)
    count = s.get("count", _int(1))
    index = s.get("index", _int(0))
    s.finish()
    if index >= count:
        raise section.error(f"{key}.index", f"must be less than {key}.count ({count}), got {index}")
    return SubsetConfig(index=index, count=count)


def _teachers(section: _Section, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise section.error(key, f"must be a list of bundle paths, bundle names or run folders, got {_show(value)}")
    out: list[str] = []
    for entry in value:
        path = Path(os.path.expanduser(entry))
        is_path = path.exists() or "/" in entry or os.sep in entry or entry.startswith((".", "~"))
        out.extend(_expand_teacher(section, key, path.absolute()) if is_path else [entry])
    if len(set(out)) != len(out):
        raise section.error(key, f"names the same teacher twice: {_show(value)}")
    return tuple(out)


def _expand_teacher(section: _Section, key: str, path: Path) -> list[str]:
    """A bundle path; a run folder's ``bundle/``; every bundle of a ``teachers.json`` folder."""
    import json

    if path.is_dir() and (path / TEACHERS_JSON).is_file():
        try:
            listing = json.loads((path / TEACHERS_JSON).read_text(encoding="utf-8"))
            return [str(path / item["bundle"]) for item in listing["teachers"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise section.error(key, f"cannot be read from {path / TEACHERS_JSON}: {exc!r}") from None
    if path.is_dir() and not (path / "model.json").is_file():
        if (path / "bundle" / "model.json").is_file():
            return [str(path / "bundle")]
        if (path / "config.yaml").is_file():
            raise section.error(
                key, f"names run {path}, which has no exported bundle; run 'prostatekd export {path} {path / 'bundle'}'"
            )
    return [str(path)]


def _index_root(section: _Section, key: str) -> str:
    """The data root a dataset index records (absolute), for a config that gives only ``data.index``."""
    from ProstateKDLib.errors import DataError

    from .prepare import read_index

    try:
        index = read_index(key)
    except DataError as exc:
        raise section.error("data.index", f"is not usable: {exc}") from None
    base = Path(index.get("root") or ".")
    return str(base if base.is_absolute() else (Path(key).parent / base).absolute())


def _augmentation(section: _Section, key: str, value: Any) -> dict[str, Any] | None:
    """The ``augmentation`` section, checked and completed with defaults (see :mod:`training.augmentation`)."""
    from .augmentation import AugmentationError, check_augmentation

    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise section.error(key, f"must be a mapping, got {_show(value)}")
    try:
        return check_augmentation(plain_data(value))
    except AugmentationError as exc:
        sub, problem = exc.args
        raise section.error(f"{key}.{sub}", problem) from None


def config_from_dict(data: Any, source: str = "<dict>") -> Config:
    """Validate a decoded YAML mapping into a :class:`Config`.

    Raises:
        ConfigError: unknown key, missing required key, wrong type or value.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config {source}: must hold a mapping of sections (data, model, ...), got {_show(data)}")
    top = _Section(data, "", source)

    s = _Section(top.get("data", _raw, None), "data.", source)
    index = s.get("index", _optional(_resolve_root), None)
    root = s.get("root", _resolve_root, None)
    if root is None:  # required unless the index says where its cases are
        root = _index_root(s, index) if index else s.get("root", _resolve_root)
    data_cfg = DataConfig(
        root=root,
        val_fraction=s.get("val_fraction", _float(0.0, 1.0, high_open=True), 0.2),
        seed=s.get("seed", _int(0), 0),
        cases=s.get("cases", _optional(_int(1)), None),
        sites=s.get("sites", _sites, None),
        subset=s.get("subset", _subset, None),
        channels=s.get("channels", _channels, None),
        index=index,
        fold=s.get("fold", _int(0), 0),
        unlabelled=s.get("unlabelled", _optional(_resolve_root), None),
    )
    s.finish()

    s = _Section(top.get("model", _raw, None), "model.", source)
    model_cfg = ModelConfig(
        network=s.get("network", _str()),
        kwargs=s.get("kwargs", _mapping, {}),
        in_channels=s.get("in_channels", _int(1), 1),
        num_classes=s.get("num_classes", _int(2), 2),
    )
    if model_cfg.num_classes != 2:
        raise s.error("model.num_classes", f"must be 2 (background and gland), got {model_cfg.num_classes}")
    s.finish()

    s = _Section(top.get("preprocessing", _raw, None), "preprocessing.", source)
    spacing = s.get("spacing", _vector(3, float))
    patch = s.get("patch_size", _vector(3, int))
    orientation = s.get("orientation", _orientation, "RAS")
    n = _Section(s.get("normalization", _raw, None), "preprocessing.normalization.", source)
    normalization = NormalizationConfig(
        name=n.get("name", _str(NORMALIZATIONS), "zscore"),
        clip_percentiles=n.get("clip_percentiles", _clip, (0.5, 99.5)),
    )
    n.finish()
    s.finish()
    pre_cfg = PreprocessingConfig(spacing, patch, orientation, normalization)

    s = _Section(top.get("train", _raw, None), "train.", source)
    train_cfg = TrainConfig(
        epochs=s.get("epochs", _int(1)),
        batch_size=s.get("batch_size", _int(1), 2),
        learning_rate=s.get("learning_rate", _float(0.0, low_open=True), 1e-3),
        weight_decay=s.get("weight_decay", _float(0.0), 1e-5),
        optimizer=s.get("optimizer", _str(OPTIMIZERS), "adamw"),
        lr_schedule=s.get("lr_schedule", _str(LR_SCHEDULES), "poly"),
        patches_per_volume=s.get("patches_per_volume", _int(1), 2),
        positive_fraction=s.get("positive_fraction", _float(0.0, 1.0), 0.5),
        seed=s.get("seed", _int(0), 0),
        device=s.get("device", _device, "auto"),
        num_threads=s.get("num_threads", _optional(_int(1)), None),
        amp=s.get("amp", _bool, True),
        warmup_steps=s.get("warmup_steps", _int(0), 0),
        grad_clip=s.get("grad_clip", _optional(_float(0.0, low_open=True)), None),
        val_overlap=s.get("val_overlap", _float(0.0, 1.0, high_open=True), 0.25),
    )
    s.finish()

    s = _Section(top.get("distiller", _raw, None), "distiller.", source)
    distiller_cfg = DistillerConfig(
        name=s.get("name", _str(), "none"),
        weights=s.get("weights", _mapping, {}),
        options={k: plain_data(v) for k, v in s.data.items() if k not in ("name", "weights")},
    )

    s = _Section(top.get("export", _raw, None), "export.", source)
    export_cfg = ExportConfig(
        name=s.get("name", _str()),
        training_data=s.get("training_data", _str()),
        version=s.get("version", _str(), "0.1.0"),
        description=s.get("description", _text, ""),
        license=s.get("license", _str(), "Apache-2.0"),
    )
    s.finish()
    teachers = top.get("teachers", _teachers, ())
    augmentation = top.get("augmentation", _augmentation, None)
    top.finish()

    check_model(model_cfg, patch, source)
    _check_distiller(distiller_cfg, source)
    _check_teacher_count(distiller_cfg, teachers, source)
    return Config(data_cfg, model_cfg, pre_cfg, train_cfg, distiller_cfg, export_cfg, teachers, augmentation, source)


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with dotted keys (``"train.epochs"``) set to new values."""
    out = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: str | os.PathLike) -> Any:
    """Decoded YAML of ``path``; ConfigError when missing or not valid YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"config {path.name}: not valid YAML: {' '.join(first[:1] + first[-1:])}") from None


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a YAML config; ``overrides`` (dotted keys) are applied first.

    The command line's ``--set KEY=VALUE`` overrides (:mod:`training.config_set`) are
    applied after ``overrides``.

    Raises:
        ConfigError: file missing, not YAML, or invalid (message names the dotted key).
    """
    from .config_set import active_overrides

    data = read_yaml(path)
    overrides = {**(overrides or {}), **active_overrides()}  # --set KEY=VALUE wins
    if overrides:
        if not isinstance(data, Mapping):
            raise ConfigError(f"config {Path(path).name}: must hold a mapping")
        data = apply_overrides(data, overrides)
    return config_from_dict(data, Path(path).name)


def write_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (loads back to an equal :class:`Config`)."""
    import yaml

    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
