"""``prostatekd segment``: one volume, or a batch from a folder or CSV."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

OUTPUT_FORMATS = {"nii.gz": ".nii.gz", "nrrd": ".nrrd", "seg.nrrd": ".seg.nrrd", "mha": ".mha", "dicom-seg": ".dcm"}


def add_parser(subparsers: Any) -> None:
    """Register ``segment``."""
    parser = subparsers.add_parser(
        "segment",
        help="segment the prostate in one MRI volume, or a batch",
        description=(
            "Segment the prostate gland. INPUT is a NIfTI/NRRD/MHA file or a DICOM "
            "study/series folder, and OUTPUT a .nii.gz, .nii, .nrrd, .seg.nrrd or .mha mask, or a "
            "DICOM SEG (.dcm, or --format dicom-seg) referencing the source series. A DICOM folder "
            "holding several series is segmented on its axial T2 (see 'prostatekd series'). "
            "A batch (a folder of volumes, of DICOM series or of site folders, or a CSV with "
            "column 'image', optional 'case', 'channel') is run with --batch, or when OUTPUT "
            "is an existing folder, or for a CSV: masks and a summary.csv go to the folder OUTPUT."
        ),
    )
    parser.add_argument("input", help="input volume, DICOM folder, folder of volumes, or CSV")
    parser.add_argument("output", help="output mask file, or output folder for a batch")
    parser.add_argument("--model", default=None, help="bundle name or path (default: the bundled student)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--channel", type=int, default=None, help="channel of a 4D/multi-channel input")
    parser.add_argument(
        "--series", metavar="UID|NUMBER", default=None,
        help="DICOM series to segment: SeriesInstanceUID or SeriesNumber (default: the axial T2)",
    )
    parser.add_argument(
        "--psa", metavar="NG_PER_ML", type=psa_value, default=None,
        help="serum PSA in ng/ml: also report PSA density (ng/ml per cc of gland)",
    )
    component = parser.add_mutually_exclusive_group()
    component.add_argument(
        "--no-largest-component", action="store_true", help="keep every connected component"
    )
    component.add_argument(
        "--largest-component", action="store_true", help="keep only the largest component (default: the model's choice)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--batch", action="store_true",
        help="INPUT is a folder of volumes or series; OUTPUT is a folder (created if needed)",
    )
    parser.add_argument(
        "--skip-existing", action="store_true", default=None,
        help="batch: keep cases whose mask exists (the default for a rerun with the same inputs)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the network")
    parser.add_argument(
        "--backend", choices=["auto", "onnx", "torch"], default="auto",
        help="network runtime: onnx (onnxruntime, no torch), torch, or auto (onnx when the bundle has an export)",
    )
    parser.add_argument("--tta", action="store_true", help="left-right flip test-time augmentation (2 passes, about 2x the network time)")
    parser.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: the model's)")
    parser.add_argument(
        "--window", choices=["auto", "whole", "sliding"], default="auto",
        help="one whole-volume pass or a sliding window (default auto: whole where the model allows it)",
    )
    parser.add_argument(
        "--format", choices=sorted(OUTPUT_FORMATS), default=None,
        help="output format (batch default: nii.gz; dicom-seg also for one DICOM input)",
    )
    parser.add_argument(
        "--flip-check", action="store_true",
        help="also segment the left-right mirrored input and warn when the model disagrees with itself "
             "(a second network pass)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "--progress", action="store_true",
        help="print 'progress <fraction> <message>' lines on stderr (for front ends such as 3D Slicer)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``segment`` (single or batch); SIGTERM cleans up like Ctrl-C."""
    from ..temp_files import terminate_as_interrupt

    with terminate_as_interrupt():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..batch import wants_batch
    from ..dicom_seg import check_seg_output_path, is_dicom_seg_path, segment_to_dicom_seg
    from ..errors import UsageError
    from ..bundle import resolve_model
    from ..inference import Segmenter, choose_backend
    from ..memory import skip_optional_imports, use_mmap_for_large_blocks
    from ..psa_density import psa_density
    from .series import choose_input_series, series_summary

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise UsageError(f"--overlap must be in [0, 1), got {args.overlap}")
    batch = wants_batch(args.input, args.output, args.batch)
    dicom_seg = not batch and (args.format == "dicom-seg" or is_dicom_seg_path(args.output))
    if args.psa is not None and batch:
        raise UsageError("--psa applies to one case, not a batch")
    choice = None
    if not batch:
        if args.skip_existing:
            raise UsageError("--skip-existing is for a batch (add --batch)")
        # Check the output and choose the DICOM series before loading anything, so a bad call fails at once.
        from ..image_io import check_output_path
        from ..safe_paths import check_not_input
        from ..temp_files import remove_stale_temporaries

        check_not_input(args.output, args.input)
        output = (check_seg_output_path if dicom_seg else check_output_path)(args.output, overwrite=args.overwrite)
        remove_stale_temporaries(output.parent)
        choice = choose_input_series(args.input, args.series)
    use_mmap_for_large_blocks()  # lower peak memory; this process is ours
    bundle = resolve_model(args.model)
    backend = choose_backend(bundle, args.backend, args.device)
    if backend == "torch":
        with skip_optional_imports():  # MONAI's plotting/reader extras: not needed to segment, 58 MB
            import monai  # noqa: F401
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
    progress = print_progress if args.progress else None
    series = None if choice is None else choice.series.uid
    if dicom_seg:
        result = segment_to_dicom_seg(segmenter, args.input, args.output, series, args.overwrite, progress)
    else:
        result = segmenter.segment_file(
            args.input, args.output, channel=args.channel, overwrite=args.overwrite, progress=progress, series=series
        )
    if args.flip_check:
        add_flip_check(segmenter, args.input, args.channel, result, series)
    summary = result.summary()
    summary["model_path"] = str(segmenter.bundle.path)
    if choice is not None:
        summary["series"] = series_summary(choice)
    if args.psa is not None:
        summary["psa_ng_ml"] = args.psa
        summary["psa_density_ng_ml_cc"] = (
            round(psa_density(args.psa, result.volume_ml), 3) if result.volume_ml > 0 else None
        )
    if args.json or not getattr(args, "quiet", False):
        print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def add_flip_check(segmenter: Any, input_path: Any, channel: int | None, result: Any, series: str | None = None) -> None:
    """Add the flip agreement to ``result.quality`` (and its warning, if it fails) for the input at ``input_path``."""
    import SimpleITK as sitk

    from ..image_io import read_volume
    from ..quality_checks import flip_agreement, quality_warnings, thresholds_from_model

    image = read_volume(input_path, channel=channel, series=series)
    labels = sitk.GetArrayViewFromImage(result.mask)
    result.quality["flip_agreement"] = flip_agreement(lambda im: segmenter.segment(im).mask, image, labels)
    thresholds = thresholds_from_model(segmenter.bundle.meta.raw)
    check = {"flip_agreement": result.quality["flip_agreement"]}
    result.warnings += quality_warnings(check, thresholds)


