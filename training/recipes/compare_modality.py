"""A T2+ADC teacher for a T2-only student, measured on two-channel phantoms.

    python training/recipes/compare_modality.py --out runs/modality_small   # about 6 min, 2 CPU cores
    python training/recipes/compare_modality.py --out /tmp/mod --scale tiny  # under a minute

Two-channel (T2, ADC) phantoms in the Decathlon layout (``ProstateKDLib.phantom_adc``):
a training folder and a held-out test folder (other seeds). Models, same epochs:

1. ``teacher_t2adc``: teacher-sized network on T2 + ADC (``data.channels: [0, 1]``);
2. ``teacher_t2``: the same network on T2 only (what the extra sequence is worth);
3. ``student_t2``: the student on T2 alone (``none``);
4. ``logit_kd_t2``: the student distilled from ``teacher_t2`` (same-modality KD);
5. ``cross_modality``: the student (T2 only) distilled from ``teacher_t2adc``.

Every model is scored on the held-out volumes on the model grid (the training loop's
sliding-window validation; the inference path does not take two-channel bundles yet),
each given the channels it was trained on. ``results.md``/``.json`` and
``dice_per_model.png``. All numbers come from synthetic phantoms.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SETTINGS = {
    "tiny": {"train_cases": 6, "test_cases": 2, "size": [48, 48, 12], "scale": "tiny"},
    "small": {"train_cases": 16, "test_cases": 6, "size": [128, 128, 24], "scale": "small"},
}
ROWS = ("teacher_t2adc", "teacher_t2", "student_t2", "logit_kd_t2", "cross_modality")


def config_for(key: str, data: Path, scale: dict[str, Any], threads: int) -> dict[str, Any]:
    """The recipe's config dict of model ``key`` (see the module docstring)."""
    from training.recipes.compare_kd import WEIGHTS, base_config

    role = "teacher" if key.startswith("teacher") else "student"
    config = base_config(data, scale, role, threads)
    config["export"].update(name=f"modality-recipe-{key.replace('_', '-')}", version="0.0.1")
    if key in ("teacher_t2adc", "cross_modality"):
        config["data"]["channels"] = [0, 1]
    if key == "teacher_t2adc":
        config["model"]["in_channels"] = 2
    if key == "logit_kd_t2":
        config["distiller"] = {"name": "logit_kd", "weights": dict(WEIGHTS["logit_kd"])}
    if key == "cross_modality":
        config["distiller"] = {"name": "cross_modality", "weights": {"dice": 1.0, "ce": 1.0, "kl": 1.0},
                               "student_channels": [0]}
    return config


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created; --resume to continue one)")
    parser.add_argument("--scale", choices=sorted(SETTINGS), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="keep finished stages of --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    import torch

    from ProstateKDLib.bundle import load_bundle
    from ProstateKDLib.datasets import index_cases, load_case
    from ProstateKDLib.errors import OutputError
    from ProstateKDLib.phantom_adc import write_two_channel_dataset
    from training.config import config_from_dict
    from training.export import export_run
    from training.recipes.compare_kd import PHANTOM_NOTE, SCALES
    from training.train import train, validate

    settings = SETTINGS[args.scale]
    scale = copy.deepcopy(SCALES[settings["scale"]])
    torch.set_num_threads(args.threads)
    out = Path(args.out).expanduser().absolute()
    if out.is_dir() and any(out.iterdir()) and not args.resume:
        raise OutputError(f"{out} is not empty; use --resume to continue it, or choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    for folder, cases, seed in ((train_dir, settings["train_cases"], args.seed),
                                (test_dir, settings["test_cases"], args.seed + 1000)):
        if not (folder / "dataset.json").is_file():
            write_two_channel_dataset(folder, cases=cases, seed=seed, size=settings["size"], overwrite=True)
    bundles: dict[str, Path] = {}
    for key in ROWS:
        run = out / "models" / key
        if not (run / "bundle" / "model.json").is_file():
            print(f"== {key}", flush=True)
            data = config_for(key, train_dir, scale, args.threads)
            if key == "logit_kd_t2":
                data["teachers"] = [str(bundles["teacher_t2"])]
            if key == "cross_modality":
                data["teachers"] = [str(bundles["teacher_t2adc"])]
            train(config_from_dict(data, f"{key}.yaml"), run, resume=(run / "checkpoint_last.pt").is_file(),
                  progress=not args.quiet)
            export_run(run, run / "bundle", overwrite=True)
        bundles[key] = run / "bundle"
    print("== evaluation on the held-out volumes (model grid)", flush=True)
    pre = load_bundle(bundles["teacher_t2adc"]).meta
    test = [replace(r, channels=(0, 1)) for r in index_cases(test_dir)]  # both channels; models pick theirs
    volumes = [load_case(r, pre.orientation, pre.spacing, pre.normalization) for r in test]
    table = []
    for key in ROWS:
        bundle = load_bundle(bundles[key])
        channels = len(bundle.meta.channels)
        scores = validate(bundle.build_network(), volumes, bundle.meta.patch_size, torch.device("cpu"),
                          input_fn=lambda x, n=channels: x[:, :n])
        finite = [s for s in scores if s == s]
        table.append({"model": key, "inputs": "+".join(bundle.meta.channels),
                      "parameters": sum(p.numel() for p in bundle.build_network().parameters()),
                      "dice_mean": sum(finite) / len(finite), "dice_per_case": scores})
    lines = [f"# T2+ADC teacher, T2 student ({args.scale} scale) - {PHANTOM_NOTE}", "",
             f"{len(test)} held-out two-channel phantoms; Dice of the gland on the model grid (sliding window, "
             "gaussian), each model given the channels it was trained on.", "",
             "| model | inputs | params | Dice mean |", "|---|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['inputs']} | {r['parameters']:,} | {r['dice_mean']:.3f} |" for r in table]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text, encoding="utf-8")
    (out / "results.json").write_text(json.dumps({
        "meta": {"scale": args.scale, "seed": args.seed, "test_cases": [r.case_id for r in test],
                 "note": f"All numbers {PHANTOM_NOTE}.", "recipe_seconds": time.perf_counter() - started},
        "models": table}, indent=1) + "\n", encoding="utf-8")
    _plot(out, table)
    print(text)
    print(f"results: {out}/results.md (also .json, dice_per_model.png)")
    return 0


def _plot(out: Path, table: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["model"] for r in table]
    ax.boxplot([[s for s in r["dice_per_case"] if s == s] for r in table], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\n({r['inputs']})" for n, r in zip(names, table)], fontsize=8)
    ax.set_ylabel("Dice (held-out volumes, model grid)")
    ax.set_title("T2+ADC teacher, T2 student - synthetic phantoms")
    fig.tight_layout()
    fig.savefig(out / "dice_per_model.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from training.recipes.recipe_entry import run_recipe

    run_recipe(main, "compare_modality")
