#!/usr/bin/env python
"""How often the output-quality and not-a-T2 checks fire: real cases vs hostile inputs.

Segments, with one model bundle (default: the bundled student):

* ``real``: the real PROMISE12 cases in ``<data>/promise12/<SITE>/CaseNN.nii.gz``
  (all 36; ``--only-test`` keeps the test split). The table adds a
  ``real_test`` row for the cases of the test split of ``--split-index``
  (default: the project's ``training/indexes/promise12.json``, its
  ``splits.test`` list of ``SITE/CaseNN``), the cases no model was tuned on;
* ``tilt15`` / ``tilt30``: each of those cases resampled onto a grid rotated
  15 or 30 degrees about two axes (x and y), LPI, with its origin moved
  ~1.4 m away (the expert mask goes through the same resampling, nearest neighbour);
* ``mask_as_input``: the expert 0/1 mask given as the input image;
* ``noise``: pure gaussian noise on the case's grid.

For every input it records the Dice (where an expert mask exists), the
volume, the quality measures (with the opt-in flip agreement, unless
``--no-flip``) and which checks fired. Prints a table (per
group: how many inputs, how many with a quality-check warning, per check;
for inputs with an expert mask, how many are wrong, Dice < 0.5, and how many
of those the checks caught) and
writes the rows as JSON (``--out``). Real data: PROMISE12 (CC BY 4.0; spacing
estimated, see the data README); Dice on each case's own grid.

    .venv/bin/python benchmarks/quality_check_rates.py --threads 2
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
import json
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GROUPS = ("real", "tilt15", "tilt30", "mask_as_input", "noise")
TABLE_GROUPS = ("real", "real_test", "tilt15", "tilt30", "mask_as_input", "noise")
DEFAULT_INDEX = ROOT / "training" / "indexes" / "promise12.json"
FAR_OFFSET_MM = (812.0, -655.0, 940.0)
WRONG_DICE = 0.5  # a "wrong answer" in the table: Dice below this against the expert mask
CHECK = re.compile(r"\[check: ([a-z-]+)")


def default_data() -> Path:
    """``../shared/data`` beside the checkout, else ``/work/shared/data``."""
    beside = ROOT.parent / "shared" / "data"
    return beside if (beside / "promise12").is_dir() else Path("/work/shared/data")


def split_test_cases(split_index: Path | None) -> set[str]:
    """The ``SITE/CaseNN`` names of an index's test split (``splits.test``, or a top-level ``test``)."""
    if split_index is None or not split_index.is_file():
        return set()
    index = json.loads(split_index.read_text())
    return set(index.get("splits", {}).get("test", index.get("test", [])))


def real_cases(data: Path, only: set[str] | None = None) -> list[tuple[str, Path, Path]]:
    """(``SITE/CaseNN``, image, expert mask) of the PROMISE12 cases (those in ``only`` when given)."""
    root = data / "promise12"
    cases = sorted(
        (f"{p.parent.name}/{p.name[:-7]}", p, p.with_name(p.name[:-7] + "_segmentation.nii.gz"))
        for p in root.glob("*/Case??.nii.gz")
    )
    if only is not None:
        cases = [c for c in cases if c[0] in only]
    if not cases:
        raise SystemExit(f"no PROMISE12 cases found in {root}")
    return cases


