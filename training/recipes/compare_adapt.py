"""Adapting to a new site without its labels, measured on one phantom multi-site split.

    python training/recipes/compare_adapt.py --out runs/adapt_small --target-site UCL   # about 5 min, 2 CPU cores
    python training/recipes/compare_adapt.py --out /tmp/adapt --scale tiny                # under a minute

The same phantoms and held-out test cases as ``compare_kd.py`` (same scale and seed).
Students of the same architecture and epoch budget (``none``: Dice + CE):

1. ``source_only``: trained on the labelled training cases of every site except the target;
2. ``source_continued``: the control: ``source_only`` through the same adaptation schedule
   with the consistency weight 0, i.e. more source epochs and the EMA, no target signal;
3. ``adapted``: ``source_only`` adapted by ``prostatekd adapt`` (mean teacher) with the
   target site's training images, whose labels are never read;
4. ``oracle``: trained with the target site's labels too (what labels would buy).

What the unlabelled target images bring is ``adapted`` minus ``source_continued``.

Every model then segments the held-out test cases of every site through the inference path;
``results.md``/``.json`` give Dice per site (the target site before and after) and
``dice_per_site.png`` plots it. All numbers come from synthetic phantoms.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ADAPT_EPOCHS = {"tiny": 2, "small": 15, "default": 15}
ROWS = ("source_only", "source_continued", "adapted", "oracle")


def write_source_csv(pool: Path, target_site: str, out: Path) -> Path:
    """The training pool without the target site's cases (``source.csv``)."""
    with open(pool, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle)]
    sites = sorted({r["site"] for r in rows})
    if target_site not in sites:
        from ProstateKDLib.errors import DataError

        raise DataError(f"no cases of site {target_site!r} in {pool} (sites: {', '.join(sites)})")
    source = out / "data" / "source.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "site"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("image", "label", "site")} for r in rows if r["site"] != target_site)
    return source


def train_student(out: Path, key: str, pool: Path, scale: dict[str, Any], threads: int, progress: bool) -> Path:
    """Train (or keep) ``students/<key>`` with ``none`` on ``pool``; returns its bundle."""
    from training.config import config_from_dict
    from training.export import export_run
    from training.recipes.compare_kd import base_config
    from training.train import train

    run, bundle = out / "students" / key, out / "students" / key / "bundle"
    if not (bundle / "model.json").is_file():
        print(f"== student: {key}", flush=True)
        data = base_config(pool, scale, "student", threads)
        data["export"].update(name=f"adapt-recipe-{key.replace('_', '-')}", version="0.0.1")
        train(config_from_dict(data, f"{key}.yaml"), run, resume=(run / "checkpoint_last.pt").is_file(),
              progress=progress)
        export_run(run, bundle, overwrite=True)
    return bundle


