"""Plot columns of a run's ``log.csv`` against the epoch (e.g. the learned temperature of ``ctkd``).

    from training.plot_log import plot_log_columns
    plot_log_columns("runs/ctkd/log.csv", ["temperature", "grl_lambda"], "runs/ctkd/temperature.png")
    plot_runs_column({"12 epochs": "runs/a/log.csv", "36 epochs": "runs/b/log.csv"}, "val_dice", "val.png")
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Sequence

from ProstateKDLib.errors import InputError


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_log_columns(log_csv: str | os.PathLike, columns: Sequence[str]) -> tuple[list[float], dict[str, list[float]]]:
    """Epochs and the values of ``columns`` (NaN where empty) of a ``log.csv``.

    Raises:
        InputError: file missing, no ``epoch`` column, or a column not in the log
            (the message lists the columns there are).
    """
    path = Path(log_csv).expanduser()
    if not path.is_file():
        raise InputError(f"log file not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    for name in ["epoch", *columns]:
        if name not in header:
            raise InputError(f"{path} has no column {name!r} (columns: {', '.join(header) or 'none'})")
    epochs = [_number(row["epoch"]) for row in rows]
    return epochs, {name: [_number(row[name]) for row in rows] for name in columns}


def plot_log_columns(
    log_csv: str | os.PathLike, columns: Sequence[str], png_path: str | os.PathLike, title: str | None = None
) -> Path:
    """Draw ``columns`` of ``log_csv`` (one line each, epoch on the x axis) into a PNG.

    Args:
        log_csv: a run's ``log.csv``.
        columns: one or more column names (e.g. ``["temperature"]``).
        png_path: the image to write (its folder is created).
        title: figure title (default: the column names).

    Returns:
        ``png_path``.

    Raises:
        ValueError: no columns given.
        InputError: the log or a column is missing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = list(columns)
    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise ValueError(f"columns must be a non-empty list of column names, got {columns!r}")
    epochs, values = read_log_columns(log_csv, columns)
    figure = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name in columns:
        axes.plot(epochs, values[name], marker="o", markersize=3, label=name)
    axes.set_xlabel("epoch")
    axes.set_ylabel(columns[0] if len(columns) == 1 else "value")
    axes.set_title(title if title is not None else ", ".join(columns))
    axes.grid(alpha=0.3)
    if len(columns) > 1:
        axes.legend()
    figure.tight_layout()
    out = Path(png_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    return out


def plot_runs_column(
    logs: dict[str, str | os.PathLike], column: str, png_path: str | os.PathLike, title: str | None = None
) -> Path:
    """Draw one ``column`` of several runs' ``log.csv`` (one line per run, epoch on the x axis) into a PNG,
    with the plotted values beside it as JSON (same name, ``.json``); the best value of each run is marked.

    Args:
        logs: legend label -> a run's ``log.csv`` (e.g. ``{"teacher 12 ep": ".../log.csv"}``).
        column: the column to compare (e.g. ``"val_dice"``).
        png_path: the image to write (its folder is created).
        title: figure title (default: the column name).

    Raises:
        ValueError: no logs or no column given.
        InputError: a log or the column is missing.
    """
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not logs:
        raise ValueError("logs must name at least one run's log.csv")
    if not isinstance(column, str) or not column:
        raise ValueError(f"column must be a column name, got {column!r}")
    series = {label: read_log_columns(path, [column]) for label, path in logs.items()}
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    record: dict[str, dict[str, object]] = {}
    for label, (epochs, values) in series.items():
        ys = values[column]
        line, = axes.plot(epochs, ys, marker="o", markersize=2.5, linewidth=1.2, label=label)
        finite = [(y, x) for x, y in zip(epochs, ys) if not math.isnan(y)]
        best = max(finite) if finite else None
        if best is not None:
            axes.plot([best[1]], [best[0]], marker="*", markersize=11, color=line.get_color())
        record[label] = {"log": str(logs[label]), "epoch": epochs, column: ys,
                         "best": None if best is None else {"epoch": best[1], column: best[0]}}
    axes.set_xlabel("epoch")
    axes.set_ylabel(column)
    axes.set_title(title if title is not None else column)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    out = Path(png_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return out


__all__ = ["plot_log_columns", "plot_runs_column", "read_log_columns"]
