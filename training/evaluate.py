"""Evaluate model bundles against labelled cases: per-case metrics, per-site summaries, box plots.

Every model runs through :meth:`ProstateKDLib.inference.Segmenter.segment`,
the path of ``prostatekd segment``, and its mask is compared with the label
(zones merged to gland) on the original image grid with
:func:`ProstateKDLib.metrics.segmentation_metrics`. ``evaluate`` writes to the
output folder:

* ``per_case.csv``: model, case, site, the metrics, ``seconds`` (the time of
  ``Segmenter.segment``: preprocessing, network and postprocessing; not file
  reading) and ``note`` (empty-mask notes and plausibility warnings);
* ``summary.json``: per model, overall and per site mean/std/median (over the
  finite values; ``nan`` counts the NaN ones), case count and mean seconds;
* ``dice.png``, ``hd95_mm.png``, ``asd_mm.png``, ``volume_error_pct.png``:
  box plots, boxes per site (and all cases), one colour per model;
* with ``save_masks``: ``masks/<model>/<case id>.nii.gz``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ProstateKDLib.datasets import CaseRecord, index_cases, read_case
from ProstateKDLib.errors import DataError, OutputError
from ProstateKDLib.metrics import METRICS, segmentation_metrics
from .map_segmenter import MapSegmenter

COLUMNS = ("model", "case", "site", *METRICS, "seconds", "note")
SUMMARY_METRICS = (*METRICS, "seconds")
PLOTS = {
    "dice": "Dice",
    "hd95_mm": "HD95 (mm)",
    "asd_mm": "average symmetric surface distance (mm)",
    "volume_error_pct": "volume error (%)",
}
RESULT_FILES = ("per_case.csv", "summary.json", *(f"{m}.png" for m in PLOTS))


def select_cases(
    index: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    split: str = "test",
    fold: int = 0,
    channel: int | None = None,
) -> list[CaseRecord]:
    """Cases of one split of a dataset index, or every case of a data source (exactly one of the two).

    Raises:
        DataError: the messages of :func:`training.prepare.index_split` or
            :func:`ProstateKDLib.datasets.index_cases`; ``dataset index <path> has no <split> cases``.
    """
    if (index is None) == (data is None):
        raise ValueError("give exactly one of index and data")
    if data is not None:
        return index_cases(data, channel=channel)
    from .prepare import index_split

    cases = index_split(index, split, fold)
    if not cases:
        hint = "; choose another split (val, train or all)" if split == "test" else ""
        raise DataError(f"dataset index {index} has no {split} cases{hint}")
    return cases


def check_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """The output folder, created when missing; refused when it holds files, unless ``overwrite``.

    Raises:
        OutputError: ``<out> is not a folder``; ``output folder <out> is not empty (use --overwrite
            to write into it)``; ``cannot create output folder <out>: <reason>``.
    """
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise OutputError("output folder is empty")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{out} is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputError(f"output folder {out} is not empty (use --overwrite to write into it)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    return path


def model_labels(names: Sequence[str], versions: Sequence[str]) -> list[str]:
    """Unique display names: the bundle name, with the version and then ``#n`` only when needed."""
    labels = list(names)
    if len(set(labels)) < len(labels):
        labels = [n if names.count(n) == 1 else f"{n} {v}" for n, v in zip(names, versions)]
    seen: dict[str, int] = {}
    result = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        result.append(label if labels.count(label) == 1 else f"{label} #{seen[label]}")
    return result


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def stats(values: Sequence[float]) -> dict[str, Any]:
    """mean, std (sample, ``None`` below two values), median and ``n`` of the finite values; ``nan`` counts the rest."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    n = int(finite.size)
    return {
        "mean": float(finite.mean()) if n else None,
        "std": float(finite.std(ddof=1)) if n >= 2 else None,
        "median": float(np.median(finite)) if n else None,
        "n": n,
        "nan": int(array.size - n),
    }


def summarize(rows: Sequence[dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """Per model: ``cases``, ``mean_seconds``, ``overall`` and per-site ``sites`` statistics of each metric."""
    result: dict[str, Any] = {}
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        sites = sorted({r["site"] for r in mine})
        result[model] = {
            "cases": len(mine),
            "mean_seconds": float(np.mean([r["seconds"] for r in mine])) if mine else None,
            "overall": {m: stats([r[m] for r in mine]) for m in SUMMARY_METRICS},
            "sites": {
                site: {"cases": sum(r["site"] == site for r in mine),
                       **{m: stats([r[m] for r in mine if r["site"] == site]) for m in SUMMARY_METRICS}}
                for site in sites
            },
        }
    return result


def plot_metric(rows: Sequence[dict[str, Any]], metric: str, models: Sequence[str], path: Path) -> Path:
    """Box plot of ``metric``: a group per site plus ``all``, one box (colour) per model; NaN left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sites = sorted({r["site"] for r in rows})
    groups = [*sites, "all"] if len(sites) > 1 else sites
    figure = Figure(figsize=(max(5.0, 1.1 * len(groups) * max(1, len(models)) ** 0.5 + 2), 4.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(models))]
    width = 0.8 / max(len(models), 1)
    for g, group in enumerate(groups):
        for m, model in enumerate(models):
            values = [r[metric] for r in rows if r["model"] == model and (group == "all" or r["site"] == group)]
            values = [v for v in values if math.isfinite(v)]
            if not values:
                continue
            box = axes.boxplot(values, positions=[g + (m - (len(models) - 1) / 2) * width], widths=width * 0.85,
                               patch_artist=True, manage_ticks=False)
            for patch in box["boxes"]:
                patch.set_facecolor(colours[m])
                patch.set_alpha(0.75)
            for line in box["medians"]:
                line.set_color("black")
    counts = [len({r["case"] for r in rows if group == "all" or r["site"] == group}) for group in groups]
    axes.set_xticks(range(len(groups)), [f"{g}\n(n={n})" for g, n in zip(groups, counts)])
    axes.set_xlim(-0.6, len(groups) - 0.4)
    axes.set_ylabel(PLOTS.get(metric, metric))
    axes.set_title(f"{PLOTS.get(metric, metric)} per site")
    axes.grid(axis="y", alpha=0.3)
    if metric == "volume_error_pct":
        axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.legend(handles=[Patch(facecolor=c, alpha=0.75, label=m) for c, m in zip(colours, models)],
                fontsize="small", loc="best")
    figure.tight_layout()
    figure.savefig(path)
    return path


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _segmenter(model: str | os.PathLike | None, device: str, num_threads: int | None) -> Any:
    """A :class:`~ProstateKDLib.inference.Segmenter`, or a :class:`MapSegmenter` for an external-teacher folder."""
    from ProstateKDLib.inference import Segmenter

    from .external_teacher import is_external_teacher, read_external_teacher

    if model is not None and is_external_teacher(model):
        return MapSegmenter(read_external_teacher(model))
    return Segmenter(model, device=device, num_threads=num_threads)


