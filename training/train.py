"""Train a student (or a teacher), with or without distillation: the loop, validation, checkpoints.

``train`` is distillation with the configured distiller: ``none`` trains a
network alone (students without KD, and teachers); the other methods load the
config's ``teachers`` (frozen, checked to share the preprocessing grid).

A run folder holds::

    config.yaml           the resolved configuration (absolute data root and teacher paths)
    run.json              code version, packages, machine, seeds, case lists, method, teachers,
                          TensorBoard and torchrun status
    log.csv               one row per epoch: loss, every loss term, method statistics
                          (e.g. adaptive teacher weights), val_dice, lr, seconds
    tensorboard/          the same scalars, when ``torch.utils.tensorboard`` imports
    checkpoint_last.pt    everything needed to resume (written atomically each epoch),
                          including the distiller's learned adapters
    checkpoint_best.pt    student weights of the epoch with the best validation Dice

On the CPU a resumed run ends with exactly the weights of an uninterrupted
run with the same seed: model, adapters, optimizer, every random generator and
the patch sampler are restored, and the learning rate depends only on the step.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1) the same call trains with
DistributedDataParallel: the patch sampling is sharded over processes, loss
averages are reduced, and only rank 0 validates and writes files.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ProstateKDLib.errors import ConfigError, DataError

from .config import Config, load_config, write_config
from .engine import Method, Run, fit, learning_rate  # learning_rate: the schedule, re-exported for callers

__all__ = ["DistillMethod", "learning_rate", "nanmean", "train", "validate"]

INFERENCE_OVERLAP = 0.25  # also written to model.json on export
BLEND_MODE = "gaussian"
VAL_SW_BATCH_SIZE = 2
FREE_KEYS = {("train", "epochs"), ("train", "device"), ("train", "num_threads")}  # may change on resume


def _load_volumes(
    cases: Sequence[Any], config: Config, what: str, progress: bool, externals: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    from tqdm.auto import tqdm

    from .training_volumes import load_training_volume

    pre = config.preprocessing
    norm = pre.normalization.as_dict()
    return [
        load_training_volume(case, pre.orientation, pre.spacing, norm, externals)
        for case in tqdm(cases, desc=f"preprocessing {what}", unit="case", disable=not progress, leave=False)
    ]


def _check_cached_inputs(config: Config, cases: Sequence[Any], unlabelled: Sequence[Any]) -> None:
    """ConfigError/DataError before anything is written: unlabelled images the method cannot use, missing maps."""
    from training.distillers import DISTILLERS

    from .external_teacher import is_external_teacher, read_external_teacher

    externals = [read_external_teacher(entry) for entry in config.teachers if is_external_teacher(entry)]
    try:
        method = DISTILLERS.get(config.distiller.name)
    except KeyError:  # pragma: no cover - the config check knows the names
        return
    if unlabelled and not (method.accepts_unlabelled and externals):
        why = "has no cached (external) teacher" if method.accepts_unlabelled else "cannot train on unlabelled images"
        raise ConfigError(f"config {config.source}: key 'data.unlabelled' is set but distiller "
                          f"{config.distiller.name!r} {why}")
    for external in externals:
        missing = external.missing([c.case_id for c in [*cases, *unlabelled]])
        if missing:
            raise DataError(f"teacher {external.name!r} ({external.folder}) has no map for {len(missing)} training "
                            f"case{'s' if len(missing) != 1 else ''}, e.g. {missing[0]} "
                            f"(expected {external.map_path(missing[0])})")


def validate(
    network: Any, volumes: Sequence[tuple[Any, Any]], patch_size: Sequence[int], device: Any, amp: bool = False,
    input_fn: Any = None, overlap: float = INFERENCE_OVERLAP,
) -> list[float]:
    """Dice of the gland per volume: sliding-window (gaussian) argmax vs the label, model grid.

    ``input_fn`` (optional) maps each batched (1, C, X, Y, Z) image to what
    ``network`` takes (the distiller's ``student_input``: a cross-modality
    student sees only some channels). Returns NaN for a volume whose label and
    prediction are both empty.
    """
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    inferer = SlidingWindowInferer(
        roi_size=tuple(patch_size), sw_batch_size=VAL_SW_BATCH_SIZE, overlap=overlap,
        mode=BLEND_MODE, padding_mode="replicate",
    )
    metric = DiceMetric(include_background=False, reduction="none")
    was_training = network.training
    network.eval()
    scores = []
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
        for image, label in volumes:
            batch = image[None].to(device)
            logits = inferer(batch if input_fn is None else input_fn(batch), network)
            prediction = one_hot(logits.argmax(1, keepdim=True), 2)
            target = one_hot(label[None].to(device).long(), 2)
            scores.append(float(metric(prediction, target).reshape(-1)[0]))
    network.train(was_training)
    return scores


def nanmean(values: Sequence[float]) -> float | None:
    """Mean of the values that are not NaN (None when there are none)."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None




