"""Distillation without the training data, against distillation with it, on a finished comparison run.

    python training/recipes/compare_datafree.py --compare runs/compare_small --out runs/datafree_small
    python training/recipes/compare_datafree.py --compare /tmp/cmp --out /tmp/df --epochs 1 --batches 1   # smoke

Takes the full-data teacher of a ``compare_kd.py`` run (``--compare``), distils a student
of the same architecture from the teacher bundle alone (``prostatekd distill-data-free``:
no image is read), then scores it, the run's ``none`` and ``logit_kd`` students and the
teacher on the run's held-out test cases through the inference path. ``results.md`` and
``results.json``. All numbers come from synthetic phantoms.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", required=True, help="a finished compare_kd.py output folder")
    parser.add_argument("--out", required=True, help="new output folder")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batches", type=int, default=8, help="synthesised batches per epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    from ProstateKDLib.bundle import load_bundle
    from ProstateKDLib.datasets import read_case_csv
    from ProstateKDLib.errors import DataError
    from training.data_free import distil_data_free
    from training.recipes.compare_kd import PHANTOM_NOTE, evaluate_all
    from training.recipes.compare_report import nan_mean

    compare, out = Path(args.compare).expanduser().absolute(), Path(args.out).expanduser().absolute()
    teacher = compare / "teacher_full" / "all" / "bundle"
    others = {k: compare / "students" / k / "bundle" for k in ("none", "logit_kd")}
    test_csv = compare / "data" / "test.csv"
    missing = [str(p) for p in (teacher, test_csv, *others.values()) if not p.exists()]
    if missing:
        raise DataError(f"{compare} is not a finished compare_kd run with none and logit_kd: missing {missing[0]}")
    student_kwargs = dict(load_bundle(others["none"]).meta.network_kwargs)
    distil_data_free(teacher, out / "student", name="compare-student-data-free", epochs=args.epochs,
                     batches_per_epoch=args.batches, student_kwargs=student_kwargs, num_threads=args.threads,
                     progress=not args.quiet)
    models = {"data_free": {"bundle": str(out / "student" / "bundle")},
              **{k: {"bundle": str(v)} for k, v in others.items()}, "teacher_full": {"bundle": str(teacher)}}
    rows = evaluate_all(out, models, read_case_csv(test_csv), args.threads)
    described = {"data_free": "none (teacher bundle only)", "none": "labelled training cases",
                 "logit_kd": "labelled training cases + the teacher", "teacher_full": "labelled training cases"}
    table = [{"model": k, "training data": described[k],
              "dice_mean": nan_mean([r["dice"] for r in rows if r["model"] == k])} for k in models]
    lines = [f"# Data-free distillation - {PHANTOM_NOTE}", "",
             f"Teacher: {teacher}; {args.epochs} epochs x {args.batches} synthesised batches; test cases of "
             f"{test_csv}, Dice through the inference path.", "",
             "| model | training data | Dice mean |", "|---|---|---:|"]
    lines += [f"| {r['model']} | {r['training data']} | {r['dice_mean']:.3f} |" for r in table]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text, encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"meta": {"compare": str(compare), "epochs": args.epochs,
                                                           "batches": args.batches, "note": PHANTOM_NOTE},
                                                  "models": table, "per_case": rows}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    from training.recipes.recipe_entry import run_recipe

    run_recipe(main, "compare_datafree")
