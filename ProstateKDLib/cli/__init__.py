"""The ``prostatekd`` command: one entry point, one module per subcommand.

Each subcommand module has ``add_parser(subparsers)``, which registers its
arguments and sets ``func`` to a ``run(args) -> int`` function. Training
commands live in the ``training`` package and are added when it is importable.
Errors a user can cause (:class:`~ProstateKDLib.errors.ProstateKDError`) are
printed as one line on stderr, with the error's exit code and no traceback, or
as one JSON object on stdout under ``--json``. Every subcommand takes
``-q/--quiet`` and ``-v/--verbose`` (see :mod:`ProstateKDLib.cli.conventions`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from .. import __version__
from ..errors import ProstateKDError
from .conventions import add_verbosity_options, configured_output, json_error_parser, report_error, wants_json

LIBRARY_COMMANDS = ("segment", "series", "models", "phantom")
TRAINING_PACKAGE = "training.cli"


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    """The full ``prostatekd`` parser with every available subcommand (usage errors as JSON if asked)."""
    parser_class = json_error_parser() if json_errors else argparse.ArgumentParser
    parser = parser_class(
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
    for subparser in subparsers.choices.values():
        add_verbosity_options(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prostatekd``; returns the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(json_errors=wants_json(arguments))
    args = parser.parse_args(arguments)
    as_json = bool(getattr(args, "json", False))
    try:
        with configured_output(bool(getattr(args, "quiet", False)), bool(getattr(args, "verbose", False))):
            return int(args.func(args) or 0)
    except ProstateKDError as exc:
        report_error(args.command, exc, exc.exit_code, as_json)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: not an error of the input, said as it always was
        if as_json:
            report_error(args.command, "interrupted", 130, as_json)
        else:
            print(f"prostatekd {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # e.g. 'prostatekd series X | head': the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