def check_resumable(config: Config, saved: dict[str, Any]) -> None:
    """ConfigError when ``config`` differs from the resumed run's beyond epochs/device/threads."""
    current = config.to_dict()
    for section in sorted(set(saved) | set(current)):
        then, now_section = saved.get(section), current.get(section)
        if not isinstance(then, dict) or not isinstance(now_section, dict):
            if then != now_section:
                raise ConfigError(
                    f"config {config.source}: key '{section}' differs from the run being resumed "
                    f"({then!r} there, {now_section!r} here)"
                )
            continue
        for key in list(then) + [k for k in now_section if k not in then]:
            if (section, key) in FREE_KEYS:
                continue
            value, now = then.get(key), now_section.get(key)
            if now != value:
                raise ConfigError(
                    f"config {config.source}: key '{section}.{key}' differs from the run being resumed "
                    f"({value!r} there, {now!r} here)"
                )


def _build(config: Config, teachers: Sequence[Any], device: Any) -> Any:
    """The distiller (student, frozen teachers, adapters) on ``device``; ConfigError when it cannot be built."""
    import torch

    from training.distillers import build_distiller
    from ProstateKDLib.networks import build_network

    try:
        student = build_network(config.model.network, config.model.network_kwargs())
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"config {config.source}: cannot build network {config.model.network!r}: {exc}") from None
    example = torch.zeros(1, config.model.in_channels, *config.preprocessing.patch_size)
    try:
        distiller = build_distiller(
            config.distiller.name, student, [t.network for t in teachers], config.distiller.weights,
            example_input=example, **config.distiller.options,
        )
    except ValueError as exc:
        raise ConfigError(f"config {config.source}: distiller {config.distiller.name!r}: {exc}") from None
    return distiller.to(device)


