"""Train teachers: one on all training data, or a limit-trained ensemble (per site, or K random subsets).

``train_teachers(config, out_dir, subsets)`` writes::

    out_dir/
      teachers.json          mode, one record per teacher (bundle path, cases, validation Dice)
      configs/<subset>.yaml  the config of each teacher run
      logs/<subset>.log      output of each run (parallel jobs only)
      <subset>/              a normal training run folder (config.yaml, log.csv, checkpoints, ...)
      <subset>/bundle/       its exported model bundle (the teacher a distillation loads)

Subsets: ``all`` (one teacher, subset name ``all``), ``per-site`` (one per site,
named after the site, config ``data.sites: [SITE]``) or ``random:K`` (``subset1of3``
…, config ``data.subset: {index, count}``). A config's ``teachers: [out_dir]``
(or ``--teachers out_dir``) stands for every teacher listed in ``teachers.json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ProstateKDLib.errors import ConfigError, OutputError

from .config import TEACHERS_JSON, Config, config_from_dict, load_config, write_config
from .run_folder import run_state

SUBSET_MODES = "all, per-site or random:K"


@dataclass(frozen=True)
class Subset:
    """One teacher to train: its name and the config overrides that select its data."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)


def parse_subsets(text: str) -> tuple[str, int | None]:
    """``("all", None)``, ``("per-site", None)`` or ``("random", K)``.

    Raises:
        ConfigError: ``--subsets must be all, per-site or random:K (K >= 2), got 'x'``.
    """
    if text in ("all", "per-site"):
        return text, None
    match = re.fullmatch(r"random:(\d+)", text or "")
    if match and int(match.group(1)) >= 2:
        return "random", int(match.group(1))
    raise ConfigError(f"--subsets must be {SUBSET_MODES} (K >= 2), got {text!r}")


def plan_subsets(config: Config, subsets: str) -> list[Subset]:
    """The teachers ``subsets`` asks for, on the cases ``config`` selects.

    Raises:
        ConfigError: bad ``subsets``, or per-site/random with a config that already
            restricts ``data.sites`` to one site / sets ``data.subset``.
        DataError: the data folder cannot be indexed.
    """
    from .cases import development_cases, filter_cases

    mode, count = parse_subsets(subsets)
    if mode == "all":
        return [Subset("all")]
    if config.data.subset is not None:
        raise ConfigError(f"config {config.source}: key 'data.subset' must not be set with --subsets {subsets}")
    if mode == "per-site":
        sites = sorted({c.site for c in filter_cases(development_cases(config), config.data)})
        if len(sites) < 2:
            raise ConfigError(f"--subsets per-site needs cases of 2 or more sites, found {', '.join(sites)}")
        return [Subset(site, {"sites": [site]}) for site in sites]
    assert count is not None
    return [Subset(f"subset{i + 1}of{count}", {"subset": {"index": i, "count": count}}) for i in range(count)]


def subset_config(config: Config, subset: Subset, num_threads: int | None = None) -> Config:
    """``config`` restricted to ``subset``; the export name gets ``-<subset>`` appended."""
    data = config.to_dict()
    data["data"].update(subset.data)
    if subset.name != "all":
        data["export"]["name"] = f"{config.export.name}-{subset.name}"
        note = f"Limit-trained teacher ({subset.name})."
        data["export"]["description"] = f"{config.export.description} {note}".strip()
    if num_threads is not None and data["train"].get("num_threads") is None:
        data["train"]["num_threads"] = num_threads
    return config_from_dict(data, config.source)


def _command(config_path: Path, run_dir: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "training.cli", "train", str(config_path), "--run-dir", str(run_dir), "--quiet"]
    return args + (["--resume"] if resume else [])


def _run_parallel(jobs: list[tuple[str, Path, Path, bool]], n_jobs: int, out_dir: Path, progress: bool) -> None:
    """Run ``prostatekd train`` subprocesses, at most ``n_jobs`` at a time; OutputError if one fails."""
    (out_dir / "logs").mkdir(exist_ok=True)
    pending, running, failed = list(jobs), [], []
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    while pending or running:
        while pending and len(running) < n_jobs:
            name, config_path, run_dir, resume = pending.pop(0)
            log = open(out_dir / "logs" / f"{name}.log", "w", encoding="utf-8")
            proc = subprocess.Popen(_command(config_path, run_dir, resume), stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, proc, log))
            if progress:
                print(f"teacher {name}: started (log: {out_dir / 'logs' / f'{name}.log'})", flush=True)
        time.sleep(0.5)
        for item in list(running):
            name, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode != 0:
                    failed.append(name)
                if progress:
                    print(f"teacher {name}: {'finished' if proc.returncode == 0 else 'FAILED'}", flush=True)
    if failed:
        raise OutputError(f"teacher run(s) failed: {', '.join(failed)} (see {out_dir / 'logs'})")


