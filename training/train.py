"""Train a student: the loop, per-epoch validation, checkpoints and the run folder.

A run folder holds::

    config.yaml           the resolved configuration (absolute data root)
    run.json              code version, packages, machine, seeds, case lists
    log.csv               one row per epoch: losses, val_dice, lr, seconds
    checkpoint_last.pt    everything needed to resume (written atomically each epoch)
    checkpoint_best.pt    student weights of the epoch with the best validation Dice

On the CPU a resumed run ends with exactly the weights of an uninterrupted
run with the same seed: model, optimizer, every random generator and the
patch sampler are restored, and the learning rate depends only on the step.
"""

from __future__ import annotations

import csv
import math
import os
import secrets
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


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    from .checkpoint import LAST

    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"run folder {run_dir} is a file")
    if resume:
        if not (run_dir / LAST).is_file():
            raise OutputError(f"cannot resume: {run_dir / LAST} not found")
        return
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise OutputError(
            f"run folder {run_dir} is not empty; use --resume to continue the run in it, or choose a new folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def _check_resumable(config: Config, saved: dict[str, Any]) -> None:
    """ConfigError when ``config`` differs from the resumed run's beyond epochs/device/threads."""
    current = config.to_dict()
    free = {("train", "epochs"), ("train", "device"), ("train", "num_threads")}
    for section, values in saved.items():
        for key, value in (values or {}).items():
            if (section, key) in free:
                continue
            now = current.get(section, {}).get(key)
            if now != value:
                raise ConfigError(
                    f"config {config.source}: key '{section}.{key}' differs from the run being resumed "
                    f"({value!r} there, {now!r} here)"
                )


def learning_rate(base: float, schedule: str, step: int, total_steps: int) -> float:
    """Learning rate at optimizer ``step`` (0-based) of ``total_steps``: ``poly`` or ``constant``."""
    if schedule == "constant":
        return base
    return base * max(0.0, 1.0 - step / max(1, total_steps)) ** POLY_EXPONENT


def _write_log(run_dir: Path, history: Sequence[dict[str, Any]], terms: Sequence[str]) -> None:
    columns = ["epoch", "loss", *terms, "val_dice", "lr", "seconds"]
    tmp = run_dir / f".log.csv.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if row.get(k) is None else _fmt(row.get(k))) for k in columns})
    os.replace(tmp, run_dir / "log.csv")


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _load_volumes(cases: Sequence[Any], config: Config, what: str, progress: bool) -> list[tuple[Any, Any]]:
    from tqdm.auto import tqdm

    from ProstateKDLib.dataset import load_case

    pre = config.preprocessing
    norm = pre.normalization.as_dict()
    return [
        load_case(case, pre.orientation, pre.spacing, norm)
        for case in tqdm(cases, desc=f"preprocessing {what}", unit="case", disable=not progress, leave=False)
    ]


def validate(
    network: Any, volumes: Sequence[tuple[Any, Any]], patch_size: Sequence[int], device: Any, amp: bool = False
) -> list[float]:
    """Dice of the gland per volume: sliding-window (gaussian) argmax vs the label, model grid.

    Returns NaN for a volume whose label and prediction are both empty.
    """
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    inferer = SlidingWindowInferer(
        roi_size=tuple(patch_size), sw_batch_size=VAL_SW_BATCH_SIZE, overlap=INFERENCE_OVERLAP,
        mode=BLEND_MODE, padding_mode="replicate",
    )
    metric = DiceMetric(include_background=False, reduction="none")
    was_training = network.training
    network.eval()
    scores = []
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
        for image, label in volumes:
            logits = inferer(image[None].to(device), network)
            prediction = one_hot(logits.argmax(1, keepdim=True), 2)
            target = one_hot(label[None].to(device).long(), 2)
            scores.append(float(metric(prediction, target).reshape(-1)[0]))
    network.train(was_training)
    return scores


def _nanmean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def train(
    config: Config | str | os.PathLike, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True
) -> Path:
    """Train the configured student into ``run_dir``; returns the run folder.

    Args:
        config: a validated :class:`~training.config.Config`, or the path of a YAML config.
        run_dir: new or empty folder (created), or the folder of a run to resume.
        resume: continue from ``checkpoint_last.pt`` (up to ``config.train.epochs``).
        progress: show tqdm bars and one line per epoch.

    Raises:
        OutputError: ``run folder <dir> is not empty; use --resume ...`` or nothing to resume.
        ConfigError: the network cannot be built, or a resumed run's config differs.
        DataError: no training cases, or a case is malformed.
        DeviceError: the configured device is not available.
    """
    import torch
    from tqdm.auto import tqdm

    from ProstateKDLib.dataset import index_cases, limit_cases, split_cases
    from ProstateKDLib.device import resolve_device
    from ProstateKDLib.distillers import build_distiller
    from ProstateKDLib.networks import build_network, count_parameters

    from .checkpoint import BEST, LAST, atomic_save, capture_rng, load_checkpoint, restore_rng, seed_everything
    from .runinfo import machine_info, start_session
    from .sampling import PatchSampler

    if not isinstance(config, Config):
        config = load_config(config)
    run_dir = Path(run_dir).expanduser()
    _prepare_run_dir(run_dir, resume)
    checkpoint = load_checkpoint(run_dir / LAST) if resume else None
    if checkpoint is not None:
        _check_resumable(config, checkpoint.get("config", {}))
    cfg_t = config.train
    device = resolve_device(cfg_t.device)
    if cfg_t.num_threads:
        torch.set_num_threads(cfg_t.num_threads)
    use_amp = cfg_t.amp and device.type == "cuda"

    cases = limit_cases(index_cases(config.data.root), config.data.cases)
    train_cases, val_cases = split_cases(cases, config.data.val_fraction, config.data.seed)
    if not train_cases:
        raise DataError(f"no training cases in {config.data.root}")

    seed_everything(cfg_t.seed)
    try:
        student = build_network(config.model.network, config.model.network_kwargs())
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"config {config.source}: cannot build network {config.model.network!r}: {exc}") from None
    distiller = build_distiller(config.distiller.name, student, [], config.distiller.weights).to(device)
    params = [p for p in distiller.student.parameters() if p.requires_grad]
    optimizer_cls = torch.optim.AdamW if cfg_t.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_cls(params, lr=cfg_t.learning_rate, weight_decay=cfg_t.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    train_volumes = _load_volumes(train_cases, config, "training cases", progress)
    val_volumes = _load_volumes(val_cases, config, "validation cases", progress)
    sampler = PatchSampler(
        train_volumes, config.preprocessing.patch_size, cfg_t.positive_fraction, seed=[cfg_t.seed, 1]
    )
    steps_per_epoch = sampler.iterations(cfg_t.patches_per_volume, cfg_t.batch_size)
    total_steps = steps_per_epoch * cfg_t.epochs

    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_dice": None, "best_epoch": None, "history": []}
    if checkpoint is not None:
        distiller.student.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if use_amp and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        sampler.load_state_dict(checkpoint["sampler"])
        restore_rng(checkpoint["rng"])
        state = {k: checkpoint[k] for k in state}
    write_config(config, run_dir / "config.yaml")
    start_session(
        run_dir,
        {
            "seeds": {"train": cfg_t.seed, "data_split": config.data.seed, "sampler": [cfg_t.seed, 1]},
            "machine": machine_info(device),
            "parameters": count_parameters(distiller.student),
            "data": {"root": config.data.root, "train_cases": [c.case_id for c in train_cases],
                     "val_cases": [c.case_id for c in val_cases]},
        },
        resumed_from=state["epoch"] if checkpoint is not None else None,
    )
    terms = list(distiller.loss_names)
    _write_log(run_dir, state["history"], terms)

    for epoch in range(state["epoch"] + 1, cfg_t.epochs + 1):
        started = time.perf_counter()
        distiller.train()
        sums = {name: 0.0 for name in ["loss", *terms]}
        bar = tqdm(sampler.epoch(cfg_t.patches_per_volume, cfg_t.batch_size), total=steps_per_epoch,
                   desc=f"epoch {epoch}/{cfg_t.epochs}", unit="batch", disable=not progress, leave=False,
                   mininterval=1.0)
        lr = cfg_t.learning_rate
        for image, label in bar:
            lr = learning_rate(cfg_t.learning_rate, cfg_t.lr_schedule, state["step"], total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                _, losses = distiller.forward_train(image.to(device), label.to(device))
                loss = distiller.total_loss(losses)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            sums["loss"] += float(loss.detach())
            for name in terms:
                sums[name] += float(losses[name].detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch, **{k: v / steps_per_epoch for k, v in sums.items()}, "lr": lr}
        per_case = validate(distiller.student, val_volumes, config.preprocessing.patch_size, device, use_amp)
        row["val_dice"] = _nanmean(per_case)
        row["val_case_dice"] = {c.case_id: d for c, d in zip(val_cases, per_case)}
        row["seconds"] = time.perf_counter() - started
        state["history"].append(row)
        state["epoch"] = epoch
        improved = state["best_dice"] is None or (row["val_dice"] is not None and row["val_dice"] > state["best_dice"])
        if not val_volumes or improved:
            state["best_dice"], state["best_epoch"] = row["val_dice"], epoch
            atomic_save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "val_dice": row["val_dice"],
                         "model": distiller.student.state_dict(), "config": config.to_dict()}, run_dir / BEST)
        atomic_save(
            {
                "format": CHECKPOINT_FORMAT, **state, "config": config.to_dict(),
                "model": distiller.student.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if use_amp else {}, "sampler": sampler.state_dict(),
                "rng": capture_rng(),
            },
            run_dir / LAST,
        )
        _write_log(run_dir, state["history"], terms)
        if progress:
            dice = "n/a" if row["val_dice"] is None else f"{row['val_dice']:.4f}"
            parts = " ".join(f"{k} {row[k]:.4f}" for k in ["loss", *terms])
            tqdm.write(f"epoch {epoch}/{cfg_t.epochs}: {parts} val_dice {dice} ({row['seconds']:.1f} s)")
    return run_dir
