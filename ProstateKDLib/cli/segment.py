"""``prostatekd segment``: one volume, or a batch from a folder or CSV."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

OUTPUT_FORMATS = {"nii.gz": ".nii.gz", "nrrd": ".nrrd", "seg.nrrd": ".seg.nrrd", "mha": ".mha"}


def add_parser(subparsers: Any) -> None:
    """Register ``segment``."""
    parser = subparsers.add_parser(
        "segment",
        help="segment the prostate in one MRI volume, or a batch",
        description=(
            "Segment the prostate gland. INPUT is a NIfTI/NRRD/MHA file or a DICOM "
            "series folder, and OUTPUT a .nii.gz, .nii, .nrrd, .seg.nrrd or .mha mask. "
            "With a folder of volumes or a CSV (column 'image', optional 'case', "
            "'channel') as INPUT, OUTPUT is a folder and a summary.csv is written there."
        ),
    )
    parser.add_argument("input", help="input volume, DICOM folder, folder of volumes, or CSV")
    parser.add_argument("output", help="output mask file, or output folder for a batch")
    parser.add_argument("--model", default=None, help="bundle name or path (default: the bundled student)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--channel", type=int, default=None, help="channel of a 4D/multi-channel input")
    component = parser.add_mutually_exclusive_group()
    component.add_argument(
        "--no-largest-component", action="store_true", help="keep every connected component"
    )
    component.add_argument(
        "--largest-component", action="store_true", help="keep only the largest component (default: the model's choice)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the network")
    parser.add_argument(
        "--backend", choices=["auto", "onnx", "torch"], default="auto",
        help="network runtime: onnx (onnxruntime, no torch), torch, or auto (onnx when the bundle has an export)",
    )
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation (4 passes, about 4x the time)")
    parser.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: the model's)")
    parser.add_argument(
        "--window", choices=["auto", "whole", "sliding"], default="auto",
        help="one whole-volume pass or a sliding window (default auto: whole where the model allows it)",
    )
    parser.add_argument(
        "--format", choices=sorted(OUTPUT_FORMATS), default="nii.gz", help="batch output format"
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "--progress", action="store_true",
        help="print 'progress <fraction> <message>' lines on stderr (for front ends such as 3D Slicer)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``segment`` (single or batch)."""
    from ..batch import is_batch_input
    from ..bundle import resolve_model
    from ..errors import InputError
    from ..inference import Segmenter, choose_backend
    from ..memory import skip_optional_imports, use_mmap_for_large_blocks

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise InputError(f"--overlap must be in [0, 1), got {args.overlap}")
    use_mmap_for_large_blocks()  # lower peak memory; this process is ours
    bundle = resolve_model(args.model)
    backend = choose_backend(bundle, args.backend, args.device)
    if backend == "torch":
        with skip_optional_imports():  # MONAI's plotting/reader extras: not needed to segment, 58 MB
            import monai  # noqa: F401
    batch = is_batch_input(args.input)
    if not batch:
        # Check the output before loading anything, so a bad path fails at once.
        from ..image_io import check_output_path

        check_output_path(args.output, overwrite=args.overwrite)
    segmenter = Segmenter(
        bundle,
        device=args.device,
        largest_component=False if args.no_largest_component else (True if args.largest_component else None),
        num_threads=args.threads,
        backend=backend,
        tta=args.tta,
        overlap=args.overlap,
        window=args.window,
    )
    if batch:
        return _run_batch(args, segmenter)
    result = segmenter.segment_file(
        args.input, args.output, channel=args.channel, overwrite=args.overwrite,
        progress=print_progress if args.progress else None,
    )
    summary = result.summary()
    summary["model_path"] = str(segmenter.bundle.path)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def print_progress(fraction: float, message: str) -> None:
    """One machine-readable progress line on stderr, flushed at once."""
    print(f"progress {fraction:.3f} {message}", file=sys.stderr, flush=True)


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines for one segmentation."""
    size = "x".join(str(s) for s in summary["input_size"])
    spacing = "x".join(f"{s:g}" for s in summary["input_spacing_mm"])
    steps = ", ".join(f"{k} {v:.2f}" for k, v in summary["timings_s"].items())
    lines = [
        f"model:    {summary['model']} ({summary['model_path']})",
        f"device:   {summary['device']} ({summary['backend']}, {summary['inference']})",
        f"input:    {summary['input']}  {size} voxels, {spacing} mm",
        f"gland:    {summary['volume_ml']:.1f} ml",
        f"output:   {summary['output']}",
        f"time:     {summary['seconds']:.2f} s ({steps})",
    ]
    lines += [f"warning:  {w}" for w in summary["warnings"]] or ["warnings: none"]
    return "\n".join(lines)


def _run_batch(args: argparse.Namespace, segmenter: Any) -> int:
    from tqdm import tqdm

    from ..batch import collect_inputs, run_batch

    items = collect_inputs(args.input)
    if args.channel is not None:
        items = [item if item.channel is not None else replace(item, channel=args.channel) for item in items]
    bar = tqdm(total=len(items), desc="segment", unit="case", file=sys.stderr, disable=args.json)

    def segment_one(item: Any, output: Path) -> Any:
        return segmenter.segment_file(item.path, output, channel=item.channel, overwrite=args.overwrite)

    def on_case(row: dict[str, Any]) -> None:
        bar.update(1)
        if row["status"] == "error":
            bar.write(f"{row['case']}: error: {row['warnings']}", file=sys.stderr)

    try:
        rows = run_batch(items, args.output, segment_one, OUTPUT_FORMATS[args.format], on_case)
    finally:
        bar.close()
    failed = [row for row in rows if row["status"] == "error"]
    summary = {
        "cases": len(rows),
        "ok": sum(row["status"] == "ok" for row in rows),
        "warnings": sum(row["status"] == "warning" for row in rows),
        "failed": len(failed),
        "summary_csv": str(Path(args.output) / "summary.csv"),
        "model": f"{segmenter.bundle.meta.name} {segmenter.bundle.meta.version}",
        "device": str(segmenter.device),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['cases']} cases: {summary['ok']} ok, {summary['warnings']} with warnings, "
            f"{summary['failed']} failed; summary: {summary['summary_csv']}"
        )
    return 1 if failed else 0