def train_teachers(
    config: Config | str | os.PathLike,
    out_dir: str | os.PathLike,
    subsets: str = "all",
    jobs: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and export the teachers of ``subsets`` into ``out_dir``; returns ``teachers.json``'s content.

    Args:
        config: teacher config (distiller ``none``) or its path.
        out_dir: new or empty folder, or (``resume``) one to complete: finished
            teachers are kept, stopped ones resumed, missing ones started.
        subsets: ``all``, ``per-site`` or ``random:K``.
        jobs: teachers trained at the same time (subprocesses); each gets
            ``cpu_count // jobs`` threads unless the config sets ``train.num_threads``.
        progress: progress bars (one process) or start/finish lines (parallel jobs).

    Raises:
        ConfigError: bad ``subsets``/``jobs``, or the config trains with teachers.
        OutputError: ``out_dir`` not empty without ``resume``, or a teacher run failed.
    """
    from .export import export_run
    from .train import train

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be an integer >= 1, got {jobs!r}")
    if not isinstance(config, Config):
        config = load_config(config)
    if config.teachers:
        raise ConfigError(f"config {config.source}: key 'teachers' must be empty for a teacher run")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} is a file")
    if not resume and out_dir.is_dir() and any(out_dir.iterdir()):
        raise OutputError(f"teacher folder {out_dir} is not empty; use --resume to complete it, or choose a new folder")
    plan = plan_subsets(config, subsets)
    (out_dir / "configs").mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    todo = []
    for subset in plan:
        sub_config = subset_config(config, subset, threads)
        config_path = out_dir / "configs" / f"{subset.name}.yaml"
        write_config(sub_config, config_path)
        state = run_state(out_dir / subset.name)
        if state != "done":
            todo.append((subset.name, config_path, out_dir / subset.name, state == "started"))
    if jobs == 1 or len(todo) <= 1:
        for name, config_path, run_dir, again in todo:
            if progress:
                print(f"teacher {name}: training", flush=True)
            train(load_config(config_path), run_dir, resume=again, progress=progress)
    else:
        _run_parallel(todo, jobs, out_dir, progress)
    for name, _, run_dir, _ in todo:
        export_run(run_dir, run_dir / "bundle", overwrite=True)
    return _write_listing(out_dir, plan, subsets)


def _write_listing(out_dir: Path, plan: list[Subset], subsets: str) -> dict[str, Any]:
    from ProstateKDLib.bundle import load_bundle

    from .runinfo import write_json

    records = []
    for subset in plan:
        run_dir = out_dir / subset.name
        bundle = load_bundle(run_dir / "bundle")
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        records.append({
            "name": subset.name,
            "bundle": f"{subset.name}/bundle",
            "run_dir": subset.name,
            "model": bundle.meta.name,
            "training_subset": info["data"].get("subset"),
            "train_cases": info["data"]["train_cases"],
            "val_cases": info["data"]["val_cases"],
            "validation_dice": bundle.meta.provenance.get("validation_dice"),
        })
    listing = {"subsets": subsets, "teachers": records}
    write_json(listing, out_dir / TEACHERS_JSON)
    return listing


def format_listing(listing: dict[str, Any]) -> str:
    """One line per teacher: name, cases, validation Dice, bundle."""
    lines = [f"{'teacher':<14} {'train':>5} {'val':>4} {'val Dice':>8}  bundle"]
    for t in listing["teachers"]:
        dice = "n/a" if t["validation_dice"] is None else f"{t['validation_dice']:.4f}"
        lines.append(f"{t['name']:<14} {len(t['train_cases']):>5} {len(t['val_cases']):>4} {dice:>8}  {t['bundle']}")
    return "\n".join(lines)


__all__ = ["train_teachers", "plan_subsets", "parse_subsets", "subset_config", "format_listing"]
