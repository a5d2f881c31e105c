"""The ``prostatekd`` command: one entry point, one module per subcommand.

Each subcommand module has ``add_parser(subparsers)``, which registers its
arguments and sets ``func`` to a ``run(args) -> int`` function. Training
commands live in the ``training`` package and are added when it is importable.
Errors a user can cause (:class:`~ProstateKDLib.errors.ProstateKDError`) are
printed as one line on stderr, with the error's exit code and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .. import __version__
from ..errors import ProstateKDError

LIBRARY_COMMANDS = ("segment", "series", "models", "phantom")
TRAINING_PACKAGE = "training.cli"


def build_parser() -> argparse.ArgumentParser:
    """The full ``prostatekd`` parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="prostatekd",
        description="Prostate MRI segmentation with knowledge-distilled students.",
    )
    parser.add_argument("--version", action="version", version=f"prostatekd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in LIBRARY_COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    try:
        training = importlib.import_module(TRAINING_PACKAGE)
    except ModuleNotFoundError as exc:
        if exc.name not in ("training", TRAINING_PACKAGE):
            raise
    else:
        training.add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prostatekd``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ProstateKDError as exc:
        print(f"prostatekd {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"prostatekd {args.command}: interrupted", file=sys.stderr)
        return 130
