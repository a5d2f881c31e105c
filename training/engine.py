"""The one training loop: ``fit(method, run_dir, resume)``, shared by every training command.

:func:`fit` owns what every method does the same way: seeding, the device and
mixed precision (AMP, CUDA only), ``torchrun`` (DistributedDataParallel, for
methods that support it), the optimizer step with the learning-rate schedule
(:func:`learning_rate`: warm-up, poly or constant, and the ``lr_anchor`` that
continues the decay when a resumed run changes its length), gradient clipping,
the per-epoch means, ``run.json``, ``log.csv``, TensorBoard scalars, the atomic
``checkpoint_last.pt`` with every random generator and the patch sampler (so
a resumed run ends with exactly the weights of an uninterrupted one on the CPU),
and the export at the end.

A training method is a :class:`Method` subclass that supplies only what differs
(in the spirit of nnU-Net v2's trainer variants): :meth:`Method.build` (networks,
optimizers, samplers), :meth:`Method.step` (one batch's loss), its extra
checkpoint state, validation, ``run.json`` content and export. The methods:
``training.train.DistillMethod`` (supervised and distillation: ``train``,
``distill``, teacher sets, self-distillation generations), ``training.adapt.AdaptMethod``,
``training.coteach.CoteachMethod``, ``training.data_free.DataFreeMethod``.

Batches are dicts: ``{"image", "label", "case_index", ...}`` from the patch
sampler (:func:`patch_batch`; extra per-sample keys of the sampler pass through),
or whatever a method's :meth:`Method.batches` yields.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ProstateKDLib.errors import ConfigError

POLY_EXPONENT = 0.9
CHECKPOINT_FORMAT = 1


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


def patch_batch(item: Any, sampler: Any) -> dict[str, Any]:
    """One item of ``PatchSampler.epoch()`` as the engine's batch dict.

    ``(image, label)`` or a dict of per-sample tensors; ``case_index`` (the
    training-case index of every sample, ``sampler.last_indices``) is added.
    """
    import torch

    batch = dict(item) if isinstance(item, Mapping) else dict(zip(("image", "label"), item))
    batch.setdefault("case_index", torch.as_tensor(sampler.last_indices))
    return batch


@dataclass
class Run:
    """What :func:`fit` gives a method: the folder, process group, device, AMP and progress flag."""

    run_dir: Path
    ctx: Any
    device: Any
    amp: bool
    progress: bool
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files."""
        return self.ctx.is_main


