"""The paper's two procedures on real multi-site data: teachers, students over seeds, LOCO, one report.

    .venv/bin/python training/recipes/compare_real.py --out runs/compare_real \
        --methods none,logit_kd,seed_kd,multi_teacher_mean,multi_teacher_adaptive,taps_kd --seeds 3 --loco
        # the full comparison: many CPU hours (use a GPU: --device cuda); every stage resumes (--resume)
    .venv/bin/python training/recipes/compare_real.py --out runs/cr --methods none,taps_kd --seeds 1 --epochs 2
        # a quick look

Stages (each a folder under ``--out``; ``--resume`` keeps finished ones):

1. ``teacher_strong/``: one strong teacher on the index fold's training cases
   (``--teacher-config``, ``train-teacher --subsets all``; or ``--strong-teacher BUNDLE``, one an
   earlier run exported, e.g. the bundled ``prostatekd-teacher``); ``teachers_site/``: limit-trained
   teachers, one per (inferred) centre, each on that centre's training cases (``--site-config``).
   Only the teachers a chosen method needs are trained.
2. ``students/<method>@seed<k>/``: the same student (``--student-config``) and epoch budget for
   every method: ``none``; ``logit_kd`` and ``seed_kd`` (procedure 1) from the strong teacher;
   ``multi_teacher_mean`` and ``multi_teacher_adaptive`` (procedure 2) from the per-centre
   teachers; ``taps_kd`` (``logit_kd`` from the cached TAPS maps, ``--taps``, with the unlabelled
   images of ``--unlabelled``). Best epoch on the fold's validation cases, never the test split.
3. ``loco/<centre>/<method>@seed<k>/`` (``--loco``): leave one centre out for ``none`` and the
   multi-teacher students: trained on the other centres' training cases with the teachers of
   those centres only (validation: those centres' validation cases), exported at the *last*
   epoch (nothing is selected on the left-out centre), evaluated on every case of the left-out
   centre (development and test).
4. ``eval/``, ``report.md``/``report.json``, ``dice_per_centre.png``, ``dice_vs_latency.png``:
   every model and TAPS (from its cache) on the index's test split through ``prostatekd
   evaluate``: Dice per centre, HD95/ASD/volume error (estimated spacing: a caveat), parameters,
   CPU seconds per volume (in-process, this run); students as mean ± SD over seeds with the paired
   per-case difference to ``none`` and its bootstrap interval (``seed_statistics``); the LOCO table.
   ``timings.json``: each training's logged epoch seconds (training + validation, summed over
   resumed sessions).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
#: method -> (distiller, teachers: "strong" | "site" | "taps" | None, extra distiller settings)
METHODS: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "none": ("none", None, {"weights": {"dice": 1.0, "ce": 1.0}}),
    "logit_kd": ("logit_kd", "strong", {"weights": {"dice": 1.0, "ce": 1.0, "kl": 1.0}}),
    "seed_kd": ("seed_kd", "strong", {"weights": {"dice": 1.0, "lovasz": 1.0, "kl": 1.0, "feature": 1.0}}),
    "multi_teacher_mean": ("multi_teacher_mean", "site", {"weights": {"dice": 1.0, "lovasz": 1.0, "kl": 1.0, "feature": 1.0}}),
    "multi_teacher_adaptive": ("multi_teacher_adaptive", "site",
                               {"weights": {"dice": 1.0, "lovasz": 1.0, "kl": 1.0, "feature": 1.0},
                                "reliability": "held_out"}),
    "taps_kd": ("logit_kd", "taps", {"weights": {"dice": 1.0, "ce": 1.0, "kl": 1.0}}),
}
LOCO_METHODS = ("none", "multi_teacher_mean", "multi_teacher_adaptive")
CONFIGS = ROOT / "training" / "configs"


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def method_config(base: dict[str, Any], method: str, teachers: list[str], seed: int, overrides: dict[str, Any],
                  unlabelled: str | None) -> dict[str, Any]:
    """The student config of ``method`` with training seed ``seed``."""
    distiller, source, extra = METHODS[method]
    data = copy.deepcopy(base)
    data["distiller"] = {"name": distiller, **copy.deepcopy(extra)}
    data["train"]["seed"] = seed
    data["train"].update(overrides.get("train", {}))
    data["data"].update(overrides.get("data", {}))
    if source == "taps" and unlabelled:
        data["data"]["unlabelled"] = unlabelled
    else:
        data["data"].pop("unlabelled", None)
    if teachers:
        data["teachers"] = list(teachers)
    else:
        data.pop("teachers", None)
    data["export"] = {**data.get("export", {}), "name": f"real-{method.replace('_', '-')}", "version": f"0.0.{seed}",
                      "description": f"compare_real student: {method}, seed {seed}"}
    return data


def logged_seconds(folder: Path, fallback: float) -> float:
    """Seconds of every epoch logged in the ``log.csv`` files under ``folder`` (training plus validation,
    summed over resumed sessions); ``fallback`` when nothing is logged."""
    total = 0.0
    for log in folder.rglob("log.csv"):
        with log.open(newline="", encoding="utf-8") as handle:
            total += sum(float(row["seconds"]) for row in csv.DictReader(handle) if row.get("seconds"))
    return total or fallback


def train_and_export(folder: Path, config: dict[str, Any], checkpoint: str, timings: dict[str, float],
                     key: str, progress: bool) -> Path:
    """Train ``config`` into ``folder`` (resuming a stopped run), export ``folder/bundle``; the bundle path."""
    from training.config import config_from_dict
    from training.export import export_run
    from training.train import train

    bundle = folder / "bundle"
    if (bundle / "model.json").is_file():
        return bundle
    print(f"== {key}", flush=True)
    start = time.perf_counter()
    train(config_from_dict(config, f"{key}.yaml"), folder, resume=(folder / "checkpoint_last.pt").is_file(),
          progress=progress)
    export_run(folder, bundle, checkpoint=checkpoint, overwrite=True)
    timings[key] = logged_seconds(folder, time.perf_counter() - start)
    return bundle


def teachers_of(out: Path, kind: str, config: dict[str, Any], subsets: str, timings: dict[str, float],
                progress: bool) -> Path:
    """Train (or keep) a ``train-teacher`` folder; returns it."""
    from training.config import config_from_dict
    from training.train_teacher import train_teachers

    folder = out / kind
    if not (folder / "teachers.json").is_file():
        print(f"== {kind} ({subsets})", flush=True)
        start = time.perf_counter()
        train_teachers(config_from_dict(config, f"{kind}.yaml"), folder, subsets=subsets,
                       resume=folder.exists(), progress=progress)
        timings[kind] = logged_seconds(folder, time.perf_counter() - start)
    return folder


def site_bundles(folder: Path, keep: list[str] | None = None) -> list[str]:
    """Bundles of a per-site ``train-teacher`` folder (only the sites in ``keep``)."""
    listing = json.loads((folder / "teachers.json").read_text(encoding="utf-8"))
    return [str(folder / t["bundle"]) for t in listing["teachers"] if keep is None or t["name"] in keep]


def validation_markdown(models: dict[str, dict[str, Any]]) -> str:
    """Per method: validation Dice (best epoch) mean ± SD over seeds, and the pick: the best seed of the best method."""
    import numpy as np

    per: dict[str, list[tuple[float, str]]] = {}
    for key, model in models.items():
        if model.get("validation_dice") is not None:
            per.setdefault(model["method"], []).append((float(model["validation_dice"]), key))
    if not per:
        return "(no validation Dice recorded)\n"
    lines = ["| method | seeds | validation Dice ± SD over seeds | best seed |", "|---|---|---|---|"]
    for method, values in per.items():
        scores = [v for v, _ in values]
        sd = f" ± {np.std(scores, ddof=1):.3f}" if len(scores) > 1 else ""
        best = max(values)
        lines.append(f"| {method} | {len(scores)} | {np.mean(scores):.3f}{sd} | {best[1]} ({best[0]:.3f}) |")
    method = max(per, key=lambda m: float(np.mean([v for v, _ in per[m]])))
    pick = max(per[method])
    return "\n".join(lines) + (f"\n\nValidation pick: **{pick[1]}** (method with the highest mean validation Dice, "
                                f"then its best seed; validation Dice {pick[0]:.3f}).\n")


def procedure_pairs(methods: list[str]) -> list[tuple[str, str]]:
    """The comparisons the paper's claim is about, among ``methods``: adaptive vs none, vs mean; mean vs none."""
    wanted = [("multi_teacher_adaptive", "none"), ("multi_teacher_adaptive", "multi_teacher_mean"),
              ("multi_teacher_mean", "none")]
    return [(a, b) for a, b in wanted if a in methods and b in methods]


