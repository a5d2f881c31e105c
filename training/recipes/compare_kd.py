"""Compare distillation methods on one phantom multi-site split, in one command.

    python training/recipes/compare_kd.py --out runs/compare --scale small   # about 20-25 min, 2 CPU cores
    python training/recipes/compare_kd.py --out /tmp/cmp --scale tiny        # under 2 min (a smoke test)
    python training/recipes/compare_kd.py --out runs/default --scale default --methods none,seed_kd
        # full-size phantoms on the bundled student's grid (a pipeline check, phantom names); about 45 min

Steps (each a folder under ``--out``; ``--resume`` keeps finished ones):

1. ``data/``: synthetic phantoms of several sites; per site, ``test_per_site``
   cases are held out (``test.csv``), the rest form the training pool (``train.csv``).
2. ``teachers_site/``: limit-trained teachers, one per site (``train-teacher --subsets per-site``);
   ``teacher_full/``: one teacher on the whole pool (``--subsets all``).
3. ``students/assistant_<i>/``: teaching assistants sized between teacher and student,
   distilled (``logit_kd``) from the full teacher; only when ``ta_ensemble`` or
   ``curriculum_experts`` is among the methods.
4. ``students/<method>/``: the same student architecture and epoch budget with
   ``none``; ``logit_kd``, ``seed_kd``, ``ctkd`` and ``amal`` (from the full teacher);
   ``multi_teacher_mean`` and ``multi_teacher_adaptive`` (from the per-site teachers);
   ``ta_ensemble`` (from the assistants); ``curriculum_experts`` (the ladder: assistants
   and the full teacher); ``self_distill`` (generation 2, from the ``none`` student),
   each exported to ``students/<method>/bundle``.
5. ``eval/``: every teacher, assistant and student segments the same held-out test cases
   through the inference path (``training.evaluate``: ``prostatekd evaluate``'s
   code, i.e. :class:`~ProstateKDLib.inference.Segmenter`), Dice on the input grid.
6. ``results.md``, ``results.csv``, ``results.json``, ``dice_per_method.png``,
   ``dice_vs_latency.png``: Dice per site and mean, parameters, GFLOPs of one
   forward pass on a 320x320x24 volume, CPU latency per 320x320x24 volume
   (2 threads, all models measured side by side in this run; ``tiny``: a
   96x96x12 volume), training time (own, and with the assistants / generation 1 it needs).

All numbers come from synthetic phantoms: they check the pipeline and compare
methods under identical conditions; they say nothing about accuracy on MRI.
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

SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "sites": ["BMC", "RUNMC"], "cases_per_site": 3, "test_per_site": 1, "size": [48, 48, 12],
        "spacing": [4.0, 4.0, 6.0], "patch": [32, 32, 16], "strides": [2, 2],
        "teacher": [8, 16, 32], "teacher_res": 0, "student": [4, 8, 16], "student_res": 0,
        "assistants": [[5, 10, 20], [6, 12, 24]], "assistant_res": 0,
        "epochs": 2, "teacher_epochs": 2, "patches_per_volume": 1, "val_fraction": 0.34, "latency_rounds": 1,
        "latency_volume": [96, 96, 12],  # a smoke test: the standard 320x320x24 volume only at other scales
    },
    "small": {
        "sites": ["BMC", "HK", "RUNMC", "UCL"], "cases_per_site": 8, "test_per_site": 2, "size": [128, 128, 24],
        "spacing": [2.0, 2.0, 4.0], "patch": [64, 64, 16], "strides": [[2, 2, 1], 2, 2],
        "teacher": [16, 32, 64, 128], "teacher_res": 2, "student": [8, 16, 32, 64], "student_res": 1,
        "assistants": [[12, 24, 48, 96], [16, 32, 64, 128]], "assistant_res": 1,
        "epochs": 30, "teacher_epochs": 30, "patches_per_volume": 2, "val_fraction": 0.17, "latency_rounds": 3,
        "latency_volume": [320, 320, 24],
    },
    # Full-size phantoms (each site's own matrix and spacing) on the bundled student's grid and
    # patch; exported under phantom names (the bundled models come from real data).
    "default": {
        "sites": ["BMC", "HK", "RUNMC", "UCL"], "cases_per_site": 8, "test_per_site": 2, "size": None,
        "spacing": [0.8, 0.8, 3.0], "patch": [128, 128, 32], "strides": [[2, 2, 1], 2, 2],
        "teacher": [16, 32, 64, 128], "teacher_res": 2, "student": [8, 16, 32, 64], "student_res": 1,
        "assistants": [[12, 24, 48, 96], [16, 32, 64, 128]], "assistant_res": 1,
        "epochs": 40, "teacher_epochs": 25, "patches_per_volume": 2, "val_fraction": 0.17, "latency_rounds": 3,
        "latency_volume": [320, 320, 24],
        "export": {
            "student": {
                "name": "prostatekd-phantom-student", "version": "0.2.0", "license": "Apache-2.0",
                "description": "Small residual 3D UNet (150k parameters), distilled (seed_kd: Dice + Lovasz + KL + "
                "feature) from prostatekd-phantom-teacher on synthetic phantoms: a pipeline check of the "
                "procedure, not a model for real MRI (the bundled models are trained on real PROMISE12 cases).",
                "training_data": "Synthetic T2-like phantoms from ProstateKDLib.phantom (4 simulated sites, "
                "6 training cases each, recipe compare_kd --scale default); no real patient data. "
                "Not validated on real MRI.",
            },
            "teacher": {
                "name": "prostatekd-phantom-teacher", "version": "0.2.0", "license": "Apache-2.0",
                "description": "Residual 3D UNet teacher (1.19M parameters) on synthetic phantoms: the full-data "
                "teacher of the phantom pipeline check; not validated on real MRI.",
                "training_data": "Synthetic T2-like phantoms from ProstateKDLib.phantom (4 simulated sites, "
                "6 training cases each, recipe compare_kd --scale default); no real patient data.",
            },
        },
    },
}
METHODS = {  # student method -> its teachers
    "none": None,
    "logit_kd": "full",
    "seed_kd": "full",
    "multi_teacher_mean": "site",
    "multi_teacher_adaptive": "site",
    "ctkd": "full",
    "ta_ensemble": "assistants",
    "curriculum_experts": "ladder",
    "amal": "full",
    "self_distill": "generation1",
}
TEACHER_TEXT = {"full": "full-data teacher", "site": "per-site teachers", "assistants": "2 assistants",
                "ladder": "2 assistants + full teacher", "generation1": "none (generation 1)"}
WEIGHTS = {  # loss weights per method (methods not listed: the distiller's defaults)
    "none": {"dice": 1.0, "ce": 1.0},
    "logit_kd": {"dice": 1.0, "ce": 1.0, "kl": 1.0},
    "seed_kd": {"dice": 1.0, "lovasz": 1.0, "kl": 1.0, "feature": 1.0},
    "multi_teacher_mean": {"dice": 1.0, "lovasz": 1.0, "kl": 1.0, "feature": 1.0},
    "multi_teacher_adaptive": {"dice": 1.0, "lovasz": 1.0, "kl": 1.0, "feature": 1.0},
}
ASSISTANT_METHOD = "logit_kd"  # how the teaching assistants are distilled from the full-data teacher
PHANTOM_NOTE = "measured on synthetic phantoms (ProstateKDLib.phantom), not MRI"


# ------------------------------------------------------------------ data and configs
def make_data(out: Path, scale: dict[str, Any], seed: int) -> tuple[Path, list[Any]]:
    """Phantoms plus ``train.csv`` (pool) and ``test.csv`` (held out); returns (pool csv, test cases)."""
    import zlib

    import numpy as np

    from ProstateKDLib.datasets import index_cases, read_case_csv
    from ProstateKDLib.phantom import write_phantom_dataset

    data = out / "data"
    pool_csv, test_csv = data / "train.csv", data / "test.csv"
    if not test_csv.is_file():
        size = tuple(scale["size"]) if scale["size"] else None  # None: each site's own matrix
        write_phantom_dataset(data / "cases", scale["cases_per_site"], seed=seed, sites=scale["sites"],
                              size=size, overwrite=True)
        cases = index_cases(data / "cases")
        test = []
        for site in scale["sites"]:
            mine = [c for c in cases if c.site == site]
            order = np.random.default_rng([seed, zlib.crc32(site.encode())]).permutation(len(mine))
            test += [mine[i] for i in order[: scale["test_per_site"]]]
        for path, items in ((pool_csv, [c for c in cases if c not in test]), (test_csv, test)):
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["image", "label", "site"])
                writer.writerows([[str(c.image), str(c.label), c.site] for c in items])
    return pool_csv, read_case_csv(test_csv)


def base_config(pool: Path, scale: dict[str, Any], role: str, threads: int) -> dict[str, Any]:
    """Config dict of a teacher (``role="teacher"``) or a student, on the shared grid."""
    teacher = role == "teacher"
    named = scale.get("export", {}).get(role)
    export = dict(named) if named else {
        "name": f"compare-{role}", "version": "0.0.1", "description": f"{role} of the KD comparison recipe ({PHANTOM_NOTE})",
        "training_data": f"synthetic phantoms, {len(scale['sites'])} sites; {PHANTOM_NOTE}"}
    return {
        "data": {"root": str(pool), "val_fraction": scale["val_fraction"], "seed": 0},
        "model": {"network": "unet", "kwargs": {
            "channels": scale["teacher" if teacher else "student"], "strides": scale["strides"],
            "num_res_units": scale["teacher_res" if teacher else "student_res"], "norm": "instance"}},
        "preprocessing": {"orientation": "RAS", "spacing": scale["spacing"], "patch_size": scale["patch"],
                          "normalization": {"name": "zscore", "clip_percentiles": [0.5, 99.5]}},
        "train": {"epochs": scale["teacher_epochs" if teacher else "epochs"], "batch_size": 2,
                  "learning_rate": 0.002, "weight_decay": 1e-5, "patches_per_volume": scale["patches_per_volume"],
                  "seed": 0, "device": "cpu", "num_threads": threads, "amp": False},
        "distiller": {"name": "none", "weights": dict(WEIGHTS["none"])},
        "export": export,
    }


# ------------------------------------------------------------------ the stages
def _timed(record: dict[str, float], key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    record[key] = record.get(key, 0.0) + time.perf_counter() - start
    return out


def train_all(out: Path, pool: Path, scale: dict[str, Any], threads: int, jobs: int, resume: bool,
              progress: bool, methods: list[str] | None = None, seeds: int = 1) -> dict[str, Any]:
    """Teachers, assistants, then students (each student method with training seeds ``0 .. seeds-1``;
    seed 0 is ``students/<method>``, seed k ``students/<method>@seed<k>``).

    Returns:
        ``{model key: {"bundle", "role", "method", "teachers", "train_s", "prereq_s"}}``; ``prereq_s``
        is the training time of what the method needs besides the shared teachers (its assistants,
        or generation 1 of ``self_distill``).
    """
    from ProstateKDLib.bundle import load_bundle
    from ProstateKDLib.networks import count_parameters
    from training.config import config_from_dict
    from training.export import export_run
    from training.train import train
    from training.train_teacher import train_teachers

    timings_path = out / "timings.json"
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    teacher_cfg = config_from_dict(base_config(pool, scale, "teacher", threads), "teacher.yaml")
    models: dict[str, Any] = {}
    methods = list(METHODS) if methods is None else methods
    needed = {METHODS[m] for m in methods} | {"full"}  # the full-data teacher is always a row
    for kind, subsets in (("site", "per-site"), ("full", "all")):
        if kind not in needed:
            continue
        folder = out / f"teachers_{kind}" if kind == "site" else out / "teacher_full"
        if not (folder / "teachers.json").is_file():
            print(f"== teachers ({subsets})", flush=True)
            _timed(timings, f"teachers_{kind}", train_teachers, teacher_cfg, folder, subsets=subsets,
                   jobs=jobs, resume=resume or folder.exists(), progress=progress)
            timings_path.write_text(json.dumps(timings, indent=1))
        listing = json.loads((folder / "teachers.json").read_text())
        for record in listing["teachers"]:
            key = "teacher_full" if kind == "full" else f"teacher_{record['name']}"
            run = folder / record["run_dir"]
            models[key] = {"bundle": str(folder / record["bundle"]), "role": "teacher",
                           "method": "none (teacher)", "teachers": "",
                           "subset": record["training_subset"], "train_s": _run_seconds(run), "prereq_s": 0.0}
    def student(key: str, method: str, teachers: list[str], *, channels: Any = None, res: int | None = None,
                export: dict[str, Any] | None = None, seed: int = 0) -> Path:
        """Train (or keep) ``students/<key>`` with ``method`` (training seed ``seed``) and export its bundle."""
        run, bundle = out / "students" / key, out / "students" / key / "bundle"
        if not (bundle / "model.json").is_file():
            print(f"== student: {key}", flush=True)
            data = base_config(pool, scale, "student", threads)
            if seed:
                data["train"]["seed"] = seed
            data["distiller"] = {"name": method, **({"weights": dict(WEIGHTS[method])} if method in WEIGHTS else {})}
            if channels is not None:
                data["model"]["kwargs"].update(channels=list(channels), num_res_units=res)
            if export is not None:
                data["export"].update(export)
            elif "student" not in scale.get("export", {}):
                data["export"]["name"] = f"compare-student-{key.replace('_', '-')}"
            if teachers:
                data["teachers"] = teachers
            config = config_from_dict(data, f"{key}.yaml")
            again = (run / "checkpoint_last.pt").is_file()
            _timed(timings, key, train, config, run, resume=again, progress=progress)
            export_run(run, bundle, overwrite=True)
            timings_path.write_text(json.dumps(timings, indent=1))
        return run

    full = [str(out / "teacher_full")]
    sources = {METHODS[m] for m in methods}
    assistants: list[str] = []
    assistant_s = 0.0
    if sources & {"assistants", "ladder"}:
        for i, channels in enumerate(scale["assistants"], start=1):
            key = f"assistant_{i}"
            run = student(key, ASSISTANT_METHOD, full, channels=channels, res=scale["assistant_res"],
                          export={"name": f"compare-assistant-{i}", "version": "0.0.1",
                                  "description": f"teaching assistant {i} of the KD comparison recipe, "
                                  f"distilled ({ASSISTANT_METHOD}) from the full-data teacher ({PHANTOM_NOTE})",
                                  "training_data": f"synthetic phantoms; {PHANTOM_NOTE}"})
            assistants.append(str(run / "bundle"))
            models[key] = {"bundle": str(run / "bundle"), "role": "assistant", "method": ASSISTANT_METHOD,
                           "teachers": TEACHER_TEXT["full"], "subset": "all training cases",
                           "train_s": _run_seconds(run), "prereq_s": 0.0}
            assistant_s += models[key]["train_s"]
    ordered = (["none"] if "self_distill" in methods and "none" not in methods else []) + list(methods)
    if "self_distill" in ordered and "none" in ordered:  # generation 1 first
        ordered.remove("none")
        ordered.insert(0, "none")
    teacher_dirs = {"full": full, "site": [str(out / "teachers_site")], "assistants": assistants,
                    "ladder": assistants + full, "generation1": [str(out / "students" / "none" / "bundle")]}
    for method in ordered:
        source = METHODS[method]
        for seed in range(seeds if method in methods else 1):
            key = method if seed == 0 else f"{method}@seed{seed}"
            run = student(key, method, teacher_dirs[source] if source else [], seed=seed)
            prereq = {"assistants": assistant_s, "ladder": assistant_s}.get(source or "", 0.0)
            if source == "generation1":
                prereq = _run_seconds(out / "students" / "none")
            models[key] = {"bundle": str(run / "bundle"), "role": "student", "method": method, "seed": seed,
                           "teachers": TEACHER_TEXT.get(source or "", ""), "subset": "all training cases",
                           "train_s": _run_seconds(run), "prereq_s": prereq}
    for value in models.values():
        value["parameters"] = count_parameters(load_bundle(value["bundle"]).build_network())
    return models


def _run_seconds(run: Path) -> float:
    """Training time of a run: the sum of its epochs' seconds (log.csv), validation included."""
    with open(run / "log.csv", newline="", encoding="utf-8") as handle:
        return sum(float(row["seconds"]) for row in csv.DictReader(handle))