class DistillMethod(Method):
    """Supervised training and distillation with the config's distiller (``none``: no teacher).

    Each batch's extra keys (``case_index``, and whatever else the patch sampler yields
    per sample) are set on the distiller as ``batch_<key>`` before ``forward_train``
    (:meth:`set_batch`); amal reads ``batch_case_index``.
    """

    command = "train"
    noun = "run folder"
    activity = "run"
    supports_ddp = True

    def __init__(self, config: Config) -> None:
        from .cases import select_cases, unlabelled_cases
        from .teachers import load_teachers

        self.config = config
        t = config.train
        self.epochs, self.seed, self.device, self.amp, self.num_threads = t.epochs, t.seed, t.device, t.amp, t.num_threads
        self.learning_rate, self.lr_schedule, self.warmup_steps = t.learning_rate, t.lr_schedule, t.warmup_steps
        self.grad_clip, self.patches_per_volume, self.batch_size = t.grad_clip, t.patches_per_volume, t.batch_size
        self.train_cases, self.val_cases = select_cases(config)  # a leaking index is refused before anything is written
        self.extra_cases = unlabelled_cases(config)  # data.unlabelled: images without masks
        _check_cached_inputs(config, self.train_cases, self.extra_cases)
        self.teachers = load_teachers(config)
        self.teacher_info = [teacher.describe() for teacher in self.teachers]
        self.best_dice: float | None = None
        self.best_epoch: int | None = None

    def check_resumable(self, checkpoint: Mapping[str, Any]) -> None:
        check_resumable(self.config, checkpoint.get("config", {}))

    def build(self, run: Run) -> None:
        import torch

        from .distributed import wrap_ddp
        from .sampling import PatchSampler

        config, cfg_t, ctx = self.config, self.config.train, run.ctx
        self.run = run
        self.distiller = _build(config, self.teachers, run.device)
        self.params = self.distiller.trainable_parameters()
        optimizer_cls = torch.optim.AdamW if cfg_t.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_cls(self.params, lr=cfg_t.learning_rate, weight_decay=cfg_t.weight_decay)
        self.step_fn = wrap_ddp(self.distiller, ctx, run.device)
        externals = [t.external for t in self.teachers if t.external is not None]
        self.train_volumes = _load_volumes([*self.train_cases, *self.extra_cases], config, "training cases",
                                           run.progress, externals)
        wants_val = run.is_main or self.distiller.needs_validation_data
        self.val_volumes = _load_volumes(self.val_cases, config, "validation cases", run.progress) if wants_val else []
        self.sampler = PatchSampler(self.train_volumes, config.preprocessing.patch_size, cfg_t.positive_fraction,
                                    seed=[cfg_t.seed, 1], rank=ctx.rank, world_size=ctx.world_size,
                                    augmentation=config.augmentation,
                                    labelled=[True] * len(self.train_cases) + [False] * len(self.extra_cases))
        self.steps_per_epoch = self.sampler.iterations(cfg_t.patches_per_volume, cfg_t.batch_size)
        self.terms = list(self.distiller.loss_names)

    def networks(self) -> dict[str, Any]:
        return {"model": self.distiller.student}

    def optimizers(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer}

    def clip_parameters(self) -> list[Any]:
        return self.params

    def extra_state(self) -> dict[str, Any]:
        return {"best_dice": self.best_dice, "best_epoch": self.best_epoch, "config": self.config.to_dict(),
                "distiller": self.distiller.learned_state_dict(), "teachers": self.teacher_info}

    def load_extra_state(self, checkpoint: Mapping[str, Any]) -> None:
        self.distiller.load_learned_state_dict(checkpoint.get("distiller", {}))
        self.best_dice, self.best_epoch = checkpoint.get("best_dice"), checkpoint.get("best_epoch")

    def prepare(self, run: Run, resumed: bool) -> None:
        from training.distillers import TrainingContext

        config, cfg_t = self.config, self.config.train
        self.distiller.prepare(TrainingContext(
            val_volumes=self.val_volumes, patch_size=tuple(config.preprocessing.patch_size),
            batch_size=cfg_t.batch_size, epochs=cfg_t.epochs, device=run.device, seed=cfg_t.seed, resumed=resumed,
            train_case_ids=[c.case_id for c in self.train_cases],
            train_sites=[c.site for c in [*self.train_cases, *self.extra_cases]],
            val_sites=[c.site for c in self.val_cases] if self.val_volumes else []))
        self.val_volumes = self.val_volumes if run.is_main else []
        self.columns = self.terms + self.distiller.stat_names()
        self.log_columns = ["epoch", "loss", *self.columns, "val_dice", "lr", "seconds"]  # terms, then stats

    def write_records(self, run_dir: Path) -> None:
        write_config(self.config, run_dir / "config.yaml")

    def run_info(self, run: Run) -> dict[str, Any]:
        from ProstateKDLib.networks import count_parameters

        from .cases import describe_subset

        config, cfg_t, distiller = self.config, self.config.train, self.distiller
        return {
            "seeds": {"train": cfg_t.seed, "data_split": config.data.seed, "sampler": [cfg_t.seed, 1]},
            "parameters": count_parameters(distiller.student),
            "data": {"root": config.data.root, "subset": describe_subset(config.data),
                     "train_cases": [c.case_id for c in self.train_cases],
                     "val_cases": [c.case_id for c in self.val_cases],
                     **({"unlabelled": config.data.unlabelled,
                         "unlabelled_cases": [c.case_id for c in self.extra_cases]} if self.extra_cases else {})},
            "method": distiller.describe(),
            "adapter_parameters": sum(p.numel() for _, p in distiller.named_learned_parameters()),
            "teachers": self.teacher_info,
        }

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        self.distiller.train()
        self.distiller.start_epoch(epoch, self.epochs)
        return {}

    def set_batch(self, batch: Mapping[str, Any]) -> None:
        """Hand the batch's per-sample extras to the distiller: ``batch_<key>`` for every key but image, label."""
        for key, value in batch.items():
            if key not in ("image", "label"):
                setattr(self.distiller, f"batch_{key}", value)

    def batches(self, epoch: int) -> Any:
        """The sampler's dict batches: image, label, labelled and (cached teachers) teacher maps."""
        from .engine import patch_batch

        for item in self.sampler.batches(self.patches_per_volume, self.batch_size):
            yield patch_batch(item, self.sampler)

    def step(self, batch: dict[str, Any], step: int) -> tuple[Any, dict[str, Any]]:
        device = self.run.device
        self.set_batch(batch)  # per-instance methods (amal): batch_case_index; label terms: batch_labelled
        maps = batch.get("teacher")
        self.distiller.teacher_maps = None if maps is None else maps.to(device)  # cached (external) teachers
        _, losses = self.step_fn(batch["image"].to(device), batch["label"].to(device))
        loss = self.distiller.total_loss(losses)
        values: dict[str, Any] = {"loss": loss.detach(), **{name: losses[name].detach() for name in self.terms}}
        values.update({name: self.distiller.stats[name] for name in self.columns[len(self.terms):]})
        return loss, values

    def validate(self, epoch: int) -> dict[str, Any]:
        config, run = self.config, self.run
        per_case = validate(self.distiller.student, self.val_volumes, config.preprocessing.patch_size, run.device,
                            run.amp, input_fn=self.distiller.student_input, overlap=config.train.val_overlap)
        return {"val_dice": nanmean(per_case), "val_case_dice": {c.case_id: d for c, d in zip(self.val_cases, per_case)}}

    def end_epoch(self, row: dict[str, Any], run: Run) -> None:
        from .checkpoint import BEST, atomic_save
        from .engine import CHECKPOINT_FORMAT

        improved = self.best_dice is None or (row["val_dice"] is not None and row["val_dice"] > self.best_dice)
        if not self.val_volumes or improved:
            self.best_dice, self.best_epoch = row["val_dice"], row["epoch"]
            atomic_save({"format": CHECKPOINT_FORMAT, "epoch": row["epoch"], "val_dice": row["val_dice"],
                         "model": self.distiller.student.state_dict(), "config": self.config.to_dict()},
                        run.run_dir / BEST)

    def epoch_line(self, epoch: int, row: Mapping[str, Any]) -> str:
        dice = "n/a" if row["val_dice"] is None else f"{row['val_dice']:.4f}"
        parts = " ".join(f"{k} {row[k]:.4f}" for k in ["loss", *self.columns])
        return f"epoch {epoch}/{self.epochs}: {parts} val_dice {dice} ({row['seconds']:.1f} s)"


def train(
    config: Config | str | os.PathLike, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True
) -> Path:
    """Train the configured network (distilled from the config's teachers) into ``run_dir``.

    Args:
        config: a validated :class:`~training.config.Config`, or the path of a YAML config.
        run_dir: new or empty folder (created), or the folder of a run to resume.
        resume: continue from ``checkpoint_last.pt`` (up to ``config.train.epochs``).
        progress: show tqdm bars and one line per epoch (rank 0 only under torchrun).

    Returns:
        the run folder.

    Raises:
        OutputError: ``run folder <dir> is not empty; use --resume ...`` or nothing to resume.
        ConfigError: the network or distiller cannot be built, a teacher is missing or on
            another grid, or a resumed run's config differs.
        DataError: no training cases, or a case is malformed.
        DeviceError: the configured device is not available.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    return fit(DistillMethod(config), run_dir, resume=resume, progress=progress)
