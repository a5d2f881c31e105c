"""Semi-supervised co-teacher knowledge distillation: a large and a small network teach each other.

Method (after ACT-Net, Zhao et al. 2022, "ACT-Net: Asymmetric Co-Teacher Network
for Semi-supervised Memory-efficient Medical Image Segmentation"):

* the **small** network is the config's model (the student architecture, with the
  config's preprocessing: orientation, spacing, normalization, patch size); the
  **large** network is a registered network name + keyword arguments
  (default: a wide residual UNet);
* **labelled** cases (the config's ``data``: training split; the validation split
  gives the per-epoch validation Dice of both) train *both* networks with the
  supervised Dice + cross-entropy loss (MONAI ``DiceCELoss``);
* **unlabelled** images (a folder or ``.csv`` of images; their label files, if
  any, are never read and may be absent) are seen through two random intensity
  augmentations (scale, shift, gaussian noise; nothing geometric, so voxels stay
  aligned). In each step one network is the **teacher**, the other the
  **learner**; the roles alternate every ``alternate_every`` epochs, the large
  network teaching first. The teacher's softmax on view 1 (no gradient, eval
  mode) gives pseudo-labels ``argmax p`` where ``max p >= confidence``
  (:func:`confidence_mask`); the learner, on view 2, gets a masked cross-entropy
  to those pseudo-labels (summed over kept voxels, divided by all voxels, as in
  FixMatch, so it fades when few voxels pass the filter) plus the softmax MSE
  consistency with the teacher, weighted by ``consistency_weight · ramp-up``;
* the exported model is the **small** network (``out/bundle``); the large one is
  exported too (``out/large_bundle``).

The output folder holds::

    options.json          the resolved options, the config and the unlabelled data
    run.json              code version, packages, machine, seeds, labelled / unlabelled case lists
    log.csv               per epoch: teacher, sup_large, sup_small, pseudo, consistency, coverage,
                          consistency_weight, val_dice_large, val_dice_small, lr, seconds
    checkpoint_last.pt    both networks (``model``: the small one, ``large_model``), both optimizers,
                          samplers, random generators (atomic, each epoch)
    bundle/               the small network, provenance method ``coteach``
    large_bundle/         the large network

``resume=True`` continues from ``checkpoint_last.pt`` (on the CPU with the exact
result of an uninterrupted run); only ``epochs``, ``device`` and ``num_threads``
may change.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from ProstateKDLib import checks
from ProstateKDLib.datasets import image_suffix, is_label_name, read_csv_rows, resolve
from ProstateKDLib.errors import ConfigError, DataError, OutputError

from .adapt import (
    TargetImage,
    TargetSampler,
    UnlabelledViewsMethod,
    consistency_loss,
    consistency_rampup,
)
from .config import Config, ModelConfig, load_config
from .engine import Run
from .run_folder import check_output_folder, check_resumable_options

METHOD = "coteach"
OPTIONS_JSON = "options.json"
BUNDLE_DIR = "bundle"
LARGE_BUNDLE_DIR = "large_bundle"
ROLES = ("large", "small")
# checkpoint keys of each network and its optimizer: the exported small network is ``model``
CHECKPOINT_KEYS = {"small": ("model", "optimizer"), "large": ("large_model", "large_optimizer")}
DEFAULT_LARGE_CHANNELS = (16, 32, 64, 128)
LOG_COLUMNS = ("epoch", "teacher", "loss", "sup_large", "sup_small", "pseudo", "consistency", "coverage",
               "consistency_weight", "val_dice_large", "val_dice_small", "lr", "seconds")
FREE_OPTIONS = ("epochs", "device", "num_threads")  # may change on resume


def large_unet_kwargs(channels: Sequence[int] = DEFAULT_LARGE_CHANNELS) -> dict[str, Any]:
    """Residual UNet kwargs with ``channels`` and stride 2 between levels (the CLI's ``--large-channels``)."""
    channels = [int(c) for c in channels]
    return {"channels": channels, "strides": [2] * (len(channels) - 1), "num_res_units": 1}


@dataclass(frozen=True)
class CoteachOptions:
    """Hyper-parameters of co-teaching (checked on construction).

    Attributes:
        large_network: registered network name of the large co-teacher.
        large_kwargs: its keyword arguments (``in_channels``/``out_channels`` come from the config).
        epochs: passes over the labelled training cases (``None``: ``train.epochs`` of the config).
        confidence: pseudo-labels keep voxels whose teacher max probability is >= this, in (0, 1].
        alternate_every: epochs per role; the large network teaches first.
        consistency_weight: weight of the softmax-MSE consistency after the ramp-up (>= 0).
        pseudo_weight: weight of the masked pseudo-label cross-entropy (>= 0).
        rampup_epochs: epochs of the sigmoid ramp-up of both unlabelled weights (0: none).
        unlabelled_batch_size: unlabelled patches per step (``None``: ``train.batch_size``).
        noise_std, scale_range, shift_range: the intensity augmentations of the two unlabelled views.
        device, num_threads: ``None``: the config's ``train.device`` / ``train.num_threads``.
        The batch size, patches per volume, learning rate (schedule), optimizer, weight decay and
        seed are the config's ``train`` section.

    Raises:
        ConfigError: ``coteach option 'confidence' must be a number in (0, 1], got 1.5`` and the like.
    """

    large_network: str = "unet"
    large_kwargs: Mapping[str, Any] = field(default_factory=large_unet_kwargs)
    epochs: int | None = None
    confidence: float = 0.9
    alternate_every: int = 1
    consistency_weight: float = 1.0
    pseudo_weight: float = 1.0
    rampup_epochs: int = 0
    unlabelled_batch_size: int | None = None
    noise_std: float = 0.1
    scale_range: tuple[float, float] = (0.9, 1.1)
    shift_range: tuple[float, float] = (-0.1, 0.1)
    device: str | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        def fail(name: str, need: str) -> ConfigError:
            return ConfigError(f"coteach option '{name}' must be {need}, got {getattr(self, name)!r}")

        from ProstateKDLib.networks import NETWORKS

        if not isinstance(self.large_network, str) or self.large_network not in NETWORKS:
            raise fail("large_network", f"a registered network ({', '.join(NETWORKS.names())})")
        if not isinstance(self.large_kwargs, Mapping):
            raise fail("large_kwargs", "a mapping of network arguments")
        object.__setattr__(self, "large_kwargs", copy.deepcopy(dict(self.large_kwargs)))
        optional_1 = lambda v: checks.optional_integer_at_least(v, 1)  # noqa: E731
        rules: dict[str, Any] = {"epochs": optional_1, "unlabelled_batch_size": optional_1, "num_threads": optional_1,
                                 "alternate_every": lambda v: checks.integer_at_least(v, 1),
                                 "rampup_epochs": lambda v: checks.integer_at_least(v, 0),
                                 "confidence": lambda v: checks.number_in(v, 0.0, 1.0, low_open=True)}
        rules.update(dict.fromkeys(("consistency_weight", "pseudo_weight", "noise_std"), checks.non_negative_number))
        rules.update({"scale_range": checks.number_range, "shift_range": checks.number_range})
        checks.check_options(self, "coteach", rules)
        for name in ("scale_range", "shift_range"):
            object.__setattr__(self, name, checks.number_range(getattr(self, name)))
        checks.check_options(self, "coteach", {
            "scale_range": lambda v: checks.need(v[0] > 0, "positive", v),
            "device": lambda v: checks.need(v is None or (isinstance(v, str) and bool(v)),
                                            "a device name (auto, cpu, cuda, cuda:N or mps) or None", v),
        })

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (tuples as lists)."""
        from ProstateKDLib.checks import plain_data

        return plain_data(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CoteachOptions":
        """The options saved by :meth:`to_dict` (unknown keys refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown coteach option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**data)

    def resolved(self, config: Config) -> "CoteachOptions":
        """``None`` fields filled from the config's ``train`` section."""
        t = config.train
        return CoteachOptions(**{
            **self.to_dict(),
            "epochs": self.epochs or t.epochs,
            "unlabelled_batch_size": self.unlabelled_batch_size or t.batch_size,
            "device": self.device or t.device,
            "num_threads": self.num_threads if self.num_threads is not None else t.num_threads,
        })


# ------------------------------------------------------------------ pure pieces
def teacher_for_epoch(epoch: int, alternate_every: int) -> str:
    """``"large"`` or ``"small"``: who teaches in ``epoch`` (1-based); the large network first."""
    return ROLES[((epoch - 1) // alternate_every) % 2]


def confidence_mask(probabilities: Any, threshold: float) -> tuple[Any, Any]:
    """``(pseudo_labels, mask)`` of softmax ``probabilities`` ``(B, C, ...)``.

    ``pseudo_labels`` is ``argmax_c p`` (``(B, ...)`` long); ``mask`` (bool) keeps the
    voxels whose maximum probability is ``>= threshold``.
    """
    confidence, labels = probabilities.max(dim=1)
    return labels, confidence >= threshold


def pseudo_label_loss(logits: Any, pseudo_labels: Any, mask: Any) -> Any:
    """Cross-entropy to ``pseudo_labels`` on the kept voxels, summed and divided by all voxels (FixMatch)."""
    import torch.nn.functional as F

    ce = F.cross_entropy(logits.float(), pseudo_labels, reduction="none")
    return (ce * mask.float()).sum() / max(1, mask.numel())


# ------------------------------------------------------------------ unlabelled data
def index_unlabelled(data: str | os.PathLike) -> list[TargetImage]:
    """Images of a folder or ``.csv`` (column ``image``; ``label`` and ``site`` optional, labels ignored).

    A folder is searched for images at its top level and one level down (site folders:
    ``<SITE>/CaseNN.nii.gz``); label files (``*_segmentation.*``) are skipped, so
    labelled-format data sets can be given and their labels are never read.

    Raises:
        DataError: not found, no image, a missing ``image`` column or file, a duplicate.
    """
    path = Path(data).expanduser()
    images: list[TargetImage] = []
    if str(data).lower().endswith(".csv"):
        if not path.is_file():
            raise DataError(f"unlabelled case list not found: {path}")
        columns, rows = read_csv_rows(path)
        if "image" not in columns:
            raise DataError(f"unlabelled case list {path.name}: missing column 'image'")
        for row in rows:
            if not any(row.values()):
                continue
            image = resolve(path.parent, row.get("image") or "")
            suffix = image_suffix(image.name)
            site = row.get("site") or "unlabelled"
            case_id = f"{site}/{image.name[: -len(suffix)] if suffix else image.stem}"
            if not row.get("image") or not image.is_file():
                raise DataError(f"unlabelled case {case_id}: image file not found: {image}")
            images.append(TargetImage(case_id, site, image))
    elif path.is_dir():
        folders = [(path, "unlabelled")] + [(p, p.name) for p in sorted(path.iterdir())
                                            if p.is_dir() and not p.name.startswith(".")]
        for folder, site in folders:
            for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
                suffix = image_suffix(file.name)
                if suffix and not is_label_name(file.name):
                    images.append(TargetImage(f"{site}/{file.name[: -len(suffix)]}", site, file))
    else:
        raise DataError(f"unlabelled data not found: {data} (give a folder of images or a .csv with an image column)")
    if not images:
        raise DataError(f"no unlabelled images in {data}")
    seen: set[str] = set()
    for image in images:
        if image.case_id in seen:
            raise DataError(f"unlabelled data {data}: duplicate case {image.case_id}")
        seen.add(image.case_id)
    return images


def _preprocess_unlabelled(image: TargetImage, config: Config) -> Any:
    """The image on the config's model grid, normalised (its label, if any, is not read)."""
    import torch

    from ProstateKDLib.datasets import read_image
    from ProstateKDLib.preprocessing import preprocess_image

    pre = config.preprocessing
    volume = read_image(image)  # uses only .image, .channel and .case_id
    tensor, _ = preprocess_image(volume, pre.orientation, pre.spacing, pre.normalization.as_dict())
    return torch.as_tensor(tensor.as_tensor(), dtype=torch.float32).contiguous()


# ------------------------------------------------------------------ run folder
def _check_large(config: Config, options: CoteachOptions) -> ModelConfig:
    """The large network as a model section, checked like the config's (arguments, patch divisibility)."""
    from .config import check_model

    large = ModelConfig(options.large_network, dict(options.large_kwargs), config.model.in_channels,
                        config.model.num_classes)
    try:
        check_model(large, tuple(config.preprocessing.patch_size), "coteach")
    except ConfigError as exc:
        message = str(exc).replace("config coteach: ", f"coteach large network {large.network!r}: ")
        raise ConfigError(message.replace("key 'model.", "key '")) from None
    return large


def _describe_large(large: ModelConfig, parameters: int) -> dict[str, Any]:
    return {"network": large.network, "kwargs": copy.deepcopy(dict(large.kwargs)), "parameters": parameters}


def _model_jsons(config: Config, options: CoteachOptions, large: ModelConfig, labelled: Sequence[Any],
                 unlabelled: Sequence[TargetImage], state: Mapping[str, Any], small_params: int,
                 large_params: int, git: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model.json`` of the small network and of the large one (export's format + a ``coteaching`` record)."""
    from .export import build_model_json

    history = state["history"]
    last = history[-1] if history else {}
    epoch = int(state["epoch"])
    record = {
        "method": METHOD,
        "labelled_cases": len(labelled),
        "unlabelled_cases": len(unlabelled),
        "unlabelled_labels_used": False,
        "large_network": _describe_large(large, large_params),
        "small_network": {"network": config.model.network, "kwargs": copy.deepcopy(dict(config.model.kwargs)),
                          "parameters": small_params},
        "options": options.to_dict(),
    }
    description = (
        f"coteach: semi-supervised co-teacher KD (after ACT-Net, Zhao et al. 2022) of a large "
        f"{large.network} ({large_params} parameters) and a small {config.model.network} ({small_params} "
        f"parameters) on {len(labelled)} labelled and {len(unlabelled)} unlabelled cases: supervised Dice + CE for "
        f"both; roles alternating every {options.alternate_every} epoch(s), the teacher's pseudo-labels with max "
        f"probability >= {options.confidence:g} (masked CE, weight {options.pseudo_weight:g}) and softmax-MSE "
        f"consistency (weight {options.consistency_weight:g}) on intensity-augmented unlabelled views"
    )
    jsons = []
    for role, params in (("small", small_params), ("large", large_params)):
        model_json = build_model_json(config, epoch, epoch, last.get(f"val_dice_{role}"), params, git,
                                      training_cases=len(labelled))
        prov = model_json["provenance"]
        prov["method"] = description + f"; this bundle: the {role} network"
        prov["distillation"] = {"distiller": METHOD, "weights": {
            "sup": 1.0, "pseudo": options.pseudo_weight, "consistency": options.consistency_weight},
            "options": options.to_dict()}
        prov["training_data"] = (f"{prov.get('training_data', 'unknown')}; plus {len(unlabelled)} unlabelled "
                                 "images (labels not used)")
        prov["coteaching"] = {**record, "role": role}
        if role == "large":
            model_json["name"] = f"{config.export.name}-large"
            model_json["description"] = (f"Large co-teacher of {config.export.name} (coteach). "
                                         f"{config.export.description}").strip()
            model_json["network"] = {"name": large.network, "kwargs": copy.deepcopy(dict(large.kwargs))}
        jsons.append(model_json)
    return jsons[0], jsons[1]


# ------------------------------------------------------------------ co-teaching
def coteach(
    config: Config | str | os.PathLike,
    unlabelled: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: CoteachOptions | None = None,
    resume: bool = False,
    progress: bool = True,
    **option_values: Any,
) -> Path:
    """Co-teach the config's (small) network and a large one on labelled + unlabelled data; write ``out_dir``.

    Args:
        config: a :class:`~training.config.Config` or YAML path: the small network, preprocessing,
            labelled data (``data.root``, split into training and validation cases) and ``train`` settings.
        unlabelled: folder or ``.csv`` of images (see :func:`index_unlabelled`); labels never read.
        out_dir: new or empty folder (created), or the folder of a co-teaching to resume.
        options: a :class:`CoteachOptions`; or its fields as keywords (``epochs=5, confidence=0.9, ...``).
        resume: continue from ``out_dir/checkpoint_last.pt`` (up to ``epochs``).
        progress: tqdm bars and one line per epoch.

    Returns:
        ``out_dir``; the small network is ``out_dir/bundle``, the large one ``out_dir/large_bundle``.

    Raises:
        ConfigError: a bad option or large network, or options that differ on resume.
        DataError: no labelled or unlabelled cases, an unreadable case, an unlabelled image that is
            also a labelled case.
        OutputError: ``out_dir`` not empty (without ``resume``) or nothing to resume.
        DeviceError: the device is not available.
    Nothing is written before every check has passed.
    """
    if options is None:
        options = CoteachOptions(**option_values)
    elif not isinstance(options, CoteachOptions):
        raise ConfigError(f"options must be CoteachOptions, got {type(options).__name__}")
    elif option_values:
        options = CoteachOptions(**{**options.to_dict(), **option_values})
    if not isinstance(config, Config):
        config = load_config(config)
    options = options.resolved(config)
    if config.model.in_channels != 1 or config.model.num_classes != 2:
        raise ConfigError(f"config {config.source}: coteach supports single-channel background + gland models")
    large = _check_large(config, options)
    out_dir = Path(out_dir).expanduser()
    from .cases import select_cases

    train_cases, val_cases = select_cases(config)
    images = index_unlabelled(unlabelled)
    labelled_paths = {Path(c.image).resolve() for c in list(train_cases) + list(val_cases)}
    clash = next((i for i in images if Path(i.image).resolve() in labelled_paths), None)
    if clash is not None:
        raise DataError(f"unlabelled image {clash.image} is also a labelled case of {config.data.root}")
    check_output_folder(out_dir, resume, activity="co-teaching")
    from .engine import fit

    method = CoteachMethod(config, unlabelled, options, large, train_cases, val_cases, images)
    return fit(method, out_dir, resume=resume, progress=progress)


class CoteachMethod(UnlabelledViewsMethod):
    """Co-teaching for :func:`training.engine.fit`: both networks on labelled patches, one teaches on unlabelled views.

    The learning-rate schedule, warm-up, gradient clipping and AMP are the config's ``train`` settings.
    """

    command = "coteach"
    activity = "co-teaching"
    epoch_label = "coteach epoch"
    sampler_key = "labelled_sampler"
    target_key = "unlabelled_sampler"
    log_columns = LOG_COLUMNS

    def __init__(self, config: Config, unlabelled: Any, options: CoteachOptions, large: ModelConfig,
                 train_cases: list[Any], val_cases: list[Any], images: list[TargetImage]) -> None:
        t = config.train
        self.config, self.options, self.large = config, options, large
        self.train_cases, self.val_cases, self.images = train_cases, val_cases, images
        self.epochs, self.seed, self.device, self.amp = options.epochs, t.seed, options.device, t.amp
        self.num_threads, self.learning_rate, self.lr_schedule = options.num_threads, t.learning_rate, t.lr_schedule
        self.warmup_steps, self.grad_clip = t.warmup_steps, t.grad_clip
        self.patches_per_volume, self.batch_size = t.patches_per_volume, t.batch_size
        config_record = config.to_dict()
        for key in FREE_OPTIONS:
            config_record["train"].pop(key, None)
        self.record = {"method": METHOD, "config": config_record,
                       "unlabelled": str(Path(unlabelled).expanduser().resolve()), **options.to_dict()}

    def check_resumable(self, checkpoint: Any) -> None:
        check_resumable_options(checkpoint.get("options", {}), self.record, FREE_OPTIONS, "coteach", "co-teaching")

    def build(self, run: Run) -> None:
        import torch
        from tqdm.auto import tqdm

        from ProstateKDLib.datasets import load_case
        from ProstateKDLib.networks import build_network
        from training.distillers.parts import dice_ce_loss

        from .sampling import PatchSampler

        config, cfg_t, device = self.config, self.config.train, run.device
        self.run = run
        self.nets = {"small": build_network(config.model.network, config.model.network_kwargs()).to(device),
                     "large": build_network(self.large.network, self.large.network_kwargs()).to(device)}
        opt_cls = torch.optim.AdamW if cfg_t.optimizer == "adamw" else torch.optim.Adam
        self.optims = {k: opt_cls(n.parameters(), lr=cfg_t.learning_rate, weight_decay=cfg_t.weight_decay)
                       for k, n in self.nets.items()}
        self.loss_fn = dice_ce_loss()
        self.augment = torch.Generator().manual_seed(cfg_t.seed)
        pre = config.preprocessing
        norm = pre.normalization.as_dict()
        bar_opts = {"disable": not run.progress, "leave": False}
        train_volumes = [load_case(c, pre.orientation, pre.spacing, norm)
                         for c in tqdm(self.train_cases, desc="preprocessing labelled cases", unit="case", **bar_opts)]
        self.val_volumes = [load_case(c, pre.orientation, pre.spacing, norm)
                            for c in tqdm(self.val_cases, desc="preprocessing validation cases", unit="case",
                                          **bar_opts)]
        unlabelled_volumes = [_preprocess_unlabelled(i, config)
                              for i in tqdm(self.images, desc="preprocessing unlabelled images", unit="case",
                                            **bar_opts)]
        self.sampler = PatchSampler(train_volumes, pre.patch_size, cfg_t.positive_fraction, seed=[cfg_t.seed, 1])
        self.target = TargetSampler(unlabelled_volumes, pre.patch_size, seed=[cfg_t.seed, 2])
        self.steps_per_epoch = self.sampler.iterations(cfg_t.patches_per_volume, cfg_t.batch_size)
        self.rampup_steps = self.options.rampup_epochs * self.steps_per_epoch

    def networks(self) -> dict[str, Any]:
        return {CHECKPOINT_KEYS[k][0]: self.nets[k] for k in ROLES}

    def optimizers(self) -> dict[str, Any]:
        return {CHECKPOINT_KEYS[k][1]: self.optims[k] for k in ROLES}

    def run_info(self, run: Run) -> dict[str, Any]:
        from ProstateKDLib.networks import count_parameters

        config, cfg_t = self.config, self.config.train
        self.params = {k: count_parameters(n) for k, n in self.nets.items()}
        return {
            "method": METHOD, "options": self.options.to_dict(),
            "seeds": {"seed": cfg_t.seed, "data_split": config.data.seed, "labelled_sampler": [cfg_t.seed, 1],
                      "unlabelled_sampler": [cfg_t.seed, 2]},
            "parameters": {"small": self.params["small"], "large": self.params["large"]},
            "large_network": _describe_large(self.large, self.params["large"]),
            "unlabelled_labels_used": False,
            "data": {"root": config.data.root, "train_cases": [c.case_id for c in self.train_cases],
                     "val_cases": [c.case_id for c in self.val_cases], "unlabelled": self.record["unlabelled"],
                     "unlabelled_cases": [i.case_id for i in self.images]},
        }

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        self.teacher_role = teacher_for_epoch(epoch, self.options.alternate_every)
        return {"teacher": self.teacher_role}

    def epoch_description(self, epoch: int) -> str:
        return f"coteach epoch {epoch}/{self.epochs} ({teacher_for_epoch(epoch, self.options.alternate_every)} teaches)"

    def step(self, batch: dict[str, Any], step: int) -> tuple[Any, dict[str, Any]]:
        import torch

        from training.distillers.parts import dice_ce_terms

        options, device, nets = self.options, self.run.device, self.nets
        teacher = nets[self.teacher_role]
        learner = nets["small" if self.teacher_role == "large" else "large"]
        ramp = consistency_rampup(step, self.rampup_steps)
        view_teacher, view_learner = self.views(options.unlabelled_batch_size)
        teacher.eval()
        with torch.no_grad():
            teacher_logits = teacher(view_teacher)
        teacher.train()
        learner.train()
        pseudo, mask = confidence_mask(torch.softmax(teacher_logits.float(), dim=1), options.confidence)
        image, label = batch["image"].to(device), batch["label"].to(device)
        sup = {}
        for key in ROLES:
            terms = dice_ce_terms(self.loss_fn, nets[key](image), label)
            sup[key] = terms["dice"] + terms["ce"]
        learner_logits = learner(view_learner)
        pseudo_loss = pseudo_label_loss(learner_logits, pseudo, mask)
        cons = consistency_loss(learner_logits, teacher_logits)
        loss = sup["large"] + sup["small"] + ramp * (options.pseudo_weight * pseudo_loss
                                                     + options.consistency_weight * cons)
        values = {"loss": loss, "sup_large": sup["large"], "sup_small": sup["small"], "pseudo": pseudo_loss,
                  "consistency": cons}
        return loss, {**{k: v.detach() for k, v in values.items()}, "coverage": mask.float().mean(),
                      "consistency_weight": ramp * options.consistency_weight}

    def validate(self, epoch: int) -> dict[str, Any]:
        from .train import nanmean, validate

        row: dict[str, Any] = {}
        for key in ROLES:
            dice = nanmean(validate(self.nets[key], self.val_volumes, self.config.preprocessing.patch_size,
                                    self.run.device, self.run.amp)) if self.val_volumes else None
            row[f"val_dice_{key}"] = None if dice is None else float(dice)
        return row

    def epoch_line(self, epoch: int, row: Any) -> str:
        dice = " ".join(f"val_dice_{k} {row[f'val_dice_{k}']:.4f}" for k in ROLES if row[f"val_dice_{k}"] is not None)
        return (f"coteach epoch {epoch}/{self.epochs} ({row['teacher']} teaches): sup_large "
                f"{row['sup_large']:.4f} sup_small {row['sup_small']:.4f} pseudo {row['pseudo']:.4f} "
                f"coverage {row['coverage']:.3f} {dice} ({row['seconds']:.1f} s)")

    def export(self, run: Run) -> None:
        from ProstateKDLib.bundle import save_bundle

        from .runinfo import git_commit

        small_json, large_json = _model_jsons(self.config, self.options, self.large, self.train_cases, self.images,
                                              run.state, self.params["small"], self.params["large"], git_commit())
        save_bundle(run.run_dir / BUNDLE_DIR, small_json, self.nets["small"].state_dict(), overwrite=True)
        save_bundle(run.run_dir / LARGE_BUNDLE_DIR, large_json, self.nets["large"].state_dict(), overwrite=True)
