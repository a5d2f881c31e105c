"""What every resumable training run does with its output folder (the engine, run sequences).

One implementation of: the new-or-resumable folder check, the options-differ-on-resume check,
and the atomic ``log.csv`` rewrite after each epoch.
"""

from __future__ import annotations

import csv
import os
import secrets
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from ProstateKDLib.errors import ConfigError, OutputError


def check_output_folder(folder: Path, resume: bool, noun: str = "output folder", activity: str = "run") -> None:
    """OutputError unless ``folder`` can take a new run (or, with ``resume``, holds one); writes nothing.

    Messages: ``<noun> <folder> is a file``; ``cannot resume: <folder>/checkpoint_last.pt not found``;
    ``<noun> <folder> is not empty; use --resume to continue the <activity> in it, or choose a new folder``.
    """
    from .checkpoint import LAST

    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{noun} {folder} is a file")
    if resume:
        if not (folder / LAST).is_file():
            raise OutputError(f"cannot resume: {folder / LAST} not found")
        return
    if folder.is_dir() and any(folder.iterdir()):
        raise OutputError(
            f"{noun} {folder} is not empty; use --resume to continue the {activity} in it, or choose a new folder"
        )


def run_state(run_dir: Path) -> str:
    """``done`` (exported ``bundle/``), ``started`` (a checkpoint to resume) or ``new``: a step of a run sequence."""
    from .checkpoint import LAST

    if (run_dir / "bundle" / "model.json").is_file():
        return "done"
    if (run_dir / LAST).is_file():
        return "started"
    return "new"


def check_resumable_options(
    saved: Mapping[str, Any], current: Mapping[str, Any], free: Collection[str], command: str, activity: str
) -> None:
    """ConfigError naming the first option (outside ``free``) that differs from the run being resumed."""
    for key in sorted(set(saved) | set(current)):
        if key not in free and saved.get(key) != current.get(key):
            raise ConfigError(
                f"{command} option '{key}' differs from the {activity} being resumed "
                f"({saved.get(key)!r} there, {current.get(key)!r} here)"
            )


def write_log_csv(folder: Path, history: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rewrite ``folder/log.csv`` atomically: one row per epoch, floats as ``%.6g``, None as empty."""
    tmp = folder / f".log.csv.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: "" if row.get(k) is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                             for k in columns})
    os.replace(tmp, folder / "log.csv")
