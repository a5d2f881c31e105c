"""The ``prostatekd`` command: one entry point, one module per subcommand.

Each subcommand module has ``add_parser(subparsers)``, which registers its
arguments and sets ``func`` to a ``run(args) -> int`` function. The library
knows only its own commands (``python -m ProstateKDLib.cli``: segment, models,
phantom); an application adds its own by passing ``extra`` (the installed
``prostatekd`` script is ``training.cli:main``, which adds the training commands).
Errors a user can cause (:class:`~ProstateKDLib.errors.ProstateKDError`) are
printed as one line on stderr, with the error's exit code and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable, Sequence

from .. import __version__
from ..errors import ProstateKDError

LIBRARY_COMMANDS = ("segment", "models", "phantom")

#: Registers further subcommands on the ``prostatekd`` subparsers (an application's ``add_parsers``).
AddParsers = Callable[[Any], None]


def build_parser(extra: AddParsers | None = None) -> argparse.ArgumentParser:
    """The ``prostatekd`` parser: the library's subcommands, then those ``extra`` registers."""
    parser = argparse.ArgumentParser(
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
    return parser


def main(argv: Sequence[str] | None = None, extra: AddParsers | None = None) -> int:
    """Run ``prostatekd`` (with the subcommands ``extra`` adds); returns the process exit code."""
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ProstateKDError as exc:
        print(f"prostatekd {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"prostatekd {args.command}: interrupted", file=sys.stderr)
        return 130