class Method:
    """What a training method supplies to :func:`fit`; override what differs.

    Attributes set by the subclass (most in :meth:`build`):
        command, noun, activity: names in messages (``<noun> <dir> is not empty; use --resume
            to continue the <activity> in it ...``); ``epoch_label`` prefixes the progress lines.
        epochs, seed, device, amp, num_threads: the run's length and set-up.
        learning_rate, lr_schedule, warmup_steps, grad_clip: the optimizer schedule.
        sampler, sampler_key, patches_per_volume, batch_size: the patch sampler the engine
            iterates and checkpoints (``None``: the method's own :meth:`batches`).
        steps_per_epoch: optimizer steps per epoch.
        log_columns: the columns of ``log.csv``.
        supports_ddp: whether the method runs under ``torchrun``.
    """

    command = "train"
    noun = "output folder"
    activity = "run"
    epoch_label = "epoch"
    epochs = 1
    seed = 0
    device: Any = "cpu"
    amp = False
    num_threads: int | None = None
    learning_rate = 1e-3
    lr_schedule = "constant"
    warmup_steps = 0
    grad_clip: float | None = None
    sampler: Any = None
    sampler_key = "sampler"
    patches_per_volume = 1
    batch_size = 1
    steps_per_epoch = 1
    log_columns: Sequence[str] = ("epoch", "loss", "lr", "seconds")
    supports_ddp = False

    # ------------------------------------------------------------ set-up
    def check_resumable(self, checkpoint: Mapping[str, Any]) -> None:
        """ConfigError when the run being resumed was made with other settings."""

    def build(self, run: Run) -> None:
        """Networks, optimizers and samplers on ``run.device`` (global generators already seeded)."""
        raise NotImplementedError

    def networks(self) -> dict[str, Any]:
        """Checkpoint key -> module whose ``state_dict`` is saved and restored (``model``: the trained one)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, Any]:
        """Checkpoint key -> optimizer (every one steps each batch)."""
        raise NotImplementedError

    def clip_parameters(self) -> list[Any]:
        """The parameters whose gradient norm ``grad_clip`` bounds."""
        return [p for opt in self.optimizers().values() for group in opt.param_groups for p in group["params"]]

    def extra_state(self) -> dict[str, Any]:
        """What else the checkpoint holds (top-level keys: options, generators, method state)."""
        return {}

    def load_extra_state(self, checkpoint: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_state` from a checkpoint."""

    def prepare(self, run: Run, resumed: bool) -> None:
        """Called after the checkpoint is restored, before the first epoch."""

    def write_records(self, run_dir: Path) -> None:
        """Files that describe the run's inputs (``config.yaml``, ``options.json``), rank 0 only."""

    def run_info(self, run: Run) -> dict[str, Any]:
        """The method's part of ``run.json``."""
        return {}

    # ------------------------------------------------------------ one epoch
    def start_epoch(self, epoch: int) -> dict[str, Any]:
        """Set train modes etc.; returns values for the epoch's log row (e.g. who teaches)."""
        return {}

    def epoch_description(self, epoch: int) -> str:
        """The progress bar's text."""
        return f"{self.epoch_label} {epoch}/{self.epochs}"

    def batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        """The epoch's batches: by default the patch sampler's, as dicts (:func:`patch_batch`)."""
        for item in self.sampler.epoch(self.patches_per_volume, self.batch_size):
            yield patch_batch(item, self.sampler)

    def step(self, batch: dict[str, Any], step: int) -> tuple[Any, dict[str, Any]]:
        """``(loss to back-propagate, {log name: value})`` of one batch (inside autocast)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After the optimizer step (e.g. an EMA update)."""

    def validate(self, epoch: int) -> dict[str, Any]:
        """Values for the log row after the epoch (validation Dice...)."""
        return {}

    def end_epoch(self, row: dict[str, Any], run: Run) -> None:
        """Rank 0, before ``checkpoint_last.pt`` is written (e.g. the best checkpoint)."""

    def epoch_line(self, epoch: int, row: Mapping[str, Any]) -> str:
        """The line printed after each epoch."""
        return f"{self.epoch_description(epoch)}: loss {row.get('loss', float('nan')):.4f} ({row['seconds']:.1f} s)"

    def export(self, run: Run) -> None:
        """Rank 0, after the last epoch (bundles)."""


def _contexts(method: Method) -> tuple[Any, Any]:
    from ProstateKDLib.device import resolve_device

    from .distributed import DistContext, init_distributed

    device = resolve_device(method.device)
    if method.supports_ddp:
        return init_distributed(device)
    world = os.environ.get("WORLD_SIZE", "1")
    if world not in ("", "0", "1"):
        raise ConfigError(f"{method.command} does not run under torchrun (WORLD_SIZE={world}); run it as one process")
    return DistContext(), device


def fit(method: Method, run_dir: str | os.PathLike, resume: bool = False, progress: bool = True) -> Path:
    """Train ``method`` into ``run_dir`` (new or empty, or with ``resume`` the folder of a run to continue).

    Returns:
        the run folder.

    Raises:
        OutputError: the folder is not empty (without ``resume``) or holds nothing to resume.
        ConfigError: the resumed run was made with other settings; a method without torchrun support
            launched by torchrun.
        DeviceError: the device is not available.
    """
    from .distributed import shutdown

    ctx, device = _contexts(method)
    try:
        return _fit(method, Path(run_dir).expanduser(), resume, progress, ctx, device)
    finally:
        shutdown(ctx)


def _restore(method: Method, checkpoint: Mapping[str, Any], ctx: Any, scaler: Any, use_amp: bool) -> None:
    from .checkpoint import restore_rng

    for key, network in method.networks().items():
        network.load_state_dict(checkpoint[key])
    method.load_extra_state(checkpoint)
    for key, optimizer in method.optimizers().items():
        optimizer.load_state_dict(checkpoint[key])
    if use_amp and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    per_rank = len(checkpoint.get("rng_ranks") or []) == ctx.world_size > 1
    if method.sampler is not None:
        key = method.sampler_key
        method.sampler.load_state_dict(checkpoint["sampler_ranks"][ctx.rank] if per_rank else checkpoint[key])
    restore_rng(checkpoint["rng_ranks"][ctx.rank] if per_rank else checkpoint["rng"])


