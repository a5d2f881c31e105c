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
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from ProstateKDLib import checks
from ProstateKDLib.datasets import image_suffix, is_label_name, read_csv_rows, resolve
from ProstateKDLib.errors import ConfigError, DataError, OutputError

from .adapt import (
    TargetImage,
    TargetSampler,
    consistency_loss,
    consistency_rampup,
    intensity_view,
)
from .config import Config, ModelConfig, load_config
from .run_folder import check_output_folder, check_resumable_options, write_log_csv

METHOD = "coteach"
OPTIONS_JSON = "options.json"
BUNDLE_DIR = "bundle"
LARGE_BUNDLE_DIR = "large_bundle"
CHECKPOINT_FORMAT = 1
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
    from ProstateKDLib.device import resolve_device

    device = resolve_device(options.device)
    return _coteach(config, unlabelled, out_dir, options, large, resume, progress, device, train_cases, val_cases,
                    images)


def _coteach(config: Config, unlabelled: Any, out_dir: Path, options: CoteachOptions, large: ModelConfig,
             resume: bool, progress: bool, device: Any, train_cases: list[Any], val_cases: list[Any],
             images: list[TargetImage]) -> Path:
    import torch
    from tqdm.auto import tqdm

    from ProstateKDLib.bundle import save_bundle
    from ProstateKDLib.datasets import load_case
    from training.distillers.parts import dice_ce_loss, dice_ce_terms
    from ProstateKDLib.networks import build_network, count_parameters

    from .checkpoint import LAST, atomic_save, capture_rng, load_checkpoint, restore_rng, seed_everything
    from .runinfo import git_commit, machine_info, start_session, write_json
    from .sampling import PatchSampler
    from .train import nanmean, learning_rate, validate

    cfg_t = config.train
    config_record = config.to_dict()
    for key in FREE_OPTIONS:
        config_record["train"].pop(key, None)
    run_record = {"method": METHOD, "config": config_record,
                  "unlabelled": str(Path(unlabelled).expanduser().resolve()), **options.to_dict()}
    checkpoint = load_checkpoint(out_dir / LAST) if resume else None
    if checkpoint is not None:
        check_resumable_options(checkpoint.get("options", {}), run_record, FREE_OPTIONS, "coteach", "co-teaching")
    if options.num_threads:
        torch.set_num_threads(options.num_threads)

    seed_everything(cfg_t.seed)
    nets = {"small": build_network(config.model.network, config.model.network_kwargs()).to(device),
            "large": build_network(large.network, large.network_kwargs()).to(device)}
    opt_cls = torch.optim.AdamW if cfg_t.optimizer == "adamw" else torch.optim.Adam
    optims = {k: opt_cls(n.parameters(), lr=cfg_t.learning_rate, weight_decay=cfg_t.weight_decay)
              for k, n in nets.items()}
    loss_fn = dice_ce_loss()
    augment = torch.Generator().manual_seed(cfg_t.seed)

    pre = config.preprocessing
    norm = pre.normalization.as_dict()
    bar_opts = {"disable": not progress, "leave": False}
    train_volumes = [load_case(c, pre.orientation, pre.spacing, norm)
                     for c in tqdm(train_cases, desc="preprocessing labelled cases", unit="case", **bar_opts)]
    val_volumes = [load_case(c, pre.orientation, pre.spacing, norm)
                   for c in tqdm(val_cases, desc="preprocessing validation cases", unit="case", **bar_opts)]
    unlabelled_volumes = [_preprocess_unlabelled(i, config)
                          for i in tqdm(images, desc="preprocessing unlabelled images", unit="case", **bar_opts)]
    labelled = PatchSampler(train_volumes, pre.patch_size, cfg_t.positive_fraction, seed=[cfg_t.seed, 1])
    target = TargetSampler(unlabelled_volumes, pre.patch_size, seed=[cfg_t.seed, 2])
    steps_per_epoch = labelled.iterations(cfg_t.patches_per_volume, cfg_t.batch_size)
    total_steps = steps_per_epoch * options.epochs
    rampup_steps = options.rampup_epochs * steps_per_epoch

    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": []}
    if checkpoint is not None:
        for key in ROLES:
            nets[key].load_state_dict(checkpoint[CHECKPOINT_KEYS[key][0]])
            optims[key].load_state_dict(checkpoint[CHECKPOINT_KEYS[key][1]])
        labelled.load_state_dict(checkpoint["labelled_sampler"])
        target.load_state_dict(checkpoint["unlabelled_sampler"])
        augment.set_state(checkpoint["augment_rng"])
        restore_rng(checkpoint["rng"])
        state = {k: checkpoint[k] for k in state}

    params = {k: count_parameters(n) for k, n in nets.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_record, out_dir / OPTIONS_JSON)
    start_session(out_dir, {
        "method": METHOD,
        "options": options.to_dict(),
        "seeds": {"seed": cfg_t.seed, "data_split": config.data.seed, "labelled_sampler": [cfg_t.seed, 1],
                  "unlabelled_sampler": [cfg_t.seed, 2]},
        "machine": machine_info(device),
        "parameters": {"small": params["small"], "large": params["large"]},
        "large_network": _describe_large(large, params["large"]),
        "unlabelled_labels_used": False,
        "data": {"root": config.data.root, "train_cases": [c.case_id for c in train_cases],
                 "val_cases": [c.case_id for c in val_cases], "unlabelled": run_record["unlabelled"],
                 "unlabelled_cases": [i.case_id for i in images]},
    }, resumed_from=state["epoch"] if checkpoint is not None else None)
    write_log_csv(out_dir, state["history"], LOG_COLUMNS)

    for epoch in range(state["epoch"] + 1, options.epochs + 1):
        started = time.perf_counter()
        teacher_role = teacher_for_epoch(epoch, options.alternate_every)
        learner_role = "small" if teacher_role == "large" else "large"
        teacher, learner = nets[teacher_role], nets[learner_role]
        sums = {k: 0.0 for k in ("loss", "sup_large", "sup_small", "pseudo", "consistency", "coverage",
                                 "consistency_weight")}
        bar = tqdm(labelled.epoch(cfg_t.patches_per_volume, cfg_t.batch_size), total=steps_per_epoch,
                   desc=f"coteach epoch {epoch}/{options.epochs} ({teacher_role} teaches)", unit="batch",
                   mininterval=1.0, **bar_opts)
        lr = cfg_t.learning_rate
        for image, label in bar:
            lr = learning_rate(cfg_t.learning_rate, cfg_t.lr_schedule, state["step"], total_steps)
            ramp = consistency_rampup(state["step"], rampup_steps)
            for optimizer in optims.values():
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
            batch = target.batch(options.unlabelled_batch_size)
            view_teacher = intensity_view(batch, augment, options).to(device)
            view_learner = intensity_view(batch, augment, options).to(device)
            teacher.eval()
            with torch.no_grad():
                teacher_logits = teacher(view_teacher)
            teacher.train()
            learner.train()
            pseudo, mask = confidence_mask(torch.softmax(teacher_logits.float(), dim=1), options.confidence)
            image, label = image.to(device), label.to(device)
            sup = {}
            for key in ROLES:
                terms = dice_ce_terms(loss_fn, nets[key](image), label)
                sup[key] = terms["dice"] + terms["ce"]
            learner_logits = learner(view_learner)
            pseudo_loss = pseudo_label_loss(learner_logits, pseudo, mask)
            cons = consistency_loss(learner_logits, teacher_logits)
            loss = sup["large"] + sup["small"] + ramp * (options.pseudo_weight * pseudo_loss
                                                         + options.consistency_weight * cons)
            loss.backward()
            for optimizer in optims.values():
                optimizer.step()
            state["step"] += 1
            for key, value in (("loss", loss), ("sup_large", sup["large"]), ("sup_small", sup["small"]),
                               ("pseudo", pseudo_loss), ("consistency", cons)):
                sums[key] += float(value.detach())
            sums["coverage"] += float(mask.float().mean())
            sums["consistency_weight"] += ramp * options.consistency_weight
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch, "teacher": teacher_role,
                               **{k: v / steps_per_epoch for k, v in sums.items()}}
        for key in ROLES:
            dice = nanmean(validate(nets[key], val_volumes, pre.patch_size, device)) if val_volumes else None
            row[f"val_dice_{key}"] = None if dice is None else float(dice)
        row.update(lr=float(lr), seconds=time.perf_counter() - started)
        state["history"].append(row)
        state["epoch"] = epoch
        atomic_save({
            "format": CHECKPOINT_FORMAT, **state, "options": run_record,
            **{CHECKPOINT_KEYS[k][0]: nets[k].state_dict() for k in ROLES},
            **{CHECKPOINT_KEYS[k][1]: optims[k].state_dict() for k in ROLES},
            "labelled_sampler": labelled.state_dict(), "unlabelled_sampler": target.state_dict(),
            "augment_rng": augment.get_state(), "rng": capture_rng(),
        }, out_dir / LAST)
        write_log_csv(out_dir, state["history"], LOG_COLUMNS)
        if progress:
            dice = " ".join(f"val_dice_{k} {row[f'val_dice_{k}']:.4f}" for k in ROLES
                            if row[f"val_dice_{k}"] is not None)
            tqdm.write(f"coteach epoch {epoch}/{options.epochs} ({teacher_role} teaches): sup_large "
                       f"{row['sup_large']:.4f} sup_small {row['sup_small']:.4f} pseudo {row['pseudo']:.4f} "
                       f"coverage {row['coverage']:.3f} {dice} ({row['seconds']:.1f} s)")

    small_json, large_json = _model_jsons(config, options, large, train_cases, images, state, params["small"],
                                          params["large"], git_commit())
    save_bundle(out_dir / BUNDLE_DIR, small_json, nets["small"].state_dict(), overwrite=True)
    save_bundle(out_dir / LARGE_BUNDLE_DIR, large_json, nets["large"].state_dict(), overwrite=True)
    return out_dir
