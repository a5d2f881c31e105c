"""The ``prostatekd`` command: one entry point, one module per subcommand.

Each subcommand module has ``add_parser(subparsers)``, which registers its
arguments and sets ``func`` to a ``run(args) -> int`` function. The library
knows only its own commands (``python -m ProstateKDLib.cli``: segment, models,
phantom); an application adds its own by passing ``extra`` (the installed
``prostatekd`` script is ``training.cli:main``, which adds the training commands).
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
from typing import Any, Callable, Sequence

from .. import __version__
from ..errors import ProstateKDError
from .conventions import add_verbosity_options, configured_output, json_error_parser, report_error, wants_json

LIBRARY_COMMANDS = ("segment", "series", "models", "phantom")

#: Registers further subcommands on the ``prostatekd`` subparsers (an application's ``add_parsers``).
AddParsers = Callable[[Any], None]


def build_parser(json_errors: bool = False, extra: AddParsers | None = None) -> argparse.ArgumentParser:
    """The ``prostatekd`` parser: the library's subcommands, then what ``extra`` registers (JSON usage errors if asked)."""
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
    if extra is not None:
        extra(subparsers)
    for subparser in subparsers.choices.values():
        add_verbosity_options(subparser)
    return parser


def main(argv: Sequence[str] | None = None, extra: AddParsers | None = None) -> int:
    """Run ``prostatekd`` (with the subcommands ``extra`` adds); returns the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(json_errors=wants_json(arguments), extra=extra)
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