def tilted(image: Any, mask: Any, degrees: float) -> tuple[Any, Any]:
    """``image`` and ``mask`` resampled onto a grid tilted about x and y, LPI, far origin (same anatomy)."""
    import SimpleITK as sitk
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xy", [degrees, degrees], degrees=True).as_matrix()
    direction = rotation @ np.diag([1.0, 1.0, -1.0])  # LPI (identity is LPS)
    size = np.array(image.GetSize())
    spacing = np.array(image.GetSpacing())
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))
    origin = centre - direction @ (spacing * (size - 1) / 2)
    reference = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    reference.SetSpacing(spacing.tolist())
    reference.SetDirection(direction.ravel().tolist())
    reference.SetOrigin(origin.tolist())
    out_image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out_mask = sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    for result in (out_image, out_mask):  # move the patient far away: same anatomy, far origin
        result.SetOrigin((np.array(result.GetOrigin()) + FAR_OFFSET_MM).tolist())
    return out_image, out_mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary arrays (1.0 when both are empty)."""
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="the shared data folder")
    parser.add_argument("--model", default=None, help="bundle name or path (default: the bundled student)")
    parser.add_argument("--split-index", type=Path, default=DEFAULT_INDEX,
                        help="dataset index with the test split (default: training/indexes/promise12.json)")
    parser.add_argument("--only-test", action="store_true", help="segment only the test split's cases")
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases (a quick look)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-flip", action="store_true",
                        help="skip the flip-agreement measure (it costs a second network pass per input)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="onnx", choices=["auto", "onnx", "torch"],
                        help="network backend (default onnx: what prostatekd segment and Slicer run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default: benchmarks/reports/quality_checks/<model>-<version>.json)")
    args = parser.parse_args(argv)

    import SimpleITK as sitk

    from ProstateKDLib.image_io import read_volume
    from ProstateKDLib.inference import Segmenter
    from ProstateKDLib.quality_checks import flip_agreement, quality_warnings, thresholds_from_model

    segmenter = Segmenter(args.model, device=args.device, num_threads=args.threads, backend=args.backend)
    meta = segmenter.bundle.meta
    thresholds = thresholds_from_model(meta.raw)
    test_cases = split_test_cases(args.split_index)
    if args.only_test and not test_cases:
        raise SystemExit(f"--only-test: no test split in {args.split_index}")
    cases = real_cases(args.data, test_cases if args.only_test else None)[: args.limit]
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for name, image_path, mask_path in cases:
        image = read_volume(image_path)
        expert = sitk.ReadImage(str(mask_path), sitk.sitkUInt8)
        inputs: dict[str, tuple[Any, Any]] = {}
        if "real" in args.groups:
            inputs["real"] = (image, expert)
        for degrees in (15, 30):
            if f"tilt{degrees}" in args.groups:
                inputs[f"tilt{degrees}"] = tilted(image, expert, degrees)
        if "mask_as_input" in args.groups:
            as_input = sitk.Cast(expert, sitk.sitkFloat32)
            inputs["mask_as_input"] = (as_input, None)
        if "noise" in args.groups:
            noise = sitk.GetImageFromArray(rng.normal(300, 100, sitk.GetArrayViewFromImage(image).shape)
                                           .astype(np.float32))
            noise.CopyInformation(image)
            inputs["noise"] = (noise, None)
        for group, (volume, truth) in inputs.items():
            start = time.perf_counter()
            result = segmenter.segment(volume)
            seconds = time.perf_counter() - start
            labels = sitk.GetArrayViewFromImage(result.mask)
            if not args.no_flip:
                quality = {**result.quality,
                           "flip_agreement": flip_agreement(lambda im: segmenter.segment(im).mask, volume, labels)}
                result.quality = quality
                result.warnings += [w for w in quality_warnings(quality, thresholds) if "flip-agreement" in w]
            checks = sorted({m for w in result.warnings for m in CHECK.findall(w)})
            row = {
                "case": name, "group": group, "test_split": name in test_cases,
                "dice": None if truth is None else round(dice(labels, sitk.GetArrayViewFromImage(truth)), 4),
                "volume_ml": round(result.volume_ml, 2), "seconds": round(seconds, 2),
                "quality": {k: (None if v != v else v) for k, v in result.quality.items()},
                "checks_fired": checks, "warnings": result.warnings,
            }
            rows.append(row)
            print(f"{name:<14} {group:<14} dice {row['dice'] if row['dice'] is not None else '-':<7} "
                  f"{row['volume_ml']:>7.1f} ml  {' '.join(f'{k}={v}' for k, v in row['quality'].items())}  "
                  f"fired: {','.join(checks) or '-'}", flush=True)

    table = summarise(rows)
    print()
    print(format_table(table))
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": f"{meta.name} {meta.version}", "model_path": str(segmenter.bundle.path),
        "backend": segmenter.backend, "inference": result.mode,
        "model_training_data": meta.provenance.get("training_data"),
        "data": "PROMISE12 (real; spacing estimated, see shared/data/README.md)",
        "split_index": str(args.split_index) if test_cases else None,
        "test_split_cases": sorted(test_cases),
        "thresholds": asdict(thresholds),
        "command": " ".join(sys.argv),
        "summary": table, "rows": rows,
    }
    out = args.out or ROOT / "benchmarks" / "reports" / "quality_checks" / f"{meta.name}-{meta.version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(
        f"# Quality-check firing rates: {report['model']} ({report['backend']}, {report['inference']})\n\n"
        f"{report['date']}; {report['data']}; test split: {', '.join(report['test_split_cases']) or '-'}.\n"
        f"Command: `{report['command']}`\n\n{format_table(table)}\n")
    print(f"\nwritten: {out} and {out.with_suffix('.md')}")
    return 0


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group: inputs, inputs with any quality warning (rate), per-check counts, mean Dice."""
    table: dict[str, dict[str, Any]] = {}
    for group in TABLE_GROUPS:
        if group == "real_test":
            members = [r for r in rows if r["group"] == "real" and r.get("test_split")]
        else:
            members = [r for r in rows if r["group"] == group]
        if not members:
            continue
        per_check: dict[str, int] = {}
        for r in members:
            for check in r["checks_fired"]:
                per_check[check] = per_check.get(check, 0) + 1
        dices = [r["dice"] for r in members if r["dice"] is not None]
        fired = sum(bool(r["checks_fired"]) for r in members)
        wrong = [r for r in members if r["dice"] is not None and r["dice"] < WRONG_DICE]
        table[group] = {
            "inputs": len(members), "fired": fired, "rate": round(fired / len(members), 3),
            "per_check": dict(sorted(per_check.items())),
            "mean_dice": round(float(np.mean(dices)), 4) if dices else None,
            "any_warning": sum(bool(r["warnings"]) for r in members),
            "wrong": len(wrong) if dices else None,
            "wrong_and_fired": sum(bool(r["checks_fired"]) for r in wrong) if dices else None,
        }
    return table


def format_table(table: dict[str, dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = [f"| inputs | n | quality check fired | rate | any warning | mean Dice | Dice < {WRONG_DICE:g} "
             "(of them fired) | per check |",
             "|---|---|---|---|---|---|---|---|"]
    for group, t in table.items():
        dice_text = "-" if t["mean_dice"] is None else f"{t['mean_dice']:.3f}"
        wrong_text = "-" if t["wrong"] is None else f"{t['wrong']} ({t['wrong_and_fired']})"
        checks = ", ".join(f"{k} {v}" for k, v in t["per_check"].items()) or "-"
        lines.append(f"| {group} | {t['inputs']} | {t['fired']} | {t['rate']:.2f} | {t['any_warning']} | "
                     f"{dice_text} | {wrong_text} | {checks} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
