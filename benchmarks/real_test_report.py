"""Models and the cached peer on the real test split of an index: per-centre table, plots, overlays.

    .venv/bin/python benchmarks/real_test_report.py --model runs/student_taps/bundle --model prostatekd-student \
        --peer training/teacher_caches/taps_promise12 --default prostatekd-student \
        --out benchmarks/reports/2026-12-02/real_taps_student

Every model segments the index's test cases through ``prostatekd evaluate`` (the inference
path; masks saved); the peer is scored from its cached probability maps (thresholded, without
its own post-processing). Writes ``report.md`` / ``report.json`` (per-centre mean Dice, HD95,
ASD, volume error; parameters; in-process CPU seconds per volume), the evaluation's box plots,
and overlays of the best, median and worst test case of ``--default`` against the expert mask
(with the peer's contour). Dice is spacing-independent; mm and ml figures depend on the
estimated PROMISE12 spacing (see ../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRIC_COLUMNS = (("dice", "Dice", 3), ("hd95_mm", "HD95 mm*", 1), ("asd_mm", "ASD mm*", 2),
                  ("volume_error_pct", "vol. err. %*", 1))


def mask_folder(out: Path, name: str) -> Path:
    """Where ``prostatekd evaluate --save-masks`` put a model's masks (its display name made safe)."""
    return out / "eval" / "masks" / (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model")


def cell(stats: dict[str, Any] | None, digits: int) -> str:
    if not stats or stats.get("mean") is None or (isinstance(stats["mean"], float) and math.isnan(stats["mean"])):
        return "n/a"
    sd = stats.get("std")
    return f"{stats['mean']:.{digits}f}" + ("" if sd is None or math.isnan(sd) else f" ± {sd:.{digits}f}")


def table(summary: dict[str, Any], params: dict[str, int | None], sites: list[str]) -> str:
    """Markdown: a row per model, Dice per centre, then overall metrics, parameters and seconds."""
    head = ["model", *[f"Dice {s}" for s in sites], *[c[1] for c in METRIC_COLUMNS], "parameters", "CPU s/vol"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in summary["models"].items():
        per_site = [cell(entry["sites"].get(s, {}).get("dice"), 3) for s in sites]
        overall = [cell(entry["overall"].get(k), d) for k, _, d in METRIC_COLUMNS]
        p = params.get(name)
        seconds = "cached" if p is None else f"{entry['mean_seconds']:.2f}"
        lines.append("| " + " | ".join([name, *per_site, *overall, "n/a" if p is None else f"{p:,}", seconds]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="bundle name or path (repeat)")
    parser.add_argument("--peer", default=None, help="external-teacher folder of the peer's cached maps")
    parser.add_argument("--index", default=str(ROOT / "training/indexes/promise12.json"))
    parser.add_argument("--default", default=None, help="display name of the model to draw overlays for")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import SimpleITK as sitk

    from ProstateKDLib.bundle import resolve_model
    from ProstateKDLib.datasets import read_case
    from ProstateKDLib.networks import count_parameters
    from training.evaluate import evaluate, select_cases
    from benchmarks.real.overlay import overlay_png

    out = Path(args.out)
    cases = select_cases(index=args.index, split="test")
    models = [*args.model, *([args.peer] if args.peer else [])]
    summary = evaluate(models, cases, out / "eval", device="cpu", save_masks=True, overwrite=True, progress=False,
                       num_threads=args.threads, source={"index": args.index, "split": "test"})
    params: dict[str, int | None] = {}
    for name, entry in summary["models"].items():
        bundle_path = Path(entry["bundle"])
        params[name] = None if (bundle_path / "teacher.json").is_file() else count_parameters(
            resolve_model(str(bundle_path)).build_network())
    sites = summary["sites"]
    text = (f"# Real test split: {len(cases)} PROMISE12 cases, {len(sites)} inferred centres "
            f"({', '.join(c.case_id for c in cases)})\n\n" + table(summary, params, sites)
            + "\n\\* mm and ml figures use the estimated PROMISE12 voxel spacing (see ../shared/data/README.md); "
              "Dice does not depend on it. CPU s/vol: in-process Segmenter time, "
              f"{args.threads} thread{'s' if args.threads != 1 else ''}, this run. "
              "The peer is scored from its cached probabilities (threshold from its teacher.json), without its own "
              "post-processing.\n")
    default = args.default or next(iter(summary["models"]))
    with open(out / "eval" / "per_case.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    mine = sorted((r for r in rows if r["model"] == default), key=lambda r: float(r["dice"]))
    picks = {"worst": mine[0], "median": mine[len(mine) // 2], "best": mine[-1]}
    by_id = {c.case_id: c for c in cases}
    peer_name = next((n for n, p in params.items() if p is None), None)
    overlays = {}
    for rank, row in picks.items():
        case = by_id[row["case"]]
        image, label = read_case(case)
        masks = {"expert": label > 0,
                 f"{default} (Dice {float(row['dice']):.3f})": sitk.ReadImage(str(mask_folder(out, default) / f"{case.case_id}.nii.gz"))}
        if peer_name:
            peer_row = next(r for r in rows if r["model"] == peer_name and r["case"] == case.case_id)
            masks[f"{peer_name} (Dice {float(peer_row['dice']):.3f})"] = sitk.ReadImage(
                str(mask_folder(out, peer_name) / f"{case.case_id}.nii.gz"))
        path = overlay_png(image, masks, out / f"overlay_{rank}_{case.case_id.replace('/', '_')}.png",
                           f"{rank} test case of {default}: {case.case_id} (PROMISE12, centre inferred)",
                           reference="expert")
        overlays[rank] = {"case": case.case_id, "dice": float(row["dice"]), "png": path.name}
    text += "\nOverlays (expert mask yellow): " + ", ".join(f"{k} {v['case']} ({v['dice']:.3f}): {v['png']}"
                                                          for k, v in overlays.items()) + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    (out / "report.json").write_text(json.dumps({"index": args.index, "cases": [c.case_id for c in cases],
                                                 "parameters": params, "overlays": overlays,
                                                 "summary": "eval/summary.json"}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
