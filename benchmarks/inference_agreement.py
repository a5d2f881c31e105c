#!/usr/bin/env python
"""Mask agreement and accuracy of the inference options on real cases (PROMISE12).

For every case (image + expert mask) it segments with one bundle in these ways:

* ``onnx_whole`` / ``onnx_sliding``: onnxruntime, one whole-volume pass / the sliding
  window at the bundle's overlap; ``onnx_sliding_0.5``: overlap 0.5;
  ``onnx_tta``: flip test-time augmentation (4 passes) in the default (auto) mode;
* ``torch_whole`` / ``torch_sliding``: the same with the torch backend;
* ``monai_reference``: the previous pipeline (MONAI Orientation + Spacing, MONAI
  SlidingWindowInferer, MONAI inverse), to show the numpy pipeline reproduces it.

and reports, per case and summarised: Dice of each against the expert mask, agreement
Dice between pairs (whole vs sliding >= 0.995 and onnx vs torch >= 0.999 are the
targets) and in-process seconds per option (preprocess + network + postprocess).
Masks are compared on the case's own grid; the PROMISE12 spacings are estimated
(see shared/data/README.md), which does not change Dice.

    python benchmarks/inference_agreement.py --data ../shared/data/promise12 --threads 2 \\
        --out benchmarks/reports/<date>/inference_agreement.json
    python benchmarks/inference_agreement.py --index runs/promise12_index.json --split test ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPTIONS = {
    "onnx_whole": {"backend": "onnx", "window": "whole"},
    "onnx_sliding": {"backend": "onnx", "window": "sliding"},
    "onnx_sliding_0.5": {"backend": "onnx", "window": "sliding", "overlap": 0.5},
    "onnx_tta": {"backend": "onnx", "tta": True},
    "onnx_whole_tta": {"backend": "onnx", "window": "whole", "tta": True},
    "torch_whole": {"backend": "torch", "window": "whole"},
    "torch_sliding": {"backend": "torch", "window": "sliding"},
}
PAIRS = (
    ("onnx_whole", "onnx_sliding"),
    ("onnx_whole", "torch_whole"),
    ("onnx_sliding", "torch_sliding"),
    ("torch_sliding", "monai_reference"),
)


#: (option, baseline): Dice gain and time cost of an accuracy option over the setting it would replace.
PRICED = (
    ("onnx_sliding_0.5", "onnx_sliding"),
    ("onnx_tta", "onnx_sliding"),
    ("onnx_whole_tta", "onnx_whole"),
    ("onnx_whole", "onnx_sliding"),
)
#: two-sided 95 % Student t quantiles by degrees of freedom (1-30), for the paired interval.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
       2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
       2.045, 2.042)


def paired_difference(values: list[float]) -> dict[str, Any]:
    """Mean of paired per-case differences with its 95 % t interval; ``beyond_noise``: the interval excludes 0."""
    n = len(values)
    mean = statistics.mean(values)
    if n < 2:
        return {"n": n, "mean": round(mean, 5), "ci95": None, "beyond_noise": False}
    half = T95[min(n - 1, len(T95)) - 1] * statistics.stdev(values) / n ** 0.5
    low, high = mean - half, mean + half
    return {"n": n, "mean": round(mean, 5), "ci95": [round(low, 5), round(high, 5)],
            "beyond_noise": bool(low > 0 or high < 0)}


def price(rows: list[dict[str, Any]], option: str, baseline: str) -> dict[str, Any]:
    """Dice gain of ``option`` over ``baseline`` (paired per case) and its time cost."""
    gains = [r["dice"][option] - r["dice"][baseline] for r in rows]
    ratios = [r["seconds"][option] / max(r["seconds"][baseline], 1e-9) for r in rows]
    extra = [r["seconds"][option] - r["seconds"][baseline] for r in rows]
    return {"option": option, "baseline": baseline, "dice_gain": paired_difference(gains),
            "per_case_gain": [round(g, 4) for g in gains],
            "median_time_ratio": round(statistics.median(ratios), 2),
            "median_extra_seconds": round(statistics.median(extra), 3)}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def monai_reference(bundle: Any, image: Any, network: Any) -> np.ndarray:
    """The mask of the previous (MONAI) pipeline: (z, y, x) uint8, largest component kept."""
    import torch
    from monai.inferers import SlidingWindowInferer

    from ProstateKDLib.postprocessing import keep_largest_component
    from ProstateKDLib.preprocessing import invert_prediction, preprocess_image

    meta = bundle.meta
    tensor, transform = preprocess_image(image, meta.orientation, meta.spacing, meta.normalization)
    inferer = SlidingWindowInferer(roi_size=meta.patch_size, sw_batch_size=meta.sw_batch_size,
                                   overlap=meta.overlap, mode=meta.blend_mode, padding_mode="replicate")
    with torch.inference_mode():
        probabilities = torch.softmax(inferer(tensor.as_tensor()[None], network).float(), dim=1)[0]
    foreground = invert_prediction(probabilities[1:], tensor, transform).as_tensor()[0]
    labels = (foreground > 0.5).numpy().astype(np.uint8).transpose(2, 1, 0)
    return keep_largest_component(labels) if meta.largest_component else labels


def find_cases(args: argparse.Namespace) -> list[tuple[str, str, Path, Path]]:
    """(case, site, image, mask): one split of a ``prostatekd prepare`` index, or each case under ``data/<SITE>/``."""
    names, limit, data = args.cases, args.limit, args.data
    if args.index is not None:
        from training.prepare import index_split

        cases = [(r.case_id, r.site, Path(r.image), Path(r.label)) for r in index_split(args.index, args.split)]
        cases = [c for c in cases if not names or c[0] in names]
        return cases[:limit] if limit else cases
    cases = []
    for mask in sorted(data.glob("*/*_segmentation.nii.gz")):
        case = mask.name[: -len("_segmentation.nii.gz")]
        if names and case not in names:
            continue
        cases.append((case, mask.parent.name, mask.with_name(f"{case}.nii.gz"), mask))
    if not cases:
        raise SystemExit(f"no cases (CaseNN.nii.gz + CaseNN_segmentation.nii.gz) found under {data}")
    return cases[:limit] if limit else cases


def run(args: argparse.Namespace) -> dict[str, Any]:
    import SimpleITK as sitk
    import torch

    from ProstateKDLib.bundle import resolve_model
    from ProstateKDLib.image_io import read_volume
    from ProstateKDLib.inference import Segmenter

    torch.set_num_threads(args.threads)
    bundle = resolve_model(args.model)
    segmenters = {name: Segmenter(bundle, device="cpu", num_threads=args.threads, **kw) for name, kw in OPTIONS.items()}
    reference_network = segmenters["torch_sliding"].network.module
    rows = []
    for case, site, image_path, mask_path in find_cases(args):
        image = read_volume(image_path)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
        masks, seconds, modes = {}, {}, {}
        for name, segmenter in segmenters.items():
            result = segmenter.segment(image)
            masks[name] = sitk.GetArrayFromImage(result.mask) > 0
            seconds[name] = sum(result.timings.values())
            modes[name] = result.mode
        start = time.perf_counter()
        masks["monai_reference"] = monai_reference(bundle, image, reference_network) > 0
        seconds["monai_reference"] = time.perf_counter() - start
        row = {
            "case": case, "site": site, "size": list(image.GetSize()),
            "dice": {name: round(dice(mask, truth), 4) for name, mask in masks.items()},
            "agreement": {f"{a} vs {b}": round(dice(masks[a], masks[b]), 5) for a, b in PAIRS},
            "seconds": {name: round(value, 3) for name, value in seconds.items()},
            "onnx_tta_mode": modes["onnx_tta"],
        }
        rows.append(row)
        print(f"{case} {site}: " + ", ".join(f"{k} {v:.4f}" for k, v in row["agreement"].items()), flush=True)
    names = [*OPTIONS, "monai_reference"]
    summary = {
        "mean_dice": {n: round(statistics.mean(r["dice"][n] for r in rows), 4) for n in names},
        "median_seconds": {n: round(statistics.median(r["seconds"][n] for r in rows), 3) for n in names},
        "agreement_min": {p: min(r["agreement"][p] for r in rows) for p in rows[0]["agreement"]},
        "agreement_mean": {p: round(statistics.mean(r["agreement"][p] for r in rows), 5) for p in rows[0]["agreement"]},
        "priced": [price(rows, option, baseline) for option, baseline in PRICED],
        "mean_dice_by_site": {
            site: {n: round(statistics.mean(r["dice"][n] for r in rows if r["site"] == site), 4) for n in names}
            for site in sorted({r["site"] for r in rows})
        },
    }
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "threads": args.threads,
        "model": f"{bundle.meta.name} {bundle.meta.version}",
        "model_path": str(bundle.path),
        "model_training_data": bundle.meta.provenance.get("training_data"),
        "data": (f"split '{args.split}' of {args.index}" if args.index else
                 f"PROMISE12 training cases with expert masks under {args.data} (sites inferred, spacing estimated)"),
        "cases": len(rows),
        "summary": summary,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    """The summary as Markdown tables."""
    s = result["summary"]
    lines = [
        f"# Inference options on real cases: {result['model']}",
        "",
        f"{result['date']}, {result['machine']}, {result['threads']} threads; {result['data']}; "
        f"{result['cases']} cases. Model trained on: {result['model_training_data']}",
        "",
        "| option | mean Dice vs expert | median s in process |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {s['mean_dice'][n]:.4f} | {s['median_seconds'][n]:.3f} |" for n in s["mean_dice"]]
    lines += ["", "| agreement (Dice between masks) | min | mean |", "|---|---|---|"]
    lines += [f"| {p} | {s['agreement_min'][p]:.4f} | {s['agreement_mean'][p]:.4f} |" for p in s["agreement_min"]]
    lines += ["", "| option vs baseline | mean Dice gain (paired) | 95 % interval | beyond noise | "
              "median time ratio | median extra s |", "|---|---|---|---|---|---|"]
    for q in s["priced"]:
        gain = q["dice_gain"]
        interval = "-" if gain["ci95"] is None else f"[{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}]"
        lines.append(f"| {q['option']} vs {q['baseline']} | {gain['mean']:+.4f} | {interval} | "
                     f"{'yes' if gain['beyond_noise'] else 'no'} | {q['median_time_ratio']:.2f}x | "
                     f"{q['median_extra_seconds']:+.3f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Per-case paired Dice gain of each priced option (dots) with the mean and its 95 % interval (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    priced = result["summary"]["priced"]
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=120)
    for y, q in enumerate(priced):
        gains = q["per_case_gain"]
        ax.scatter(gains, [y + 0.12] * len(gains), s=14, color="0.45", zorder=2)
        gain = q["dice_gain"]
        if gain["ci95"] is not None:
            ax.plot(gain["ci95"], [y - 0.12] * 2, color="C3" if gain["beyond_noise"] else "C0", lw=3)
        ax.scatter([gain["mean"]], [y - 0.12], color="k", s=22, zorder=3)
        ax.text(1.01, y, f"{q['median_time_ratio']:.2f}x time", transform=ax.get_yaxis_transform(), va="center",
                fontsize=8)
    ax.axvline(0, color="0.6", lw=1)
    ax.set_yticks(range(len(priced)), [f"{q['option']}\nvs {q['baseline']}" for q in priced], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Dice gain vs expert mask (per case: dots; mean and 95 % interval: bar)")
    ax.set_title(f"{result['model']}, {result['cases']} cases ({result['data']})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "promise12")
    parser.add_argument("--model", default=None, help="bundle name or path (default: the bundled student)")
    parser.add_argument("--index", type=Path, default=None, help="a prostatekd prepare index (instead of --data)")
    parser.add_argument("--split", default="test", help="split of --index: test, all (default: test)")
    parser.add_argument("--cases", nargs="*", default=None, help="case names (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="first N cases only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference_agreement.json")
    parser.add_argument("--plot", action="store_true", help="also write <out>.png (paired Dice gains)")
    parser.add_argument("--replot", type=Path, default=None, help="only redraw the tables and PNG of this JSON")
    args = parser.parse_args(argv)
    if args.replot is not None:
        result = json.loads(args.replot.read_text())
        args.replot.with_suffix(".md").write_text(markdown(result))
        plot(result, args.replot.with_suffix(".png"))
        print(f"wrote {args.replot.with_suffix('.md')} and {args.replot.with_suffix('.png')}")
        return 0
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    if args.plot:
        plot(result, args.out.with_suffix(".png"))
    print(markdown(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
