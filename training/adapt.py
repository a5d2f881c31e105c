"""Adapt a trained student to a new site without that site's labels: mean teacher self-ensembling.

Method (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS
2017; for multi-site medical segmentation see LE-UDA, Zhao et al. 2022):

* the **student** starts from a bundle's network and weights and keeps the
  bundle's preprocessing (orientation, spacing, normalization, patch size);
* the **teacher** is a copy of the student whose weights follow the student's
  as an exponential moving average after every optimizer step,
  ``θ_t ← α θ_t + (1 − α) θ_s`` (buffers such as BatchNorm statistics are
  copied); it gets no gradients and predicts in eval mode;
* each step takes a batch of **source** patches (the labelled cases of every
  other site; supervised Dice + cross-entropy, MONAI ``DiceCELoss``) and a
  batch of **target** patches (images of the target site only; their labels are
  never read, not even indexed) seen through two random intensity
  augmentations (scale, shift, gaussian noise; nothing geometric, so voxels
  stay aligned). The consistency loss is the mean squared error between
  ``softmax(student(aug1(x)))`` and ``softmax(teacher(aug2(x)))``, weighted by
  ``consistency_weight · exp(−5 (1 − t)²)`` with ``t`` rising linearly from 0
  to 1 over the first ``rampup_epochs`` epochs (sigmoid ramp-up);
* the exported model is the **EMA teacher** (the usual mean-teacher choice: it
  is the temporal ensemble of the students and is the more stable of the two).

The output folder holds::

    options.json          the resolved options (bundle, data, target site, hyper-parameters)
    run.json              code version, packages, machine, seeds, source and target case lists
    log.csv               one row per epoch: loss, sup, dice, ce, consistency, consistency_weight, lr, seconds
    checkpoint_last.pt    student, teacher, optimizer, samplers and random generators (atomic, each epoch)
    bundle/               the adapted model (the EMA teacher) with its provenance

``resume=True`` continues from ``checkpoint_last.pt`` (on the CPU with the
exact result of an uninterrupted run); only ``epochs``, ``device`` and
``num_threads`` may change.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ProstateKDLib import checks
from ProstateKDLib.datasets import find_label, image_suffix, is_label_name, label_name, read_csv_rows, resolve
from ProstateKDLib.errors import BundleError, ConfigError, DataError, OutputError
from .engine import Method, Run
from .run_folder import check_output_folder, check_resumable_options

METHOD = "mean_teacher"
OPTIONS_JSON = "options.json"
BUNDLE_DIR = "bundle"
EVALUATION_DIR = "evaluation"
RAMPUP_SHARPNESS = 5.0  # exp(-5 (1 - t)^2), Laine & Aila / Tarvainen & Valpola
LOG_COLUMNS = ("epoch", "loss", "sup", "dice", "ce", "consistency", "consistency_weight", "lr", "seconds")
FREE_OPTIONS = ("epochs", "device", "num_threads")  # may change on resume


# ------------------------------------------------------------------ options
@dataclass(frozen=True)
class AdaptOptions:
    """Hyper-parameters of a mean-teacher adaptation (checked on construction).

    Attributes:
        epochs: passes over the source cases (each ``patches_per_volume`` patches per case).
        ema_decay: α of the teacher's moving average, in [0, 1).
        consistency_weight: weight of the consistency loss after the ramp-up (>= 0).
        rampup_epochs: epochs of the sigmoid ramp-up of the consistency weight (0: none).
        learning_rate: constant Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: source patches per step (and as many target patches).
        patches_per_volume: source patches per source case and epoch.
        positive_fraction: share of source patches centred in the gland.
        noise_std: standard deviation of the gaussian noise of the target views (normalised intensities).
        scale_range, shift_range: intensity scale and shift of the target views.
        seed: seed of every random generator.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        num_threads: CPU threads for torch (``None``: torch's default).

    Raises:
        ConfigError: ``adapt option 'ema_decay' must be in [0, 1), got 1.5`` and the like.
    """

    epochs: int = 20
    ema_decay: float = 0.99
    consistency_weight: float = 1.0
    rampup_epochs: int = 5
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 2
    patches_per_volume: int = 4
    positive_fraction: float = 0.5
    noise_std: float = 0.1
    scale_range: tuple[float, float] = (0.9, 1.1)
    shift_range: tuple[float, float] = (-0.1, 0.1)
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    amp: bool = False

    def __post_init__(self) -> None:
        at_least_1, at_least_0 = (lambda v: checks.integer_at_least(v, 1)), (lambda v: checks.integer_at_least(v, 0))
        rules: dict[str, Any] = {"epochs": at_least_1, "batch_size": at_least_1, "patches_per_volume": at_least_1,
                                 "rampup_epochs": at_least_0, "seed": at_least_0,
                                 "ema_decay": lambda v: checks.number_in(v, 0.0, 1.0, high_open=True)}
        rules.update(dict.fromkeys(("consistency_weight", "weight_decay", "noise_std"), checks.non_negative_number))
        rules.update({"learning_rate": checks.positive_number,
                      "positive_fraction": lambda v: checks.number_in(v, 0.0, 1.0),
                      "scale_range": checks.number_range, "shift_range": checks.number_range})
        checks.check_options(self, "adapt", rules)
        for name in ("scale_range", "shift_range"):
            object.__setattr__(self, name, checks.number_range(getattr(self, name)))
        checks.check_options(self, "adapt", {
            "scale_range": lambda v: checks.need(v[0] > 0, "positive", v),
            "device": lambda v: checks.need(isinstance(v, str) and bool(v),
                                            "a device name (auto, cpu, cuda, cuda:N or mps)", v),
            "num_threads": lambda v: checks.optional_integer_at_least(v, 1),
            "amp": checks.boolean,
        })

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (ranges as lists)."""
        data = asdict(self)
        data["scale_range"], data["shift_range"] = list(self.scale_range), list(self.shift_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AdaptOptions":
        """The options saved by :meth:`to_dict` (unknown keys refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown adapt option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**data)


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class TargetImage:
    """An image of the target site: no label path at all, so adaptation cannot read one."""

    case_id: str
    site: str
    image: Path
    channel: int | None = None


def _sites_of_folder(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _target_images_in_folder(root: Path, site: str) -> list[TargetImage]:
    folder = root / site
    images = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        suffix = image_suffix(path.name)
        if suffix and not is_label_name(path.name):
            images.append(TargetImage(f"{site}/{path.name[: -len(suffix)]}", site, path))
    return images


def _index_csv(path: Path, target_site: str) -> tuple[list[Any], list[TargetImage], list[str]]:
    """Source records (labels checked) and target images (label column ignored) of a case list."""
    from ProstateKDLib.datasets import CaseRecord

    if not path.is_file():
        raise DataError(f"case list not found: {path}")
    columns, rows = read_csv_rows(path)
    for column in ("image", "site"):
        if column not in columns:
            raise DataError(f"case list {path.name}: missing column '{column}' (adaptation needs image,label,site)")
    numbered = [(line, row) for line, row in enumerate(rows, start=2) if any(row.values())]
    sites = sorted({row.get("site") or "default" for _, row in numbered})
    if target_site not in sites:
        raise _unknown_site(target_site, path, sites)
    source, target, seen = [], [], set()
    for line, row in numbered:
        site = row.get("site") or "default"
        image = resolve(path.parent, row.get("image") or "")
        suffix = image_suffix(image.name)
        case_id = f"{site}/{image.name[: -len(suffix)] if suffix else image.stem}"
        if not row.get("image") or not image.is_file():
            raise DataError(f"case {case_id}: image file not found: {image}")
        if case_id in seen:
            raise DataError(f"case list {path.name} line {line}: duplicate case {case_id}")
        seen.add(case_id)
        if site == target_site:
            target.append(TargetImage(case_id, site, image))
            continue
        if not row.get("label"):
            raise DataError(
                f"case list {path.name} line {line}: case {case_id} has no label (source cases need labels)"
            )
        label = resolve(path.parent, row["label"])
        if not label.is_file():
            raise DataError(f"case {case_id}: label file not found: {label} (source cases need labels)")
        source.append(CaseRecord(case_id, site, image, label))
    return source, target, sites


def _unknown_site(target_site: str, data: Any, sites: Sequence[str]) -> DataError:
    return DataError(f"no cases of site {target_site!r} in {data} (sites: {', '.join(sites) or 'none'})")


def index_adaptation_data(
    data: str | os.PathLike, target_site: str
) -> tuple[list[Any], list[TargetImage]]:
    """``(source cases, target images)`` of a multi-site folder or ``.csv`` case list.

    Source cases are the labelled cases of every site but ``target_site``
    (:class:`~ProstateKDLib.datasets.CaseRecord`); target images are the images of
    ``target_site`` only (:class:`TargetImage`, no label path: the target site's
    label files may be absent). Decathlon and Slicer-saved layouts are read with
    :func:`~ProstateKDLib.datasets.index_cases`, which needs every label on disk,
    and the target labels are dropped at once.

    Raises:
        DataError: ``no cases of site 'X' in <data> (sites: A, B)``; ``no labelled source cases ...``;
            and the messages of the data set indexers.
    """
    from ProstateKDLib.datasets import index_cases
    from ProstateKDLib.datasets import MSD_DESCRIPTOR
    from ProstateKDLib.datasets import SAVED_INDEX

    if not isinstance(target_site, str) or not target_site:
        raise DataError(f"target site must be a site name, got {target_site!r}")
    path = Path(data).expanduser()
    if str(data).lower().endswith(".csv"):
        source, target, sites = _index_csv(path, target_site)
    elif path.is_dir() and not (path / MSD_DESCRIPTOR).is_file() and not (path / SAVED_INDEX).is_file():
        sites = _sites_of_folder(path)
        target = _target_images_in_folder(path, target_site) if target_site in sites else []
        if not target:
            raise _unknown_site(target_site, data, sites)
        source = _source_cases_in_folder(path, [s for s in sites if s != target_site])
    else:
        records = index_cases(path)
        sites = sorted({r.site for r in records})
        source = [r for r in records if r.site != target_site]
        target = [TargetImage(r.case_id, r.site, r.image, r.channel) for r in records if r.site == target_site]
    if not target:
        raise _unknown_site(target_site, data, sites)
    if not source:
        raise DataError(f"no labelled source cases in {data}: every case is of the target site {target_site!r}")
    return sorted(source, key=lambda c: c.case_id), target


def _source_cases_in_folder(root: Path, sites: Sequence[str]) -> list[Any]:
    """Labelled cases of ``<root>/<site>/`` for ``sites`` (same pairing rules as ``index_multisite``)."""
    from ProstateKDLib.datasets import CaseRecord

    records = []
    for site in sites:
        folder = root / site
        files = {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
        for name in sorted(files):
            suffix = image_suffix(name)
            if suffix is None or is_label_name(name):
                continue
            stem = name[: -len(suffix)]
            label = find_label(files, stem, suffix)
            if label is None:
                raise DataError(f"case {site}/{stem}: label file missing (expected {site}/{label_name(stem, suffix)}); "
                                "source cases need labels")
            records.append(CaseRecord(f"{site}/{stem}", site, files[name], label))
    return records


# ------------------------------------------------------------------ mean teacher pieces
def make_teacher(student: Any) -> Any:
    """A frozen deep copy of ``student`` (no gradients), to follow it by :func:`ema_update`."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def ema_update(teacher: Any, student: Any, decay: float) -> None:
    """``θ_t ← decay · θ_t + (1 − decay) · θ_s`` for every parameter; buffers copied from the student."""
    import torch

    with torch.no_grad():
        student_params = dict(student.named_parameters())
        for name, param in teacher.named_parameters():
            param.mul_(decay).add_(student_params[name].detach(), alpha=1.0 - decay)
        student_buffers = dict(student.named_buffers())
        for name, buffer in teacher.named_buffers():
            buffer.copy_(student_buffers[name])


def consistency_rampup(step: int, rampup_steps: int) -> float:
    """Sigmoid ramp-up ``exp(−5 (1 − t)²)``, ``t = step / rampup_steps`` clipped to [0, 1]; 1 without ramp-up."""
    if rampup_steps <= 0:
        return 1.0
    t = min(max(step / rampup_steps, 0.0), 1.0)
    return float(math.exp(-RAMPUP_SHARPNESS * (1.0 - t) ** 2))


def intensity_view(x: Any, generator: Any, options: Any) -> Any:
    """``x · scale + shift + noise`` per sample (scale, shift uniform; noise gaussian): no geometric change.

    ``options``: anything with ``scale_range``, ``shift_range`` and ``noise_std`` (adapt's or coteach's options).
    """
    import torch

    n = x.shape[0]
    shape = (n,) + (1,) * (x.dim() - 1)
    lo, hi = options.scale_range
    scale = lo + (hi - lo) * torch.rand(shape, generator=generator)
    lo, hi = options.shift_range
    shift = lo + (hi - lo) * torch.rand(shape, generator=generator)
    noise = torch.randn(x.shape, generator=generator) * options.noise_std
    return x * scale.to(x.device) + shift.to(x.device) + noise.to(x.device)


def consistency_loss(student_logits: Any, teacher_logits: Any) -> Any:
    """Mean squared error between the softmax probabilities (teacher detached)."""
    import torch.nn.functional as F

    return F.mse_loss(F.softmax(student_logits.float(), dim=1), F.softmax(teacher_logits.detach().float(), dim=1))


class TargetSampler:
    """Uniformly placed patches of the target images (no labels), from one checkpointable generator."""

    def __init__(self, volumes: Sequence[Any], patch_size: Sequence[int], seed: Sequence[int]) -> None:
        from .sampling import pad_to

        if not volumes:
            raise ValueError("TargetSampler needs at least one volume")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.volumes = [pad_to(v.float(), self.patch_size) for v in volumes]
        self.rng = np.random.default_rng(list(seed))

    def batch(self, size: int) -> Any:
        """``(size, 1, x, y, z)`` patches, each from a random volume at a random position."""
        import torch

        patches = []
        for _ in range(size):
            volume = self.volumes[int(self.rng.integers(len(self.volumes)))]
            starts = [int(self.rng.integers(n - p + 1)) for n, p in zip(volume.shape[1:], self.patch_size)]
            patches.append(volume[:, starts[0]:starts[0] + self.patch_size[0], starts[1]:starts[1] + self.patch_size[1],
                                  starts[2]:starts[2] + self.patch_size[2]])
        return torch.stack(patches)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.rng.bit_generator.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = dict(state)


# ------------------------------------------------------------------ run folder
def _load_bundle(bundle: Any) -> Any:
    from ProstateKDLib.bundle import ModelBundle, resolve_model

    loaded = bundle if isinstance(bundle, ModelBundle) else resolve_model(bundle)
    meta = loaded.meta
    if len(meta.channels) != 1:
        raise BundleError(
            f"{loaded.path}: adaptation supports single-channel models, this one has {list(meta.channels)}"
        )
    if meta.num_classes != 2:
        raise BundleError(f"{loaded.path}: adaptation supports background + gland models, this one has "
                          f"{meta.num_classes} classes")
    return loaded


def _preprocess_target(image: TargetImage, meta: Any) -> Any:
    """The target image on the model grid, normalised: read exactly as inference reads it (no label)."""
    import torch

    from ProstateKDLib.datasets import read_image
    from ProstateKDLib.preprocessing import preprocess_image

    volume = read_image(image)  # uses only .image, .channel and .case_id
    tensor, _ = preprocess_image(volume, meta.orientation, meta.spacing, meta.normalization)
    return torch.as_tensor(tensor.as_tensor(), dtype=torch.float32).contiguous()


def _describe_bundle(bundle: Any) -> dict[str, Any]:
    meta = bundle.meta
    return {"name": meta.name, "version": meta.version, "path": str(Path(bundle.path).resolve()),
            "method": meta.provenance.get("method"), "validation_dice": meta.provenance.get("validation_dice")}


def build_model_json(bundle: Any, options: AdaptOptions, target_site: str, source_cases: Sequence[Any],
                     target_images: Sequence[TargetImage], epochs_trained: int, parameters: int,
                     git: dict[str, Any] | None) -> dict[str, Any]:
    """``model.json`` of the adapted model: the original's, renamed, with the adaptation in its provenance."""
    from ProstateKDLib import __version__

    original = copy.deepcopy(dict(bundle.meta.raw))
    old = dict(original.get("provenance") or {})
    source_sites = sorted({c.site for c in source_cases})
    model_json = dict(original)
    model_json["name"] = f"{bundle.meta.name}-{target_site}-adapted"
    model_json["description"] = (
        f"{bundle.meta.description} Adapted to site {target_site} without its labels (mean teacher; "
        "the exported weights are the EMA teacher's)."
    )
    model_json["weights"] = "model.safetensors"
    model_json["provenance"] = {
        **old,
        "training_data": f"{old.get('training_data', 'unknown')}; adapted with the unlabelled images of site "
        f"{target_site} and the labelled cases of site{'s' if len(source_sites) > 1 else ''} {', '.join(source_sites)}",
        "method": f"mean teacher domain adaptation (Tarvainen & Valpola 2017) of '{bundle.meta.name}' to site "
        f"{target_site}: supervised Dice + CE on the source sites, softmax-MSE consistency with an EMA teacher "
        f"(decay {options.ema_decay:g}, weight {options.consistency_weight:g}, sigmoid ramp-up over "
        f"{options.rampup_epochs} epochs) on the target site; exported weights: the EMA teacher; "
        "no target labels used",
        "adaptation": {
            "method": METHOD,
            "adapted_from": {**_describe_bundle(bundle), "provenance": old},
            "target_site": target_site,
            "target_labels_used": False,
            "exported_weights": "ema_teacher",
            "source_sites": source_sites,
            "source_cases": len(source_cases),
            "target_cases": len(target_images),
            "options": options.to_dict(),
        },
        "validation_dice": None,
        "validation": "none: no labels of the target site were used",
        "date": _dt.date.today().isoformat(),
        "epochs_trained": epochs_trained,
        "git_commit": (git or {}).get("commit"),
        "software_version": f"prostatekd {__version__}",
        "parameters": parameters,
    }
    return model_json


# ------------------------------------------------------------------ adaptation
def adapt(
    bundle: Any,
    data: str | os.PathLike,
    target_site: str,
    out_dir: str | os.PathLike,
    options: AdaptOptions | None = None,
    resume: bool = False,
    progress: bool = True,
    **option_values: Any,
) -> Path:
    """Adapt the student ``bundle`` to ``target_site`` of ``data`` with a mean teacher; write ``out_dir``.

    Args:
        bundle: the student: a bundle path or installed name (or a loaded ``ModelBundle``).
        data: multi-site folder (``<SITE>/CaseNN.nii.gz``) or ``.csv`` case list (``image,label,site``).
        target_site: the site to adapt to; its label files are never read (they may be absent).
        out_dir: new or empty folder (created), or the folder of an adaptation to resume.
        options: an :class:`AdaptOptions`; or give its fields as keywords
            (``epochs=5, ema_decay=0.99, consistency_weight=1.0, ...``).
        resume: continue from ``out_dir/checkpoint_last.pt`` (up to ``epochs``).
        progress: tqdm bars and one line per epoch.

    Returns:
        ``out_dir``; the adapted model (the EMA teacher) is ``out_dir/bundle``.

    Raises:
        ConfigError: a bad option (the message names it and its value), or options that differ on resume.
        DataError: unknown target site (the message lists the sites found), no source case, unreadable case.
        BundleError: the bundle cannot be loaded or is not a single-channel two-class model.
        OutputError: ``out_dir`` not empty (without ``resume``) or nothing to resume.
        DeviceError: the device is not available.
    Nothing is written before every check has passed.
    """
    if options is None:
        options = AdaptOptions(**option_values)
    elif option_values:
        options = AdaptOptions(**{**options.to_dict(), **option_values})
    elif not isinstance(options, AdaptOptions):
        raise ConfigError(f"options must be AdaptOptions, got {type(options).__name__}")
    out_dir = Path(out_dir).expanduser()
    loaded = _load_bundle(bundle)
    source_cases, target_images = index_adaptation_data(data, target_site)
    check_output_folder(out_dir, resume, activity="adaptation")
    from .engine import fit

    return fit(AdaptMethod(loaded, data, target_site, options, source_cases, target_images), out_dir, resume=resume,
               progress=progress)


class UnlabelledViewsMethod(Method):
    """A method that also learns from unlabelled patches seen through two intensity views (adapt, coteach).

    The subclass sets ``record`` (its ``options.json``), ``options`` (with the view settings),
    ``target`` (a :class:`TargetSampler`) and ``augment`` (the views' generator) in ``build``.
    """

    target_key = "target_sampler"

    def extra_state(self) -> dict[str, Any]:
        return {"options": self.record, self.target_key: self.target.state_dict(),
                "augment_rng": self.augment.get_state()}

    def load_extra_state(self, checkpoint: Any) -> None:
        self.target.load_state_dict(checkpoint[self.target_key])
        self.augment.set_state(checkpoint["augment_rng"])

    def write_records(self, run_dir: Path) -> None:
        from .runinfo import write_json

        write_json(self.record, run_dir / OPTIONS_JSON)

    def views(self, size: int) -> tuple[Any, Any]:
        """Two intensity views (on the device) of the same ``size`` unlabelled patches."""
        batch = self.target.batch(size)
        device = self.run.device
        return (intensity_view(batch, self.augment, self.options).to(device),
                intensity_view(batch, self.augment, self.options).to(device))


class AdaptMethod(UnlabelledViewsMethod):
    """Mean-teacher adaptation for :func:`training.engine.fit`: source patches + target views, EMA teacher."""

    command = "adapt"
    activity = "adaptation"
    epoch_label = "adapt epoch"
    sampler_key = "source_sampler"
    log_columns = LOG_COLUMNS

    def __init__(self, bundle: Any, data: Any, target_site: str, options: AdaptOptions, source_cases: list[Any],
                 target_images: list[TargetImage]) -> None:
        self.bundle, self.target_site, self.options = bundle, target_site, options
        self.source_cases, self.target_images = source_cases, target_images
        self.epochs, self.seed, self.device, self.amp = options.epochs, options.seed, options.device, options.amp
        self.num_threads, self.learning_rate = options.num_threads, options.learning_rate
        self.patches_per_volume, self.batch_size = options.patches_per_volume, options.batch_size
        self.record = {"method": METHOD, "bundle": str(Path(bundle.path).resolve()),
                       "data": str(Path(data).expanduser().resolve()), "target_site": target_site, **options.to_dict()}

    def check_resumable(self, checkpoint: Any) -> None:
        check_resumable_options(checkpoint.get("options", {}), self.record, FREE_OPTIONS, "adapt", "adaptation")

    def build(self, run: Run) -> None:
        import torch
        from tqdm.auto import tqdm

        from ProstateKDLib.datasets import load_case
        from training.distillers.parts import dice_ce_loss

        from .sampling import PatchSampler

        meta, options, device = self.bundle.meta, self.options, run.device
        self.run = run
        self.student = self.bundle.build_network().to(device)
        self.teacher = make_teacher(self.student).to(device)
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=options.learning_rate,
                                          weight_decay=options.weight_decay)
        self.loss_fn = dice_ce_loss()
        self.augment = torch.Generator().manual_seed(options.seed)
        bar_opts = {"disable": not run.progress, "leave": False}
        norm = dict(meta.normalization)
        source_volumes = [load_case(c, meta.orientation, meta.spacing, norm)
                          for c in tqdm(self.source_cases, desc="preprocessing source cases", unit="case", **bar_opts)]
        target_volumes = [_preprocess_target(t, meta)
                          for t in tqdm(self.target_images, desc="preprocessing target images", unit="case", **bar_opts)]
        self.sampler = PatchSampler(source_volumes, meta.patch_size, options.positive_fraction, seed=[options.seed, 1])
        self.target = TargetSampler(target_volumes, meta.patch_size, seed=[options.seed, 2])
        self.steps_per_epoch = self.sampler.iterations(options.patches_per_volume, options.batch_size)
        self.rampup_steps = options.rampup_epochs * self.steps_per_epoch

    def networks(self) -> dict[str, Any]:
        return {"model": self.student, "teacher": self.teacher}

    def optimizers(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer}

    def run_info(self, run: Run) -> dict[str, Any]:
        from ProstateKDLib.networks import count_parameters

        options = self.options
        return {
            "method": METHOD, "exported_weights": "ema_teacher", "bundle": _describe_bundle(self.bundle),
            "target_site": self.target_site, "target_labels_used": False, "options": options.to_dict(),
            "seeds": {"seed": options.seed, "source_sampler": [options.seed, 1], "target_sampler": [options.seed, 2]},
            "parameters": count_parameters(self.student),
            "data": {"root": self.record["data"], "source_cases": [c.case_id for c in self.source_cases],
                     "target_cases": [t.case_id for t in self.target_images]},
        }

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        self.teacher.eval()
        self.student.train()
        return {}

    def step(self, batch: dict[str, Any], step: int) -> tuple[Any, dict[str, Any]]:
        import torch

        from training.distillers.parts import dice_ce_terms

        options, device, image = self.options, self.run.device, batch["image"]
        weight = options.consistency_weight * consistency_rampup(step, self.rampup_steps)
        view_student, view_teacher = self.views(image.shape[0])
        terms = dice_ce_terms(self.loss_fn, self.student(image.to(device)), batch["label"].to(device))
        with torch.no_grad():
            teacher_logits = self.teacher(view_teacher)
        cons = consistency_loss(self.student(view_student), teacher_logits)
        sup = terms["dice"] + terms["ce"]
        loss = sup + weight * cons
        values = {"loss": loss, "sup": sup, "dice": terms["dice"], "ce": terms["ce"], "consistency": cons}
        return loss, {**{k: v.detach() for k, v in values.items()}, "consistency_weight": weight}

    def after_step(self) -> None:
        ema_update(self.teacher, self.student, self.options.ema_decay)

    def epoch_line(self, epoch: int, row: Any) -> str:
        return (f"adapt epoch {epoch}/{self.epochs}: loss {row['loss']:.4f} sup {row['sup']:.4f} "
                f"consistency {row['consistency']:.5f} (weight {row['consistency_weight']:.3f}) "
                f"({row['seconds']:.1f} s)")

    def export(self, run: Run) -> None:
        from ProstateKDLib.bundle import save_bundle
        from ProstateKDLib.networks import count_parameters

        from .runinfo import git_commit

        model_json = build_model_json(self.bundle, self.options, self.target_site, self.source_cases,
                                      self.target_images, run.state["epoch"], count_parameters(self.teacher),
                                      git_commit())
        save_bundle(run.run_dir / BUNDLE_DIR, model_json, self.teacher.state_dict(), overwrite=True)


# ------------------------------------------------------------------ before / after evaluation
def target_cases_with_labels(data: str | os.PathLike, target_site: str) -> list[Any] | None:
    """The target site's labelled cases for evaluation, or ``None`` when any of its labels is missing.

    Call it only after adapting: this is the one place the target labels are looked at.
    """
    from ProstateKDLib.datasets import CaseRecord, index_cases

    path = Path(data).expanduser()
    if path.is_dir() and not str(data).lower().endswith(".csv"):
        images = _target_images_in_folder(path, target_site) if (path / target_site).is_dir() else []
        cases = []
        for image in images:
            suffix = image_suffix(image.image.name) or ""
            stem = image.image.name[: -len(suffix)]
            label = find_label({p.name: p for p in image.image.parent.iterdir()}, stem, suffix)
            if label is None:
                return None
            cases.append(CaseRecord(image.case_id, target_site, image.image, label, image.channel))
        if cases:
            return cases
    try:
        cases = [c for c in index_cases(path) if c.site == target_site]
    except DataError:
        return None
    return cases or None


def evaluate_before_after(
    bundle: Any, adapted: str | os.PathLike, data: str | os.PathLike, target_site: str,
    out: str | os.PathLike, device: str = "auto", progress: bool = True, num_threads: int | None = None,
) -> dict[str, Any] | None:
    """Dice etc. of the original and the adapted bundle on the target site (``training.evaluate``).

    Returns the evaluation summary, or ``None`` (nothing written) when the target labels are not all on disk.
    """
    from .evaluate import evaluate

    cases = target_cases_with_labels(data, target_site)
    if cases is None:
        return None
    original = bundle.path if hasattr(bundle, "path") else bundle
    return evaluate([str(original), str(adapted)], cases, out, device=device, progress=progress, overwrite=True,
                    num_threads=num_threads,
                    source={"data": str(Path(data).expanduser().resolve()), "target_site": target_site,
                            "note": "before (original bundle) and after (adapted bundle) mean-teacher adaptation"})
