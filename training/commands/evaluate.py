"""``prostatekd evaluate``: run models over labelled cases and report Dice, HD95, ASD and volume errors."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="compare models against labels: per-case CSV, per-site summary, box plots",
        description="Segment labelled cases with each --model through the same path as "
        "'prostatekd segment' and compare with the labels on the original image grid. Writes "
        "per_case.csv, summary.json and one box plot per metric (dice, hd95_mm, asd_mm, "
        "volume_error_pct) to --out, and prints mean Dice per model and site.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--index", help="dataset index written by 'prostatekd prepare'")
    source.add_argument("--data", help="evaluate every case of a multi-site folder, MSD folder or .csv")
    parser.add_argument(
        "--model", action="append", default=None, metavar="NAME|PATH",
        help="model bundle name or path; repeat to compare models (default: the bundled student)",
    )
    parser.add_argument("--split", choices=("test", "val", "train", "all"), default=None,
                        help="cases of the index to evaluate (default: test)")
    parser.add_argument("--fold", type=int, default=None, help="fold for --split val/train (default 0)")
    parser.add_argument("--channel", type=int, default=None, help="image channel for --data (MSD: T2 by default)")
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--save-masks", action="store_true", help="also write masks/<model>/<case>.nii.gz")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``."""
    import sys

    from ProstateKDLib.errors import InputError
    from ProstateKDLib.memory import use_mmap_for_large_blocks

    from ..evaluate import evaluate, format_table, select_cases

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    problem = None
    if args.data is not None and (args.split is not None or args.fold is not None):
        problem = "--split and --fold apply only with --index"
    elif args.index is not None and args.channel is not None:
        problem = "--channel applies only with --data (an index records each case's channel)"
    elif args.fold is not None and args.fold < 0:
        problem = f"--fold must be 0 or more, got {args.fold}"
    if problem:
        print(f"prostatekd evaluate: error: {problem}", file=sys.stderr)
        return 2
    use_mmap_for_large_blocks()  # lower peak memory; this process is ours
    cases = select_cases(
        index=args.index, data=args.data, split=args.split or "test", fold=args.fold or 0, channel=args.channel
    )
    summary = evaluate(
        args.model or [None],
        cases,
        args.out,
        device=args.device,
        save_masks=args.save_masks,
        overwrite=args.overwrite,
        progress=not args.quiet,
        num_threads=args.threads,
        source={"index": _resolved(args.index), "data": _resolved(args.data),
                "split": None if args.data else (args.split or "test"),
                "fold": None if args.data else (args.fold or 0)},
    )
    print(format_table(summary))
    print(f"results: {args.out} (per_case.csv, summary.json, dice.png, hd95_mm.png, asd_mm.png, volume_error_pct.png)")
    return 0


def _resolved(path: str | None) -> str | None:
    from pathlib import Path

    return None if path is None else str(Path(path).expanduser().resolve())
