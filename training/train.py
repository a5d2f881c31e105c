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
from typing import Any, Sequence

from ProstateKDLib.errors import ConfigError, DataError, OutputError

from .config import Config, load_config, write_config

INFERENCE_OVERLAP = 0.25  # also written to model.json on export
BLEND_MODE = "gaussian"
VAL_SW_BATCH_SIZE = 2
POLY_EXPONENT = 0.9
CHECKPOINT_FORMAT = 1


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """OutputError unless ``run_dir`` can take a new run (or holds one to resume); writes nothing."""
    from .run_folder import check_output_folder

    check_output_folder(run_dir, resume, noun="run folder", activity="run")


def _check_resumable(config: Config, saved: dict[str, Any]) -> None:
    """ConfigError when ``config`` differs from the resumed run's beyond epochs/device/threads."""
    current = config.to_dict()
    free = {("train", "epochs"), ("train", "device"), ("train", "num_threads")}
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
            if (section, key) in free:
                continue
            value, now = then.get(key), now_section.get(key)
            if now != value:
                raise ConfigError(
                    f"config {config.source}: key '{section}.{key}' differs from the run being resumed "
                    f"({value!r} there, {now!r} here)"
                )


def learning_rate(
    base: float, schedule: str, step: int, total_steps: int, warmup_steps: int = 0,
    anchor: dict[str, float] | None = None,
) -> float:
    """Learning rate at optimizer ``step`` (0-based) of ``total_steps``: ``poly`` or ``constant``.

    The first ``warmup_steps`` ramp linearly up to ``base``. ``anchor``
    (``{"step": s0, "lr": lr0}``) is set when a run is resumed with a different
    length (``--resume --epochs N``): from ``s0`` on the poly curve decays from
    ``lr0``, the rate the run had reached, to 0 at the new end, so the rate never jumps.
    """
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if schedule == "constant":
        return base
    if anchor is not None and step >= anchor["step"]:
        remaining = max(1, total_steps - int(anchor["step"]))
        return float(anchor["lr"]) * max(0.0, 1.0 - (step - anchor["step"]) / remaining) ** POLY_EXPONENT
    decay = max(1, total_steps - warmup_steps)
    return base * max(0.0, 1.0 - (step - warmup_steps) / decay) ** POLY_EXPONENT


def _write_log(run_dir: Path, history: Sequence[dict[str, Any]], terms: Sequence[str]) -> None:
    from .run_folder import write_log_csv

    write_log_csv(run_dir, history, ["epoch", "loss", *terms, "val_dice", "lr", "seconds"])  # terms, then stats


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
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


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
    from ProstateKDLib.device import resolve_device

    from .distributed import init_distributed, shutdown

    if not isinstance(config, Config):
        config = load_config(config)
    ctx, device = init_distributed(resolve_device(config.train.device))
    try:
        return _train(config, Path(run_dir).expanduser(), resume, progress, ctx, device)
    finally:
        shutdown(ctx)


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


