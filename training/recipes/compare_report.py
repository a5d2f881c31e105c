"""The results of ``compare_kd``: one table (Markdown, CSV, JSON) and two plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

COLUMNS = ("model", "role", "method", "teachers", "parameters", "gflops_320x320x24", "cpu_latency_s",
           "train_s", "train_total_s")


def nan_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def summarize(models: dict[str, Any], rows: list[dict[str, Any]], sites: Sequence[str]) -> list[dict[str, Any]]:
    """One record per model: its cost columns, ``dice_<site>`` means and ``dice_mean`` (over test cases)."""
    table = []
    for key, model in models.items():
        mine = [r for r in rows if r["model"] == key]
        record: dict[str, Any] = {
            "model": key, "role": model["role"], "method": model["method"], "teachers": model["teachers"],
            "parameters": model["parameters"], "gflops_320x320x24": model["gflops"],
            "cpu_latency_s": model["latency_s"], "train_s": model["train_s"],
            "train_total_s": model["train_s"] + model.get("prereq_s", 0.0),
        }
        for site in sites:
            record[f"dice_{site}"] = nan_mean([r["dice"] for r in mine if r["site"] == site])
        record["dice_mean"] = nan_mean([r["dice"] for r in mine])
        table.append(record)
    return table


def _cell(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(table: list[dict[str, Any]], sites: Sequence[str], meta: dict[str, Any]) -> str:
    """The results table as Markdown, with what was measured and how."""
    header = ["model", "role", "teachers", "params", "GFLOPs 320x320x24", "CPU s/vol", "train s", "train s total",
              *[f"Dice {s}" for s in sites], "Dice mean"]
    lines = [
        f"# KD comparison ({meta['scale']} scale) - {meta['note']}",
        "",
        f"Test cases: {len(meta['test_cases'])} held out ({', '.join(meta['test_cases'])}). "
        "Dice of the gland on the input grid, after postprocessing, through the inference path "
        "(prostatekd evaluate / Segmenter). GFLOPs: one forward pass on a 320x320x24 tensor "
        "(torch FlopCounterMode, 2 FLOPs per multiply-accumulate). CPU s/vol: median end-to-end "
        f"Segmenter time on one {meta['latency_input']} volume, {meta['threads']} threads, all models "
        "measured side by side in this run. train s: sum of the epoch times (with validation); train s "
        "total adds what the method needs besides the shared teachers (ta_ensemble and curriculum_experts: "
        "the assistants; self_distill: generation 1, the `none` student).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|",
    ]
    for r in table:
        cells = [r["model"], r["role"], r["teachers"] or "-", _cell(r["parameters"]),
                 _cell(r["gflops_320x320x24"], 1), _cell(r["cpu_latency_s"], 2), _cell(r["train_s"], 0),
                 _cell(r["train_total_s"], 0),
                 *[_cell(r[f"dice_{s}"]) for s in sites], _cell(r["dice_mean"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Recipe time: {meta['recipe_seconds']:.0f} s. Settings: `{json.dumps(meta['settings'])}`.", ""]
    return "\n".join(lines)


def plot(out: Path, table: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """``dice_per_method.png`` (per-case Dice box plot) and ``dice_vs_latency.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in table]
    data = [[x["dice"] for x in rows if x["model"] == n and not math.isnan(x["dice"])] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4.5))
    ax.boxplot(data, showmeans=True)
    for i, values in enumerate(data, start=1):
        ax.scatter([i + 0.08 * ((j % 5) - 2) for j in range(len(values))], values, s=10, alpha=0.6)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=35, ha="right")
    ax.set_ylabel("Dice (test cases)")
    ax.set_title("Dice per model - synthetic phantoms, not MRI")
    fig.tight_layout()
    fig.savefig(out / "dice_per_method.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 5))
    colours = plt.get_cmap("tab20")
    for i, r in enumerate(table):  # a legend, not text labels: same-size students sit on top of each other
        marker = {"teacher": "s", "assistant": "^"}.get(r["role"], "o")
        ax.scatter(r["cpu_latency_s"], r["dice_mean"], marker=marker, s=55, color=colours(i % 20),
                   edgecolors="black", linewidths=0.4, label=r["model"])
    ax.set_xlabel("CPU seconds per volume (Segmenter, 2 threads)")
    ax.set_ylabel("mean Dice (test cases)")
    ax.set_title("Dice vs latency (squares: teachers, triangles: assistants) - phantoms")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out / "dice_vs_latency.png", dpi=120)
    plt.close(fig)


def write_report(out: Path, models: dict[str, Any], rows: list[dict[str, Any]], sites: Sequence[str],
                 meta: dict[str, Any]) -> str:
    """Write ``results.md``/``.csv``/``.json`` and the plots; returns the Markdown."""
    table = summarize(models, rows, sites)
    text = markdown(table, sites, meta)
    (out / "results.md").write_text(text, encoding="utf-8")
    fields = [*COLUMNS, *[f"dice_{s}" for s in sites], "dice_mean"]
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    safe = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    (out / "results.json").write_text(json.dumps({
        "meta": meta,
        "models": [{k: safe(v) for k, v in r.items()} for r in table],
        "bundles": {k: m["bundle"] for k, m in models.items()},
        "per_case": [{k: safe(v) for k, v in r.items()} for r in rows],
    }, indent=1) + "\n", encoding="utf-8")
    plot(out, table, rows)
    return text