def psa_value(text: str) -> float:
    """``--psa``: a PSA in ng/ml (0-10000)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 10000):
        raise argparse.ArgumentTypeError(f"PSA must be a number in 0-10000 ng/ml, got {text!r}")
    return value


def format_psa(summary: dict[str, Any]) -> str:
    """The PSA density line of the summary."""
    density = summary["psa_density_ng_ml_cc"]
    shown = "n/a (empty mask)" if density is None else f"{density:.3f} ng/ml/cc"
    return f"PSA:      {summary['psa_ng_ml']:g} ng/ml, density {shown}"


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
        *([f"series:   {summary['series']['message']}"] if summary.get("series") else []),
        f"gland:    {summary['volume_ml']:.1f} ml",
        *([format_psa(summary)] if "psa_ng_ml" in summary else []),
        f"output:   {summary['output']}",
        f"time:     {summary['seconds']:.2f} s ({steps})",
    ]
    lines += [f"warning:  {w}" for w in summary["warnings"]] or ["warnings: none"]
    return "\n".join(lines)


def _run_batch(args: argparse.Namespace, segmenter: Any) -> int:
    from ..batch import check_batch_output, collect_inputs, run_batch
    from ..dicom_seg import segment_to_dicom_seg
    from ..progress import progress_bar

    items = collect_inputs(args.input)
    if args.channel is not None:
        items = [item if item.channel is not None else replace(item, channel=args.channel) for item in items]
    suffix = OUTPUT_FORMATS[args.format or "nii.gz"]
    check_batch_output(items, args.output, suffix, args.overwrite, args.skip_existing)
    quiet = getattr(args, "quiet", False)
    bar = progress_bar(len(items), "segment", unit="case", file=sys.stderr, disable=args.json or quiet)

    def segment_one(item: Any, output: Path) -> Any:
        if args.format == "dicom-seg":
            return segment_to_dicom_seg(segmenter, item.path, output, args.series, args.overwrite)
        result = segmenter.segment_file(
            item.path, output, channel=item.channel, overwrite=args.overwrite, series=args.series
        )
        if args.flip_check:
            add_flip_check(segmenter, item.path, item.channel, result, args.series)
        return result

    def on_case(row: dict[str, Any]) -> None:
        bar.update(1)
        if row["status"] == "error":
            bar.write(f"{row['case']}: error: {row['warnings']}", file=sys.stderr)

    try:
        rows = run_batch(items, args.output, segment_one, suffix, on_case,
                         overwrite=args.overwrite, skip_existing=args.skip_existing)
    finally:
        bar.close()
    failed = [row for row in rows if row["status"] == "error"]
    run_now = [row for row in rows if not row.get("skipped")]
    summary = {
        "cases": len(rows),
        "ok": sum(row["status"] == "ok" for row in run_now),
        "warnings": sum(row["status"] == "warning" for row in run_now),
        "failed": len(failed),
        "kept": len(rows) - len(run_now),
        "summary_csv": str(Path(args.output) / "summary.csv"),
        "model": f"{segmenter.bundle.meta.name} {segmenter.bundle.meta.version}",
        "device": str(segmenter.device),
    }
    if args.json:
        print(json.dumps(summary))
    elif not quiet:
        print(
            f"{summary['cases']} cases: {summary['ok']} ok, {summary['warnings']} with warnings, "
            f"{summary['failed']} failed"
            + (f", {summary['kept']} kept from the previous run" if summary["kept"] else "")
            + f"; summary: {summary['summary_csv']}"
        )
    return 1 if failed else 0