def site_table(rows: list[dict[str, Any]], described: dict[str, str], sites: list[str], test: list[Any],
               title: str, target: str = "") -> tuple[list[dict[str, Any]], str]:
    """Per-model Dice per site and mean (records) and the Markdown results page of these recipes.

    Args:
        rows: per-case ``{"model", "site", "dice"}`` rows (``evaluate_all``).
        described: model key -> what it was trained on, in table order.
        target: a site to mark ``(target)`` in the header (none when empty).
    """
    from training.recipes.compare_report import nan_mean

    table = []
    for key, training_data in described.items():
        mine = [r for r in rows if r["model"] == key]
        record: dict[str, Any] = {"model": key, "training data": training_data}
        for site in sites:
            record[f"dice_{site}"] = nan_mean([r["dice"] for r in mine if r["site"] == site])
        record["dice_mean"] = nan_mean([r["dice"] for r in mine])
        table.append(record)
    header = ["model", "training data", *[f"Dice {s}{' (target)' if s == target else ''}" for s in sites], "Dice mean"]
    lines = [title, "",
             f"Held-out test cases: {', '.join(c.case_id for c in test)}. Dice on the input grid, through the "
             "inference path (prostatekd evaluate).", "",
             "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for r in table:
        lines.append("| " + " | ".join([r["model"], r["training data"], *[f"{r[f'dice_{s}']:.3f}" for s in sites],
                                        f"{r['dice_mean']:.3f}"]) + " |")
    return table, "\n".join(lines) + "\n"


def plot(out: Path, table: list[dict[str, Any]], sites: list[str], target: str, title: str | None = None) -> Path:
    """Grouped bars ``dice_per_site.png``: Dice per site for each model; the target site (if any) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(table)
    for i, row in enumerate(table):
        xs = [j + (i - (len(table) - 1) / 2) * width for j in range(len(sites))]
        ax.bar(xs, [row[f"dice_{s}"] for s in sites], width, label=row["model"])
    ax.set_xticks(range(len(sites)), [f"{s}\n(target)" if s == target else s for s in sites])
    low = min(row[f"dice_{s}"] for row in table for s in sites)
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("Dice (held-out test cases)")
    ax.set_title(title or f"Adapting to {target} without its labels - synthetic phantoms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "dice_per_site.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created; --resume to continue one)")
    parser.add_argument("--scale", choices=["tiny", "small"], default="small")
    parser.add_argument("--target-site", default=None, help="site to adapt to (default: the last site of the scale)")
    parser.add_argument("--seed", type=int, default=0, help="phantom and split seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--adapt-epochs", type=int, default=None, help="mean-teacher epochs (default by scale)")
    parser.add_argument("--resume", action="store_true", help="keep finished stages of --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    import copy

    import torch

    from ProstateKDLib.errors import OutputError
    from training.adapt import adapt
    from training.recipes.compare_kd import PHANTOM_NOTE, SCALES, evaluate_all, make_data
    scale = copy.deepcopy(SCALES[args.scale])
    target = args.target_site or scale["sites"][-1]
    if target not in scale["sites"]:
        parser.error(f"--target-site: {target!r} is not a site of scale {args.scale} ({', '.join(scale['sites'])})")
    torch.set_num_threads(args.threads)
    out = Path(args.out).expanduser().absolute()
    if out.is_dir() and any(out.iterdir()) and not args.resume:
        raise OutputError(f"{out} is not empty; use --resume to continue it, or choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pool, test = make_data(out, scale, args.seed)
    source = write_source_csv(pool, target, out)
    progress = not args.quiet
    bundles = {"source_only": train_student(out, "source_only", source, scale, args.threads, progress)}
    epochs = args.adapt_epochs or ADAPT_EPOCHS[args.scale]
    for key, weight in (("source_continued", 0.0), ("adapted", 1.0)):
        folder = out / key
        if not (folder / "bundle" / "model.json").is_file():
            print(f"== {key}: adapt to {target} (mean teacher, consistency weight {weight:g}, target labels "
                  "unused)", flush=True)
            adapt(bundles["source_only"], pool, target, folder, resume=folder.exists(), progress=progress,
                  epochs=epochs, seed=args.seed, device="cpu", num_threads=args.threads, consistency_weight=weight,
                  patches_per_volume=scale["patches_per_volume"], rampup_epochs=max(1, epochs // 3))
        bundles[key] = folder / "bundle"
    bundles["oracle"] = train_student(out, "oracle", pool, scale, args.threads, progress)
    print("== evaluation on the held-out test cases", flush=True)
    models = {k: {"bundle": str(v)} for k, v in bundles.items()}
    rows = evaluate_all(out, models, test, args.threads)
    sites = list(scale["sites"])
    labels = {"source_only": f"sites except {target}, labelled",
              "source_continued": f"source_only + {epochs} epochs, consistency weight 0 (control)",
              "adapted": f"source_only + {epochs} epochs with {target} images (no labels)",
              "oracle": f"all sites incl. {target}, labelled"}
    table, text = site_table(rows, {k: labels[k] for k in ROWS}, sites, test,
                             f"# Site adaptation to {target} ({args.scale} scale) - {PHANTOM_NOTE}", target)
    (out / "results.md").write_text(text, encoding="utf-8")
    (out / "results.json").write_text(json.dumps({
        "meta": {"scale": args.scale, "target_site": target, "seed": args.seed, "note": f"All numbers {PHANTOM_NOTE}.",
                 "recipe_seconds": time.perf_counter() - started},
        "models": table, "per_case": rows}, indent=1) + "\n", encoding="utf-8")
    plot(out, table, sites, target)
    print(text)
    print(f"results: {out}/results.md (also .json, dice_per_site.png)")
    return 0


if __name__ == "__main__":
    from training.recipes.recipe_entry import run_recipe

    run_recipe(main, "compare_adapt")