def _fit(method: Method, run_dir: Path, resume: bool, progress: bool, ctx: Any, device: Any) -> Path:
    import torch
    from tqdm.auto import tqdm

    from .checkpoint import LAST, atomic_save, capture_rng, load_checkpoint, seed_everything
    from .distributed import all_reduce_mean, barrier, gather_objects
    from .run_folder import check_output_folder, write_log_csv
    from .runinfo import machine_info, start_session
    from .tblog import open_tensorboard, write_scalars

    main = ctx.is_main
    progress = progress and main
    check_output_folder(run_dir, resume, noun=method.noun, activity=method.activity)
    checkpoint = load_checkpoint(run_dir / LAST) if resume else None
    if checkpoint is not None:
        method.check_resumable(checkpoint)
    barrier(ctx)  # every rank has checked the folder before rank 0 writes into it
    if method.num_threads:
        torch.set_num_threads(method.num_threads)
    use_amp = bool(method.amp) and device.type == "cuda"
    run = Run(run_dir, ctx, device, use_amp, progress)

    seed_everything(method.seed)
    method.build(run)
    optimizers = method.optimizers()
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    steps = method.steps_per_epoch
    total_steps = steps * method.epochs
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "lr_anchor": None}
    if checkpoint is not None:
        _restore(method, checkpoint, ctx, scaler, use_amp)
        state = {k: checkpoint.get(k, state[k]) for k in state}
        saved_epochs = int(checkpoint.get("epochs", method.epochs))
        if saved_epochs != method.epochs and method.lr_schedule != "constant" and state["step"] > 0:
            # the run is extended (or shortened): continue the decay from the rate reached so far
            then = learning_rate(method.learning_rate, method.lr_schedule, state["step"] - 1, steps * saved_epochs,
                                 method.warmup_steps, state["lr_anchor"])
            state["lr_anchor"] = {"step": state["step"], "lr": then}
    run.state = state
    method.prepare(run, resumed=checkpoint is not None)
    columns = list(method.log_columns)
    writer = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        writer, tb_info = open_tensorboard(run_dir)
        method.write_records(run_dir)
        info = method.run_info(run)
        info.setdefault("machine", machine_info(device))
        info.update(tensorboard=tb_info, distributed=ctx.describe(), amp=use_amp)
        start_session(run_dir, info, resumed_from=state["epoch"] if checkpoint is not None else None)
        write_log_csv(run_dir, state["history"], columns)

    for epoch in range(state["epoch"] + 1, method.epochs + 1):
        started = time.perf_counter()
        head = method.start_epoch(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(method.batches(epoch), total=steps, desc=method.epoch_description(epoch), unit="batch",
                   disable=not progress, leave=False, mininterval=1.0)
        lr = method.learning_rate
        for batch in bar:
            lr = learning_rate(method.learning_rate, method.lr_schedule, state["step"], total_steps,
                               method.warmup_steps, state["lr_anchor"])
            for optimizer in optimizers.values():
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                loss, values = method.step(batch, state["step"])
            scaler.scale(loss).backward()
            if method.grad_clip is not None:
                for optimizer in optimizers.values():
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(method.clip_parameters(), method.grad_clip)
            for optimizer in optimizers.values():
                scaler.step(optimizer)
            scaler.update()
            method.after_step()
            state["step"] += 1
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        keys = list(sums)
        means = all_reduce_mean(ctx, [sums[k] / steps for k in keys], device)
        row: dict[str, Any] = {"epoch": epoch, **head, **dict(zip(keys, means)), "lr": lr}
        row.update(method.validate(epoch))
        row["seconds"] = time.perf_counter() - started
        state["history"].append(row)
        state["epoch"] = epoch
        sampler_states = gather_objects(ctx, method.sampler.state_dict()) if method.sampler is not None else None
        rng_states = gather_objects(ctx, capture_rng())
        if main:
            method.end_epoch(row, run)
            saved: dict[str, Any] = {
                "format": CHECKPOINT_FORMAT, **state, "epochs": method.epochs, **method.extra_state(),
                **{k: n.state_dict() for k, n in method.networks().items()},
                **{k: o.state_dict() for k, o in optimizers.items()},
                "scaler": scaler.state_dict() if use_amp else {}, "rng": rng_states[0],
            }
            if sampler_states is not None:
                saved[method.sampler_key] = sampler_states[0]
            if ctx.enabled:
                saved.update(sampler_ranks=sampler_states, rng_ranks=rng_states, world_size=ctx.world_size)
            atomic_save(saved, run_dir / LAST)
            write_log_csv(run_dir, state["history"], columns)
            write_scalars(writer, row, epoch)
        barrier(ctx)
        if progress:
            tqdm.write(method.epoch_line(epoch, row))
    if writer is not None:
        writer.close()
    if main:
        method.export(run)
    barrier(ctx)
    return run_dir
