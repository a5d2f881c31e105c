"""``prostatekd distill``: train a student from a YAML config with teachers (knowledge distillation)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``distill``."""
    parser = subparsers.add_parser(
        "distill",
        help="distil a student from teacher bundles (the config's distiller: logit_kd, seed_kd, ctkd, amal, ...)",
        description="Train the config's student with its distiller and teachers (frozen, on the student's "
        "preprocessing grid). --teachers (bundle folders, installed bundle names, run folders or "
        "train-teacher folders) replaces the config's 'teachers'. The run folder is like 'prostatekd train's; "
        "'prostatekd export' then records the method and the teachers in the bundle's provenance.",
    )
    parser.add_argument("config", nargs="?", help="YAML config (default with --resume: the run's config.yaml)")
    parser.add_argument("--run-dir", required=True, help="new or empty folder for the run, or the run to resume")
    parser.add_argument("--teachers", nargs="+", metavar="BUNDLE", help="teacher bundles / runs / train-teacher folders")
    parser.add_argument("--resume", action="store_true", help="continue from the run's checkpoint_last.pt")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--device", help="override train.device: auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--data-root", help="override data.root")
    parser.add_argument("--index", help="dataset index from 'prostatekd prepare': train on its training split, validate on its validation split, never touch its test split")
    parser.add_argument("--fold", type=int, help="fold of the index (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``distill``."""
    from .train import run as run_train

    return run_train(args)
