"""Few labels, many images: semi-supervised co-teaching measured on one phantom multi-site split.

    python training/recipes/compare_semi.py --out runs/semi_small --labelled-per-site 2   # about 6 min, 2 cores
    python training/recipes/compare_semi.py --out /tmp/semi --scale tiny                   # under a minute

The phantoms and held-out test cases of ``compare_kd.py`` (same scale and seed). Of each
site's training pool, ``--labelled-per-site`` cases keep their labels; the others are
given as images only (their label files are never read). Students of the same
architecture and epoch budget:

1. ``labelled_only``: ``none`` (Dice + CE) on the labelled cases;
2. ``coteach``: the small network of ``prostatekd coteach`` (co-taught with a teacher-sized
   network on labelled + unlabelled cases); ``coteach_large`` is that large network;
3. ``all_labels``: ``none`` with every label of the pool (what the missing labels would buy).

``results.md``/``.json`` give Dice per site; ``dice_per_site.png`` plots it. All numbers
come from synthetic phantoms.
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

ROWS = ("labelled_only", "coteach", "coteach_large", "all_labels")
PATCHES_PER_VOLUME = {"tiny": 1, "small": 4}  # fewer labelled cases: more patches each (same for every row)


def split_pool(pool: Path, labelled_per_site: int, out: Path) -> tuple[Path, Path, int, int]:
    """``labelled.csv`` (the first cases of each site) and ``unlabelled.csv`` (images only).

    Raises:
        DataError: a site has no unlabelled case left.
    """
    from ProstateKDLib.errors import DataError

    with open(pool, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labelled, unlabelled = [], []
    for site in sorted({r["site"] for r in rows}):
        mine = [r for r in rows if r["site"] == site]
        if len(mine) <= labelled_per_site:
            raise DataError(f"site {site} has {len(mine)} training cases: none left unlabelled with "
                            f"--labelled-per-site {labelled_per_site}")
        labelled += mine[:labelled_per_site]
        unlabelled += mine[labelled_per_site:]
    paths = out / "data" / "labelled.csv", out / "data" / "unlabelled.csv"
    for path, items, fields in ((paths[0], labelled, ["image", "label", "site"]), (paths[1], unlabelled, ["image", "site"])):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(items)
    return paths[0], paths[1], len(labelled), len(unlabelled)


def student_config(pool: Path, scale: dict[str, Any], threads: int, key: str, patches: int) -> Any:
    """The recipe's student config (``none``) on ``pool`` with ``patches`` patches per volume."""
    from training.config import config_from_dict
    from training.recipes.compare_kd import base_config

    data = base_config(pool, scale, "student", threads)
    data["train"]["patches_per_volume"] = patches
    data["export"].update(name=f"semi-recipe-{key.replace('_', '-')}", version="0.0.1")
    return config_from_dict(data, f"{key}.yaml")


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created; --resume to continue one)")
    parser.add_argument("--scale", choices=["tiny", "small"], default="small")
    parser.add_argument("--labelled-per-site", type=int, default=2, help="training cases per site that keep labels")
    parser.add_argument("--seed", type=int, default=0, help="phantom and split seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="keep finished stages of --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.labelled_per_site < 1:
        parser.error(f"--labelled-per-site must be at least 1, got {args.labelled_per_site}")

    import copy

    import torch

    from ProstateKDLib.errors import OutputError
    from training.coteach import coteach
    from training.export import export_run
    from training.recipes.compare_adapt import plot, site_table
    from training.recipes.compare_kd import PHANTOM_NOTE, SCALES, evaluate_all, make_data
    from training.train import train

    scale = copy.deepcopy(SCALES[args.scale])
    torch.set_num_threads(args.threads)
    out = Path(args.out).expanduser().absolute()
    if out.is_dir() and any(out.iterdir()) and not args.resume:
        raise OutputError(f"{out} is not empty; use --resume to continue it, or choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pool, test = make_data(out, scale, args.seed)
    labelled, unlabelled, n_labelled, n_unlabelled = split_pool(pool, args.labelled_per_site, out)
    patches = PATCHES_PER_VOLUME[args.scale]
    progress = not args.quiet
    bundles: dict[str, Path] = {}
    for key, data in (("labelled_only", labelled), ("all_labels", pool)):
        run = out / "students" / key
        if not (run / "bundle" / "model.json").is_file():
            print(f"== student: {key}", flush=True)
            train(student_config(data, scale, args.threads, key, patches), run,
                  resume=(run / "checkpoint_last.pt").is_file(), progress=progress)
            export_run(run, run / "bundle", overwrite=True)
        bundles[key] = run / "bundle"
    folder = out / "coteach"
    if not (folder / "bundle" / "model.json").is_file():
        print(f"== coteach: {n_labelled} labelled + {n_unlabelled} unlabelled cases", flush=True)
        large = {"channels": scale["teacher"], "strides": scale["strides"], "num_res_units": scale["teacher_res"],
                 "norm": "instance"}
        coteach(student_config(labelled, scale, args.threads, "coteach", patches), unlabelled, folder,
                resume=folder.exists(), progress=progress, large_kwargs=large, device="cpu",
                num_threads=args.threads)
    bundles["coteach"], bundles["coteach_large"] = folder / "bundle", folder / "large_bundle"
    print("== evaluation on the held-out test cases", flush=True)
    rows = evaluate_all(out, {k: {"bundle": str(bundles[k])} for k in ROWS}, test, args.threads)
    sites = list(scale["sites"])
    described = {"labelled_only": f"{n_labelled} labelled cases",
                 "coteach": f"{n_labelled} labelled + {n_unlabelled} unlabelled (small network)",
                 "coteach_large": f"{n_labelled} labelled + {n_unlabelled} unlabelled (large network)",
                 "all_labels": f"{n_labelled + n_unlabelled} labelled cases"}
    table, text = site_table(rows, {k: described[k] for k in ROWS}, sites, test,
                             f"# Semi-supervised co-teaching ({args.scale} scale) - {PHANTOM_NOTE}")
    (out / "results.md").write_text(text, encoding="utf-8")
    (out / "results.json").write_text(json.dumps({
        "meta": {"scale": args.scale, "labelled_per_site": args.labelled_per_site, "seed": args.seed,
                 "note": f"All numbers {PHANTOM_NOTE}.", "recipe_seconds": time.perf_counter() - started},
        "models": table, "per_case": rows}, indent=1) + "\n", encoding="utf-8")
    plot(out, table, sites, target="", title="Semi-supervised co-teaching - synthetic phantoms")
    print(text)
    print(f"results: {out}/results.md (also .json, dice_per_site.png)")
    return 0


if __name__ == "__main__":
    from training.recipes.recipe_entry import run_recipe

    run_recipe(main, "compare_semi")
