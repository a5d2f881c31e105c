"""``prostatekd prepare``: check every case of a data set and write a dataset index with splits."""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import at_least_one


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _folds(text: str) -> int | str:
    return text if text == "by-site" else at_least_one(text)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``prepare``."""
    parser = subparsers.add_parser(
        "prepare",
        help="check a data set and write a dataset index (held-out test set + K folds)",
        description="Index DATA (a multi-site folder <SITE>/CaseNN.nii.gz, a Medical Segmentation "
        "Decathlon folder with dataset.json, or a .csv case list), read and check every case "
        "(readable, image/label geometry equal, labels 0/1/2), and write INDEX.json with a "
        "held-out test set and K train/val folds, both stratified per site and reproducible for --seed.",
    )
    parser.add_argument("data", help="multi-site folder, MSD task folder (dataset.json) or .csv case list")
    parser.add_argument("--out", required=True, help="dataset index to write (.json)")
    parser.add_argument("--folds", type=_folds, default=5,
                        help="number of train/val folds (default 5; 1 = one split), or by-site (leave one site out)")
    parser.add_argument(
        "--val-fraction", type=_fraction, default=None,
        help="validation fraction per site with --folds 1 (default 0.2)",
    )
    parser.add_argument("--test-fraction", type=_fraction, default=0.2, help="held-out test fraction per site (default 0.2)")
    parser.add_argument("--seed", type=_natural, default=0, help="seed of the splits (default 0)")
    parser.add_argument(
        "--channel", type=_natural, default=None,
        help="channel of multi-channel images (MSD default: the T2 channel from dataset.json)",
    )
    parser.add_argument(
        "--keep-zones", action="store_true",
        help="record zone labels (1, 2) in the index instead of merged gland labels",
    )
    parser.add_argument("--skip-bad", action="store_true", help="list bad cases and leave them out instead of failing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``prepare``."""
    import sys

    from ProstateKDLib.errors import DataError

    from ..prepare import BadCaseError, format_index_summary, prepare_index

    if args.val_fraction is not None and args.folds != 1:
        each = "one site" if args.folds == "by-site" else f"1/{args.folds} of the cases"
        print("prostatekd prepare: error: --val-fraction applies only with --folds 1 "
              f"(with {args.folds} folds each fold validates on {each})", file=sys.stderr)
        return 2
    try:
        index = prepare_index(
            args.data,
            args.out,
            folds=args.folds,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
            channel=args.channel,
            keep_zones=args.keep_zones,
            skip_bad=args.skip_bad,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except BadCaseError as exc:
        raise DataError(f"{exc} (use --skip-bad to list and skip bad cases)") from None
    for item in index["skipped"]:
        print(f"skipped {item['case_id']}: {item['error']}", file=sys.stderr)
    print(format_index_summary(index, args.out))
    return 0
