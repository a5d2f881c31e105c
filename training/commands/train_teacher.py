"""``prostatekd train-teacher``: one teacher on all training data, or a limit-trained ensemble."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``train-teacher``."""
    parser = subparsers.add_parser(
        "train-teacher",
        help="train a teacher, or one limit-trained teacher per site / random subset, and export each",
        description="Train teachers from a YAML config (distiller 'none') into RUN_DIR/<subset>/ and export "
        "each as RUN_DIR/<subset>/bundle. --subsets all: one teacher on all training data (subset 'all'); "
        "per-site: one per site; random:K: K random disjoint subsets. RUN_DIR/teachers.json lists them; "
        "'prostatekd distill --teachers RUN_DIR' uses them all.",
    )
    parser.add_argument("config", help="teacher YAML config (e.g. training/configs/teacher_phantom.yaml)")
    parser.add_argument("--run-dir", required=True, help="new or empty folder for the teacher runs")
    parser.add_argument("--subsets", default="all", help="all (default), per-site or random:K")
    parser.add_argument("--jobs", type=int, default=1, help="teachers trained in parallel processes (default 1)")
    parser.add_argument("--resume", action="store_true", help="complete a stopped train-teacher folder")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--device", help="override train.device: auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--data-root", help="override data.root")
    parser.add_argument("--index", help="dataset index from 'prostatekd prepare': train on its training split, validate on its validation split, never touch its test split")
    parser.add_argument("--fold", type=int, help="fold of the index (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``train-teacher``."""
    from ..config import load_config
    from ..train_teacher import format_listing, train_teachers

    overrides: dict[str, Any] = {}
    for key, value in (("train.epochs", args.epochs), ("train.device", args.device), ("data.root", args.data_root),
                       ("data.index", args.index), ("data.fold", args.fold)):
        if value is not None:
            overrides[key] = value
    config = load_config(args.config, overrides)
    listing = train_teachers(config, args.run_dir, subsets=args.subsets, jobs=args.jobs, resume=args.resume,
                             progress=not args.quiet)
    print(format_listing(listing))
    print(f"teachers: {args.run_dir} (use --teachers {args.run_dir} with 'prostatekd distill')")
    return 0