def evaluate_all(out: Path, models: dict[str, Any], test: list[Any], threads: int) -> list[dict[str, Any]]:
    """Per-case Dice rows ``{"model", "case", "site", "dice"}`` of every model on the test cases."""
    import shutil

    from training.evaluate import evaluate

    folder = out / "eval"
    if folder.exists():
        shutil.rmtree(folder)
    keys = list(models)
    summary = evaluate([models[k]["bundle"] for k in keys], test, folder, device="cpu", progress=False,
                       num_threads=threads, source={"recipe": "compare_kd", "test_csv": str(out / "data" / "test.csv")})
    by_bundle = {str(Path(v["bundle"]).resolve()): name for name, v in summary["models"].items()}
    display_to_key = {by_bundle[str(Path(models[k]["bundle"]).resolve())]: k for k in keys}
    with open(folder / "per_case.csv", newline="", encoding="utf-8") as handle:
        return [{"model": display_to_key[r["model"]], "case": r["case"], "site": r["site"],
                 "dice": float(r["dice"]) if r["dice"] not in ("", "nan") else float("nan")}
                for r in csv.DictReader(handle)]


def write_seed_report(out: Path, models: dict[str, Any], rows: list[dict[str, Any]], baseline: str) -> str:
    """``seeds.md`` / ``seeds.json``: students over seeds, paired to ``baseline``; appended to ``results.md``."""
    from training.recipes.seed_statistics import seed_table_markdown, summarise_seeds

    students = [{"method": models[r["model"]]["method"], "seed": models[r["model"]].get("seed", 0),
                 "case": r["case"], "dice": r["dice"]} for r in rows if models[r["model"]]["role"] == "student"]
    summary = summarise_seeds(students, baseline)
    text = ("\n## Students over seeds\n\n" + seed_table_markdown(summary, baseline)
            + "\nA method is called better only when the interval excludes 0. Phantom numbers: a pipeline check.\n")
    (out / "seeds.md").write_text(text.lstrip(), encoding="utf-8")
    (out / "seeds.json").write_text(json.dumps({"baseline": baseline, "methods": summary}, indent=1) + "\n",
                                    encoding="utf-8")
    with open(out / "results.md", "a", encoding="utf-8") as handle:
        handle.write(text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; prints the results table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created; --resume to continue one)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seed", type=int, default=0, help="phantom and split seed")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for training, inference and latency")
    parser.add_argument("--jobs", type=int, default=1, help="per-site teachers trained in parallel processes")
    parser.add_argument("--resume", action="store_true", help="keep finished stages of --out")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated students to train (default: all of {', '.join(METHODS)})")
    parser.add_argument("--seeds", type=int, default=3,
                        help="training seeds per student method (default 3; mean ± SD and paired intervals)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds: must be at least 1, got {args.seeds}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        parser.error(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")

    import torch

    from ProstateKDLib.bundle import load_bundle
    from ProstateKDLib.errors import OutputError
    from ProstateKDLib.phantom import make_phantom

    from training.complexity import bundle_gflops, measure_latency
    from training.recipes.compare_report import write_report

    torch.set_num_threads(args.threads)
    out = Path(args.out).expanduser().absolute()
    if out.is_dir() and any(out.iterdir()) and not args.resume:
        raise OutputError(f"{out} is not empty; use --resume to continue it, or choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    scale = copy.deepcopy(SCALES[args.scale])
    started = time.perf_counter()
    pool, test = make_data(out, scale, args.seed)
    models = train_all(out, pool, scale, args.threads, args.jobs, args.resume, not args.quiet, methods, args.seeds)
    print("== evaluation on the held-out test cases", flush=True)
    rows = evaluate_all(out, models, test, args.threads)
    print("== complexity and latency", flush=True)
    bundles = [load_bundle(m["bundle"]) for m in models.values()]
    latency_size = tuple(scale["latency_volume"])
    volume, _ = make_phantom(args.seed + 12345, "RUNMC", latency_size)
    latencies = measure_latency(bundles, volume, rounds=scale["latency_rounds"], threads=args.threads)
    for (key, model), bundle, latency in zip(models.items(), bundles, latencies):
        model["gflops"] = bundle_gflops(bundle)
        model["latency_s"] = latency
    meta = {"scale": args.scale, "settings": {k: v for k, v in scale.items() if k != "export"}, "methods": methods, "seed": args.seed, "threads": args.threads,
            "test_cases": [c.case_id for c in test], "note": f"All numbers {PHANTOM_NOTE}.",
            "latency_input": f"{'x'.join(map(str, latency_size))} phantom (RUNMC profile, "
            f"{'x'.join(f'{s:g}' for s in volume.GetSpacing())} mm)",
            "recipe_seconds": time.perf_counter() - started}
    table = write_report(out, models, rows, scale["sites"], meta)
    table += write_seed_report(out, models, rows, "none" if "none" in methods else methods[0])
    if "ctkd" in models:  # the learned temperature over the run
        from training.plot_log import plot_log_columns

        plot_log_columns(out / "students" / "ctkd" / "log.csv", ["temperature", "grl_lambda"],
                         out / "ctkd_temperature.png", title="ctkd: learned temperature T and GRL strength (phantoms)")
    print(table)
    print(f"results: {out}/results.md (also .csv, .json, dice_per_method.png, dice_vs_latency.png, "
          "ctkd_temperature.png); "
          f"{meta['recipe_seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    from training.recipes.recipe_entry import run_recipe

    run_recipe(main, "compare_kd")