def evaluate(
    models: Sequence[str | os.PathLike | None],
    cases: Sequence[CaseRecord],
    out: str | os.PathLike,
    device: str = "auto",
    save_masks: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    num_threads: int | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment ``cases`` with each model, compare with the labels, write the results to ``out``.

    Args:
        models: bundle names or paths (``None``: the bundled default student), or external-teacher
            folders (their cached maps, thresholded: :class:`~training.map_segmenter.MapSegmenter`).
        cases: labelled cases (for example from :func:`select_cases`).
        out: output folder, new or empty (or ``overwrite``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        save_masks: also write each predicted mask.
        overwrite: write into a non-empty folder (files of the same name are replaced).
        progress: tqdm bar over cases on stderr.
        num_threads: CPU threads for torch.
        source: where the cases came from, recorded in ``summary.json``.

    Returns:
        The ``summary.json`` content (``models`` maps each model's display name to its statistics).

    Raises:
        OutputError: messages of :func:`check_output_dir`, or writing fails.
        DataError: ``no cases to evaluate``, or a case cannot be read (the message names it).
        BundleError, DeviceError: a model or the device cannot be used.
    """
    from tqdm.auto import tqdm

    from ProstateKDLib.image_io import write_mask

    if not models:
        raise ValueError("give at least one model")
    if not cases:
        raise DataError("no cases to evaluate")
    folder = check_output_dir(out, overwrite)
    segmenters = [_segmenter(model, device, num_threads) for model in models]
    metas = [s.meta if isinstance(s, MapSegmenter) else s.bundle.meta for s in segmenters]
    names = model_labels([m.name for m in metas], [m.version for m in metas])
    rows: list[dict[str, Any]] = []
    bar = tqdm(cases, desc="evaluate", unit="case", file=sys.stderr, disable=not progress)
    for case in bar:
        image, label = read_case(case)
        for name, segmenter in zip(names, segmenters):
            start = time.perf_counter()
            if isinstance(segmenter, MapSegmenter):  # an external teacher: its cached map of this case
                result = segmenter.segment_case(case.case_id, image)
            else:
                result = segmenter.segment(image)
            seconds = time.perf_counter() - start
            metrics = segmentation_metrics(result.mask, label)
            note = "; ".join([metrics.note, *result.warnings] if metrics.note else result.warnings)
            rows.append({"model": name, "case": case.case_id, "site": case.site,
                         **{k: getattr(metrics, k) for k in METRICS}, "seconds": seconds, "note": note})
            if save_masks:
                target = folder / "masks" / _safe_name(name) / f"{case.case_id}.nii.gz"
                target.parent.mkdir(parents=True, exist_ok=True)
                write_mask(result.mask, target, overwrite=True, segments=segmenter.segments())
        bar.set_postfix(dice=f"{rows[-1]['dice']:.3f}")
    bar.close()

    with open(folder / "per_case.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: _format(v) for k, v in row.items()} for row in rows)
    per_model = summarize(rows, names)
    for name, segmenter, meta in zip(names, segmenters, metas):
        path = segmenter.path if isinstance(segmenter, MapSegmenter) else segmenter.bundle.path
        per_model[name] = {"bundle": str(path), "name": meta.name, "version": meta.version,
                           **per_model[name]}
    summary = {
        "format": "prostatekd-evaluation",
        "format_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source or {}),
        "device": str(segmenters[0].device),
        "cases": len(cases),
        "sites": sorted({c.site for c in cases}),
        "metrics": list(SUMMARY_METRICS),
        "statistics": "mean/std (sample)/median over finite values; n = finite values, nan = NaN values "
        "(undefined distances when one mask is empty)",
        "models": per_model,
    }
    (folder / "summary.json").write_text(json.dumps(_json_safe(summary), indent=1) + "\n", encoding="utf-8")
    for metric in PLOTS:
        plot_metric(rows, metric, names, folder / f"{metric}.png")
    return summary


def format_table(summary: dict[str, Any], metric: str = "dice") -> str:
    """Mean ``metric`` per model (rows) and site (columns), plus overall, as aligned text."""
    sites = summary["sites"]
    models = summary["models"]
    first = max([len(f"mean {metric}"), *(len(m) for m in models)])
    widths = [max(7, len(s)) for s in [*sites, "overall"]]
    header = f"{'mean ' + metric:<{first}}  " + "  ".join(f"{s:>{w}}" for s, w in zip([*sites, "overall"], widths))
    lines = [header]

    def cell(entry: dict[str, Any] | None) -> str:
        value = entry and entry[metric]["mean"]
        return "-" if value is None else f"{value:.3f}"

    for model, data in models.items():
        cells = [cell(data["sites"].get(site)) for site in sites] + [cell(data["overall"])]
        lines.append(f"{model:<{first}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)
