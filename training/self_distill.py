"""Born-again training: generations of the same student, each distilled from the one before.

``train_generations(config, out_dir, generations)`` writes::

    out_dir/
      generations.json     one record per generation: run, bundle, teacher, best validation Dice
      gen1/                a normal run folder, distiller ``none`` (no teacher)
      gen1/bundle/         its exported bundle (the teacher of generation 2)
      gen2/                distiller ``self_distill``, teacher gen1/bundle
      ...

Every generation uses the config's network, data, preprocessing and training
settings (same seed); only the distiller section and the teachers change. The
config's own ``teachers`` are not used. When the config's distiller is
``self_distill``, its weights and options (``temperature``) are used for
generations 2 and later; a ``none`` config's ``dice``/``ce`` weights are kept
(the ``kl`` weight and the temperature take their defaults). The export name gets
``-gen<k>`` appended.

Reference: Furlanello et al., "Born-Again Neural Networks", ICML 2018.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ProstateKDLib.errors import ConfigError, OutputError

from .config import Config, config_from_dict, load_config
from .run_folder import run_state

GENERATIONS_JSON = "generations.json"
METHOD = "self_distill"


def check_generations(generations: Any) -> int:
    """``generations`` as an int >= 1; ConfigError otherwise."""
    if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
        raise ConfigError(f"--generations must be an integer >= 1, got {generations!r}")
    return generations


def generation_config(config: Config, generation: int, teacher: Path | None) -> Config:
    """The config of generation ``generation`` (1: ``none``; later: ``self_distill`` from ``teacher``)."""
    from training.distillers import DISTILLERS

    data = config.to_dict()
    data.pop("teachers", None)
    mine = config.distiller
    if generation == 1:
        supervised = DISTILLERS.get("none").loss_names
        source = mine.weights if mine.name in (METHOD, "none") else {}
        data["distiller"] = {"name": "none", "weights": {k: v for k, v in source.items() if k in supervised}}
    else:
        if teacher is None:
            raise ValueError(f"generation {generation} needs the bundle of generation {generation - 1}")
        if mine.name == METHOD:
            data["distiller"] = {"name": METHOD, "weights": dict(mine.weights), **dict(mine.options)}
        else:  # keep the config's supervised weights (``none``), KL weight by default
            data["distiller"] = {"name": METHOD, "weights": dict(mine.weights) if mine.name == "none" else {}}
        data["teachers"] = [str(teacher)]
    data["export"]["name"] = f"{config.export.name}-gen{generation}"
    note = "Born-again generation 1 (no teacher)." if generation == 1 else (
        f"Born-again generation {generation}, self-distilled from generation {generation - 1}.")
    data["export"]["description"] = f"{config.export.description} {note}".strip()
    return config_from_dict(data, config.source)


def train_generations(
    config: Config | str | os.PathLike,
    out_dir: str | os.PathLike,
    generations: int,
    resume: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Train ``generations`` born-again generations into ``out_dir``; returns their bundle folders.

    Generation 1 trains with distiller ``none``; generation ``k + 1`` with
    ``self_distill`` and generation ``k``'s bundle as its one teacher. Each
    generation is exported to ``out_dir/gen<k>/bundle``.

    Args:
        config: the student config (or its path).
        out_dir: new or empty folder, or (``resume``) one to complete: finished
            generations are kept, a stopped one is resumed, missing ones are trained.
        generations: how many generations (>= 1).
        resume: complete an existing folder.
        progress: progress bars and one line per generation.

    Raises:
        ConfigError: ``generations`` < 1, or a generation's config is invalid.
        OutputError: ``out_dir`` is a file, or not empty without ``resume``.
    """
    from .export import export_run
    from .train import train

    generations = check_generations(generations)
    if not isinstance(config, Config):
        config = load_config(config)
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} is a file")
    if not resume and out_dir.is_dir() and any(out_dir.iterdir()):
        raise OutputError(f"self-distillation folder {out_dir} is not empty; use --resume to complete it, "
                          "or choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    bundles: list[Path] = []
    teacher: Path | None = None
    for generation in range(1, generations + 1):
        run_dir = out_dir / f"gen{generation}"
        state = run_state(run_dir)
        if state != "done":
            if progress:
                source = "no teacher" if teacher is None else f"teacher {teacher}"
                print(f"generation {generation}/{generations}: training ({source})", flush=True)
            train(generation_config(config, generation, teacher), run_dir, resume=state == "started",
                  progress=progress)
            export_run(run_dir, run_dir / "bundle", overwrite=True)
        teacher = run_dir / "bundle"
        bundles.append(teacher)
        _write_listing(out_dir, generation)
    return bundles


def _write_listing(out_dir: Path, done: int) -> dict[str, Any]:
    """Write ``generations.json`` for generations 1..``done``; returns its content."""
    from ProstateKDLib.bundle import load_bundle

    from .runinfo import write_json

    records = []
    for generation in range(1, done + 1):
        bundle = load_bundle(out_dir / f"gen{generation}" / "bundle")
        records.append({
            "generation": generation,
            "run_dir": f"gen{generation}",
            "bundle": f"gen{generation}/bundle",
            "distiller": "none" if generation == 1 else METHOD,
            "teacher": None if generation == 1 else f"gen{generation - 1}/bundle",
            "model": bundle.meta.name,
            "validation_dice": bundle.meta.provenance.get("validation_dice"),
        })
    listing = {"method": "born-again self-distillation (Furlanello et al., ICML 2018)", "generations": records}
    write_json(listing, out_dir / GENERATIONS_JSON)
    return listing


def format_listing(listing: dict[str, Any]) -> str:
    """One line per generation: number, teacher, validation Dice, bundle."""
    lines = [f"{'gen':>3} {'teacher':<14} {'val Dice':>8}  bundle"]
    for g in listing["generations"]:
        dice = "n/a" if g["validation_dice"] is None else f"{g['validation_dice']:.4f}"
        lines.append(f"{g['generation']:>3} {g['teacher'] or '-':<14} {dice:>8}  {g['bundle']}")
    return "\n".join(lines)


__all__ = ["train_generations", "generation_config", "check_generations", "format_listing", "GENERATIONS_JSON"]
