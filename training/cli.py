"""``prostatekd train`` and ``prostatekd export`` (added to the CLI by ``ProstateKDLib.cli``).

Imports of torch and MONAI happen inside the ``run`` functions, so
``prostatekd --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(subparsers: Any) -> None:
    """Register ``train`` and ``export``."""
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
    train.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    train.set_defaults(func=run_train)

    export = subparsers.add_parser(
        "export",
        help="export a training run as a model bundle",
        description="Write model.json and model.safetensors for a run's best (or last) checkpoint.",
    )
    export.add_argument("run_dir", help="training run folder")
    export.add_argument("outdir", help="bundle folder to write")
    export.add_argument("--checkpoint", choices=["best", "last"], default="best")
    export.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    export.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    """Run ``train``."""
    from pathlib import Path

    from ProstateKDLib.errors import ConfigError

    from .config import load_config
    from .train import train

    config_path = args.config
    if config_path is None:
        if not args.resume:
            raise ConfigError("train needs a CONFIG file (or --resume with the run's --run-dir)")
        config_path = Path(args.run_dir) / "config.yaml"
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.device is not None:
        overrides["train.device"] = args.device
    if args.data_root is not None:
        overrides["data.root"] = args.data_root
    config = load_config(config_path, overrides)
    run_dir = train(config, args.run_dir, resume=args.resume, progress=not args.quiet)
    print(f"run finished: {run_dir}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Run ``export``."""
    from .export import export_run

    bundle = export_run(args.run_dir, args.outdir, checkpoint=args.checkpoint, overwrite=args.overwrite)
    dice = bundle.meta.provenance.get("validation_dice")
    print(f"exported {bundle.meta.name} {bundle.meta.version} to {bundle.path} (validation Dice {dice})")
    return 0