def number(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``-`` where a statistic is undefined (too few cases, empty masks)."""
    return "-" if value is None else format(value, spec)


def read_rows(eval_dir: Path) -> list[dict[str, Any]]:
    with open(eval_dir / "per_case.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def spread(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample SD (0 for one value) of the defined ``values``; ``(nan, 0)`` when there is none."""
    import numpy as np

    finite = [v for v in values if v is not None]
    if not finite:
        return float("nan"), 0.0
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def plot_groups(summary: dict[str, Any], models: dict[str, dict[str, Any]], display: dict[str, str],
                sites: list[str], latency: dict[str, float]) -> list[dict[str, Any]]:
    """One entry per student method (mean and SD over its seeds) and per other model (teachers, TAPS).

    Each: ``label``, ``dice`` (site -> (mean, sd)), ``all`` (mean, sd) and ``seconds`` (None for cached).
    """
    import numpy as np

    members: dict[str, list[str]] = {}
    for key, model in models.items():
        label = model["method"] if "seed" in model else key.replace("teacher_site_", "teacher ").replace(
            "teacher_strong_", "strong teacher ")
        members.setdefault(label, []).append(display[key])
    members.update({name: [name] for name in summary["models"] if name not in display.values()})
    groups = []
    for label, names in members.items():
        entries = [summary["models"][n] for n in names]
        groups.append({
            "label": label + (f" ({len(names)} seeds)" if len(names) > 1 else ""),
            "dice": {s: spread([e["sites"].get(s, {}).get("dice", {}).get("mean") for e in entries]) for s in sites},
            "all": spread([e["overall"]["dice"]["mean"] for e in entries]),
            "seconds": float(np.mean([latency[n] for n in names])) if all(n in latency for n in names) else None,
        })
    return groups


def plot(out: Path, groups: list[dict[str, Any]], sites: list[str]) -> None:
    """``dice_per_centre.png`` (bars: methods over seeds with SD, teachers, TAPS) and ``dice_vs_latency.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [*sites, "all"]
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(groups), 2)))
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.84 / max(1, len(groups))
    for i, group in enumerate(groups):
        values = [group["dice"][s] for s in sites] + [group["all"]]
        ax.bar(np.arange(len(columns)) + i * width, [v[0] for v in values], width, yerr=[v[1] for v in values],
               capsize=1.5, label=group["label"], color=colours[i])
    ax.set_xticks(np.arange(len(columns)) + width * (len(groups) - 1) / 2, columns)
    ax.set_ylabel("mean Dice (test split)")
    ax.set_ylim(0, 1)
    ax.set_title("Dice per inferred centre, PROMISE12 test split (error bars: SD over seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "dice_per_centre.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, group in enumerate(groups):
        if group["seconds"] is None:  # cached (TAPS): its Dice as a line, it has no time here
            ax.axhline(group["all"][0], color=colours[i], linestyle="--", label=f"{group['label']} (cached: no time)")
        else:
            ax.errorbar(group["seconds"], group["all"][0], yerr=group["all"][1], fmt="o", capsize=2,
                        color=colours[i], label=group["label"])
    means = [g["all"][0] for g in groups if np.isfinite(g["all"][0])]
    if means:  # at least 0.1 Dice tall: a few thousandths must not look like a gap
        middle, half = (max(means) + min(means)) / 2, max(0.05, (max(means) - min(means)) / 2 + 0.02)
        ax.set_ylim(max(0.0, middle - half), min(1.0, middle + half))
    ax.set_xlim(left=0)
    ax.set_xlabel("CPU seconds per volume (in-process, this run)")
    ax.set_ylabel("mean Dice (test split)")
    ax.set_title("Dice vs CPU latency, PROMISE12 test split (error bars: SD over seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "dice_vs_latency.png", dpi=120)
    plt.close(fig)


def run_latency(summary: dict[str, Any], display: dict[str, str]) -> dict[str, float]:
    """Mean in-process seconds per volume of the models this run segmented (not the cached TAPS maps)."""
    run_here = set(display.values())
    return {name: entry["mean_seconds"] for name, entry in summary["models"].items() if name in run_here}


def replot(out: Path) -> None:
    """Redraw the plots of a finished ``out`` folder from its ``report.json`` and ``eval/summary.json``."""
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    summary = json.loads((out / "eval" / "summary.json").read_text(encoding="utf-8"))
    latency = run_latency(summary, report["display"])
    plot(out, plot_groups(summary, report["models"], report["display"], summary["sites"], latency), summary["sites"])


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; prints the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created; --resume to continue one)")
    parser.add_argument("--index", default=str(ROOT / "training/indexes/promise12.json"))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--methods", default="none,taps_kd", help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per student method (default 3)")
    parser.add_argument("--method-seeds", default="", metavar="METHOD=N,...",
                        help="fewer (or more) seeds for some methods, e.g. seed_kd=1,taps_kd=1 (default: --seeds)")
    parser.add_argument("--loco", action="store_true", help="also leave one centre out (none + multi-teacher)")
    parser.add_argument("--loco-centres", default="", metavar="A,B",
                        help="leave out only these centres (default: every centre of the index)")
    parser.add_argument("--loco-seeds", type=int, default=None, help="seeds of the LOCO students (default: --seeds)")
    parser.add_argument("--student-config", default=str(CONFIGS / "student_real.yaml"))
    parser.add_argument("--teacher-config", default=str(CONFIGS / "teacher_strong_real.yaml"),
                        help="the strong teacher's config (trained on every training case)")
    parser.add_argument("--strong-teacher", default=None, metavar="BUNDLE",
                        help="use this strong-teacher bundle (e.g. one an earlier run exported) instead of "
                             "training teacher_strong/; it must have been trained on the fold's training cases")
    parser.add_argument("--site-config", default=str(CONFIGS / "teacher_site_real.yaml"))
    parser.add_argument("--taps", default=str(ROOT / "training/teacher_caches/taps_promise12"))
    parser.add_argument("--unlabelled", default=str(ROOT.parent / "shared/data/promise12_unlabelled"))
    parser.add_argument("--epochs", type=int, default=None, help="override every student's train.epochs")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="override every teacher's train.epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--replot", action="store_true", help="only redraw the plots of a finished --out folder")
    args = parser.parse_args(argv)
    if args.replot:
        if not (Path(args.out) / "report.json").is_file():
            parser.error(f"--replot: {args.out} has no report.json (not a finished compare_real folder)")
        replot(Path(args.out))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    if args.seeds < 1:
        parser.error(f"--seeds: must be at least 1, got {args.seeds}")
    seeds_of = {m: args.seeds for m in methods}
    for item in filter(None, (x.strip() for x in args.method_seeds.split(","))):
        name, _, count = item.partition("=")
        if name not in seeds_of or not count.isdigit() or int(count) < 1:
            parser.error(f"--method-seeds: {item!r} must be METHOD=N with METHOD one of --methods and N >= 1")
        seeds_of[name] = int(count)

    import numpy as np

    from ProstateKDLib.errors import ConfigError, OutputError
    from training.evaluate import evaluate, select_cases
    from training.recipes.seed_statistics import (pairwise_markdown, per_site_markdown, seed_table_markdown,
                                                  summarise_seeds)

    chosen: list[str] = []
    everything = select_cases(index=args.index, split="all") if args.loco else []
    if args.loco:
        centres = sorted({c.site for c in everything})
        chosen = [c.strip() for c in args.loco_centres.split(",") if c.strip()] or centres
        if set(chosen) - set(centres):
            raise ConfigError(f"--loco-centres: {', '.join(sorted(set(chosen) - set(centres)))} not among the "
                              f"index's centres ({', '.join(centres)})")
    strong_bundle = None
    if args.strong_teacher:
        from ProstateKDLib.bundle import resolve_model

        strong_bundle = resolve_model(args.strong_teacher)  # a BundleError here: before anything is written
    out = Path(args.out).expanduser().absolute()
    if out.is_dir() and any(out.iterdir()) and not args.resume:
        raise OutputError(f"{out} is not empty; use --resume to continue it, or choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings_path = out / "timings.json"
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    progress = not args.quiet
    common = {"data": {"index": str(Path(args.index).absolute()), "fold": args.fold},
              "train": {"num_threads": args.threads, "device": args.device}}
    student = load_yaml(Path(args.student_config))
    student["data"] = {**{k: v for k, v in student["data"].items() if k not in ("root",)}, **common["data"]}
    student["train"].update(common["train"], **({"epochs": args.epochs} if args.epochs else {}))

    def teacher_base(path: str) -> dict[str, Any]:
        data = load_yaml(Path(path))
        data["data"] = {**{k: v for k, v in data["data"].items() if k != "root"}, **common["data"]}
        data["train"].update(common["train"], **({"epochs": args.teacher_epochs} if args.teacher_epochs else {}))
        return data

    sources = {METHODS[m][1] for m in methods} | ({"site"} if args.loco else set())
    teacher_dirs: dict[str, list[str]] = {}
    if "strong" in sources and strong_bundle is not None:
        teacher_dirs["strong"] = [str(strong_bundle.path.absolute())]
    elif "strong" in sources:
        folder = teachers_of(out, "teacher_strong", teacher_base(args.teacher_config), "all", timings, progress)
        teacher_dirs["strong"] = site_bundles(folder)
    if "site" in sources:
        site_folder = teachers_of(out, "teachers_site", teacher_base(args.site_config), "per-site", timings, progress)
        teacher_dirs["site"] = site_bundles(site_folder)
    if "taps" in sources:
        teacher_dirs["taps"] = [args.taps]
    timings_path.write_text(json.dumps(timings, indent=1))

    models: dict[str, dict[str, Any]] = {}
    for method in methods:
        for seed in range(seeds_of[method]):
            key = f"{method}@seed{seed}"
            config = method_config(student, method, teacher_dirs.get(METHODS[method][1] or "", []), seed, {},
                                   args.unlabelled)
            bundle = train_and_export(out / "students" / key, config, "best", timings, key, progress)
            validation = json.loads((bundle / "model.json").read_text(encoding="utf-8"))["provenance"]["validation_dice"]
            models[key] = {"bundle": str(bundle), "method": method, "seed": seed, "validation_dice": validation}
            timings_path.write_text(json.dumps(timings, indent=1))
    for kind in ("strong", "site"):
        for path in teacher_dirs.get(kind, []):
            # a reused strong teacher is named by its bundle (name-version: a train-teacher export sits in 'bundle/')
            name = (f"{strong_bundle.meta.name}-{strong_bundle.meta.version}"
                    if (kind == "strong" and strong_bundle is not None) else Path(path).parent.name)
            models[f"teacher_{kind}_{name}"] = {"bundle": path, "method": f"teacher ({kind})"}

    print("== evaluation on the test split", flush=True)
    cases = select_cases(index=args.index, split="test")
    entries = [m["bundle"] for m in models.values()] + ([args.taps] if Path(args.taps, "teacher.json").is_file() else [])
    summary = evaluate(entries, cases, out / "eval", device="cpu", progress=False, overwrite=True,
                       num_threads=args.threads, source={"recipe": "compare_real", "index": args.index, "split": "test"})
    by_bundle = {str(Path(v["bundle"]).resolve()): name for name, v in summary["models"].items()}
    display = {key: by_bundle[str(Path(m["bundle"]).resolve())] for key, m in models.items()}
    rows = read_rows(out / "eval")
    back = {v: k for k, v in display.items()}
    seed_rows = [{"method": models[back[r["model"]]]["method"], "seed": models[back[r["model"]]]["seed"],
                  "case": r["case"], "site": r["site"], "dice": float(r["dice"])} for r in rows
                 if r["model"] in back and "seed" in models[back[r["model"]]]]
    baseline = "none" if "none" in methods else methods[0]
    seeds = summarise_seeds(seed_rows, baseline)
    sites = summary["sites"]
    latency = run_latency(summary, display)
    from ProstateKDLib.bundle import resolve_model
    from ProstateKDLib.networks import count_parameters

    params = {name: count_parameters(resolve_model(entry["bundle"]).build_network())
              for name, entry in summary["models"].items() if name in latency}
    lines = ["| model | params | " + " | ".join(sites) + " | all | HD95 mm* | ASD mm* | vol. err. %* | CPU s/vol |",
             "|---|---:|" + "---:|" * (len(sites) + 5)]
    for name, entry in summary["models"].items():
        cells = [number(entry['sites'].get(s, {}).get('dice', {}).get('mean'), '.3f') for s in sites]
        overall = entry["overall"]
        lines.append(f"| {name} | " + (f"{params[name]:,}" if name in params else "external") + " | "
                     + " | ".join(cells) + f" | {number(overall['dice']['mean'], '.3f')} ± "
                     f"{number(overall['dice']['std'], '.3f')} | {number(overall['hd95_mm']['mean'], '.1f')} | "
                     f"{number(overall['asd_mm']['mean'], '.2f')} | {number(overall['volume_error_pct']['mean'], '.1f')} | "
                     + (f"{latency[name]:.2f}" if name in latency else "cached") + " |")
    text = (f"# compare_real: PROMISE12 test split ({len(cases)} cases, {len(sites)} inferred centres), "
            f"fold {args.fold} of {Path(args.index).name}\n\n" + "\n".join(lines) + "\n\n## Students over seeds\n\n"
            + seed_table_markdown(seeds, baseline)
            + "\n\\* mm and ml use the estimated PROMISE12 spacing; Dice does not. A method is called better only "
              "when its interval excludes 0.\n\n### Per centre (mean Dice ± SD over seeds)\n\n"
            + per_site_markdown(seed_rows, sites)
            + (f"\n### Procedure 2 head to head (test split, per-case Dice averaged over seeds)\n\n"
               + pairwise_markdown(seed_rows, pairs) if (pairs := procedure_pairs(methods)) else "")
            + "\n## Validation (the fold's validation cases: where a default is chosen, never on the test split)\n\n"
            + validation_markdown(models))

    loco: dict[str, Any] = {}
    loco_rows: list[dict[str, Any]] = []

    def write_report() -> None:
        plot(out, plot_groups(summary, models, display, sites, latency), sites)
        (out / "report.md").write_text(text, encoding="utf-8")
        (out / "report.json").write_text(json.dumps({"models": models, "display": display, "seeds": seeds, "loco": loco, "loco_cases": loco_rows,
                                                     "timings_s": timings, "recipe_s": time.perf_counter() - started,
                                                     "summary": "eval/summary.json"}, indent=1, default=str) + "\n")

    write_report()  # the main comparison is on disk before the (long) LOCO stage starts
    if args.loco:
        for centre in chosen:
            others = sorted({c.site for c in everything} - {centre})
            held = [c for c in everything if c.site == centre]
            loco[centre] = {}
            for method in LOCO_METHODS:
                teachers = site_bundles(out / "teachers_site", others) if METHODS[method][1] == "site" else []
                for seed in range(args.loco_seeds or args.seeds):
                    key = f"loco_{centre}_{method}@seed{seed}"
                    config = method_config(student, method, teachers, seed, {"data": {"sites": others}}, None)
                    bundle = train_and_export(out / "loco" / centre / f"{method}@seed{seed}", config, "last",
                                              timings, key, progress)
                    result = evaluate([str(bundle)], held, out / "loco" / centre / f"eval_{method}@seed{seed}",
                                      device="cpu", progress=False, overwrite=True, num_threads=args.threads)
                    loco[centre].setdefault(method, []).append(next(iter(result["models"].values()))["overall"]["dice"]["mean"])
                    loco_rows.extend({"method": method, "seed": seed, "case": r["case"], "site": r["site"],
                                      "dice": float(r["dice"])}
                                     for r in read_rows(out / "loco" / centre / f"eval_{method}@seed{seed}"))
                    timings_path.write_text(json.dumps(timings, indent=1))
        head = "| left-out centre (cases) | " + " | ".join(LOCO_METHODS) + " |"
        rows_l = [head, "|---|" + "---|" * len(LOCO_METHODS)]
        for centre, per in loco.items():
            n = sum(c.site == centre for c in everything)
            cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}" for v in per.values()]
            rows_l.append(f"| {centre} ({n}) | " + " | ".join(cells) + " |")
        text += ("\n## Leave one centre out (students trained on the other centres, last epoch, evaluated on every "
                 "case of the left-out centre; mean over seeds)\n\n" + "\n".join(rows_l) + "\n"
                 f"\nPaired over every case, each scored by the students that never saw its centre "
                 f"({len({r['case'] for r in loco_rows})} cases):\n\n"
                 + pairwise_markdown(loco_rows, procedure_pairs(list(LOCO_METHODS))))
    write_report()
    print(text)
    return 0


if __name__ == "__main__":
    from training.recipes.recipe_entry import run_recipe

    run_recipe(main, "compare_real")
