"""``prostatekd train``: train a network from a YAML config into a run folder."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``train``."""
    train = subparsers.add_parser(
        "train",
        help="train a student from a YAML config into a run folder",
        description="Train a student network. The run folder gets config.yaml, run.json, log.csv "
        "and checkpoints (last and best by validation Dice); --resume continues a stopped run.",
    )
    train.add_argument("config", nargs="?", help="YAML config (default with --resume: the run's config.yaml)")
    train.add_argument("--run-dir", required=True, help="new or empty folder for the run, or the run to resume")
    train.add_argument("--resume", action="store_true", help="continue from the run's checkpoint_last.pt")
    train.add_argument("--epochs", type=int, help="override train.epochs (e.g. to extend a resumed run)")
    train.add_argument("--device", help="override train.device: auto, cpu, cuda, cuda:N or mps")
    train.add_argument("--data-root", help="override data.root (folder of <SITE>/CaseNN.nii.gz, or a .csv)")
    train.add_argument("--index", help="dataset index from 'prostatekd prepare': train on its training split, validate on its validation split, never touch its test split")
    train.add_argument("--fold", type=int, help="fold of the index (default 0)")
    train.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    train.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``train``."""
    import os
    from pathlib import Path

    from ProstateKDLib.errors import ConfigError

    from ..config import load_config
    from ..train import train

    config_path = args.config
    if config_path is None:
        if not args.resume:
            raise ConfigError(f"{args.command} needs a CONFIG file (or --resume with the run's --run-dir)")
        config_path = Path(args.run_dir) / "config.yaml"
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.device is not None:
        overrides["train.device"] = args.device
    if args.data_root is not None:
        overrides["data.root"] = args.data_root
    if args.index is not None:
        overrides["data.index"] = args.index
    if args.fold is not None:
        overrides["data.fold"] = args.fold
    if getattr(args, "teachers", None):
        overrides["teachers"] = list(args.teachers)
    config = load_config(config_path, overrides)
    run_dir = train(config, args.run_dir, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"run finished: {run_dir}")
    return 0