def _train(config: Config, run_dir: Path, resume: bool, progress: bool, ctx: Any, device: Any) -> Path:
    import torch
    from tqdm.auto import tqdm

    from ProstateKDLib.networks import count_parameters

    from .cases import describe_subset, select_cases, unlabelled_cases
    from .checkpoint import BEST, LAST, atomic_save, capture_rng, load_checkpoint, restore_rng, seed_everything
    from .distributed import all_reduce_mean, barrier, gather_objects, wrap_ddp
    from .runinfo import machine_info, start_session
    from .sampling import PatchSampler
    from .tblog import open_tensorboard, write_scalars
    from .teachers import load_teachers

    main = ctx.is_main
    progress = progress and main
    _check_run_dir(run_dir, resume)
    train_cases, val_cases = select_cases(config)  # a leaking index is refused before anything is written
    extra_cases = unlabelled_cases(config)
    _check_cached_inputs(config, train_cases, extra_cases)
    checkpoint = load_checkpoint(run_dir / LAST) if resume else None
    if checkpoint is not None:
        _check_resumable(config, checkpoint.get("config", {}))
    barrier(ctx)  # every rank has checked the folder before rank 0 writes into it
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    cfg_t = config.train
    if cfg_t.num_threads:
        torch.set_num_threads(cfg_t.num_threads)
    use_amp = cfg_t.amp and device.type == "cuda"

    teachers = load_teachers(config)
    seed_everything(cfg_t.seed)
    distiller = _build(config, teachers, device)
    externals = [t.external for t in teachers if t.external is not None]
    params = distiller.trainable_parameters()
    optimizer_cls = torch.optim.AdamW if cfg_t.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_cls(params, lr=cfg_t.learning_rate, weight_decay=cfg_t.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step_fn = wrap_ddp(distiller, ctx, device)

    train_volumes = _load_volumes([*train_cases, *extra_cases], config, "training cases", progress, externals)
    wants_val = main or distiller.needs_validation_data
    val_volumes = _load_volumes(val_cases, config, "validation cases", progress) if wants_val else []
    sampler = PatchSampler(train_volumes, config.preprocessing.patch_size, cfg_t.positive_fraction,
                           seed=[cfg_t.seed, 1], rank=ctx.rank, world_size=ctx.world_size,
                           augmentation=config.augmentation,
                           labelled=[True] * len(train_cases) + [False] * len(extra_cases))
    steps_per_epoch = sampler.iterations(cfg_t.patches_per_volume, cfg_t.batch_size)
    total_steps = steps_per_epoch * cfg_t.epochs

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_dice": None, "best_epoch": None, "history": [],
                             "lr_anchor": None}
    if checkpoint is not None:
        distiller.student.load_state_dict(checkpoint["model"])
        distiller.load_learned_state_dict(checkpoint.get("distiller", {}))
        optimizer.load_state_dict(checkpoint["optimizer"])
        if use_amp and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        per_rank = len(checkpoint.get("sampler_ranks") or []) == ctx.world_size > 1
        sampler.load_state_dict(checkpoint["sampler_ranks"][ctx.rank] if per_rank else checkpoint["sampler"])
        restore_rng(checkpoint["rng_ranks"][ctx.rank] if per_rank else checkpoint["rng"])
        state = {k: checkpoint.get(k) for k in state}
        saved_epochs = int(checkpoint.get("config", {}).get("train", {}).get("epochs", cfg_t.epochs))
        if saved_epochs != cfg_t.epochs and cfg_t.lr_schedule != "constant" and state["step"] > 0:
            # the run is extended (or shortened): continue the decay from the rate reached so far
            last = state["step"] - 1
            then = learning_rate(cfg_t.learning_rate, cfg_t.lr_schedule, last, steps_per_epoch * saved_epochs,
                                 cfg_t.warmup_steps, state["lr_anchor"])
            state["lr_anchor"] = {"step": state["step"], "lr": then}
    from training.distillers import TrainingContext

    distiller.prepare(TrainingContext(
        val_volumes=val_volumes, patch_size=tuple(config.preprocessing.patch_size), batch_size=cfg_t.batch_size,
        epochs=cfg_t.epochs, device=device, seed=cfg_t.seed, resumed=checkpoint is not None,
        train_case_ids=[c.case_id for c in train_cases], train_sites=[c.site for c in [*train_cases, *extra_cases]],
        val_sites=[c.site for c in val_cases] if wants_val else []))
    val_volumes = val_volumes if main else []
    terms = list(distiller.loss_names)
    columns = terms + distiller.stat_names()
    teacher_info = [t.describe() for t in teachers]
    writer, tb_info = open_tensorboard(run_dir) if main else (None, {})
    if main:
        write_config(config, run_dir / "config.yaml")
        start_session(
            run_dir,
            {
                "seeds": {"train": cfg_t.seed, "data_split": config.data.seed, "sampler": [cfg_t.seed, 1]},
                "machine": machine_info(device),
                "parameters": count_parameters(distiller.student),
                "data": {"root": config.data.root, "subset": describe_subset(config.data),
                         "train_cases": [c.case_id for c in train_cases],
                         "val_cases": [c.case_id for c in val_cases],
                         **({"unlabelled": config.data.unlabelled,
                             "unlabelled_cases": [c.case_id for c in extra_cases]} if extra_cases else {})},
                "method": distiller.describe(),
                "adapter_parameters": sum(p.numel() for _, p in distiller.named_learned_parameters()),
                "teachers": teacher_info,
                "tensorboard": tb_info,
                "distributed": ctx.describe(),
                "amp": use_amp,
            },
            resumed_from=state["epoch"] if checkpoint is not None else None,
        )
        _write_log(run_dir, state["history"], columns)

    for epoch in range(state["epoch"] + 1, cfg_t.epochs + 1):
        started = time.perf_counter()
        distiller.train()
        distiller.start_epoch(epoch, cfg_t.epochs)
        keys = ["loss", *columns]
        sums = {name: 0.0 for name in keys}
        bar = tqdm(sampler.batches(cfg_t.patches_per_volume, cfg_t.batch_size), total=steps_per_epoch,
                   desc=f"epoch {epoch}/{cfg_t.epochs}", unit="batch", disable=not progress, leave=False,
                   mininterval=1.0)
        lr = cfg_t.learning_rate
        for batch in bar:
            image, label = batch["image"], batch["label"]
            maps = batch.get("teacher")
            distiller.teacher_maps = None if maps is None else maps.to(device)  # cached (external) teachers
            distiller.batch_labelled = batch["labelled"] if extra_cases else None  # label terms skip unlabelled
            lr = learning_rate(cfg_t.learning_rate, cfg_t.lr_schedule, state["step"], total_steps,
                               cfg_t.warmup_steps, state["lr_anchor"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            distiller.batch_case_index = torch.as_tensor(sampler.last_indices)  # per-instance methods (amal)
            with torch.autocast(device.type, enabled=use_amp):
                _, losses = step_fn(image.to(device), label.to(device))
                loss = distiller.total_loss(losses)
            scaler.scale(loss).backward()
            if cfg_t.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg_t.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            sums["loss"] += float(loss.detach())
            for name in terms:
                sums[name] += float(losses[name].detach())
            for name in columns[len(terms):]:
                sums[name] += float(distiller.stats[name])
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        means = all_reduce_mean(ctx, [sums[k] / steps_per_epoch for k in keys], device)
        row: dict[str, Any] = {"epoch": epoch, **dict(zip(keys, means)), "lr": lr}
        per_case = validate(distiller.student, val_volumes, config.preprocessing.patch_size, device, use_amp,
                            input_fn=distiller.student_input, overlap=cfg_t.val_overlap)
        row["val_dice"] = nanmean(per_case)
        row["val_case_dice"] = {c.case_id: d for c, d in zip(val_cases, per_case)}
        row["seconds"] = time.perf_counter() - started
        state["history"].append(row)
        state["epoch"] = epoch
        sampler_states = gather_objects(ctx, sampler.state_dict())
        rng_states = gather_objects(ctx, capture_rng())
        if main:
            improved = state["best_dice"] is None or (
                row["val_dice"] is not None and row["val_dice"] > state["best_dice"]
            )
            if not val_volumes or improved:
                state["best_dice"], state["best_epoch"] = row["val_dice"], epoch
                atomic_save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "val_dice": row["val_dice"],
                             "model": distiller.student.state_dict(), "config": config.to_dict()}, run_dir / BEST)
            saved: dict[str, Any] = {
                "format": CHECKPOINT_FORMAT, **state, "config": config.to_dict(),
                "model": distiller.student.state_dict(), "distiller": distiller.learned_state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if use_amp else {},
                "sampler": sampler_states[0], "rng": rng_states[0], "teachers": teacher_info,
            }
            if ctx.enabled:
                saved.update(sampler_ranks=sampler_states, rng_ranks=rng_states, world_size=ctx.world_size)
            atomic_save(saved, run_dir / LAST)
            _write_log(run_dir, state["history"], columns)
            write_scalars(writer, row, epoch)
        barrier(ctx)
        if progress:
            dice = "n/a" if row["val_dice"] is None else f"{row['val_dice']:.4f}"
            parts = " ".join(f"{k} {row[k]:.4f}" for k in keys)
            tqdm.write(f"epoch {epoch}/{cfg_t.epochs}: {parts} val_dice {dice} ({row['seconds']:.1f} s)")
    if writer is not None:
        writer.close()
    return run_dir
