"""The full ``prostatekd`` command: the library's subcommands plus the training ones.

``prostatekd`` (the installed script) and ``python -m training.cli`` run :func:`main`;
the library (``ProstateKDLib.cli``) never imports this package.

Each command is a module of ``training.commands`` with ``add_parser(subparsers)``;
a new command is one new module plus its name in ``COMMANDS``. Imports of
torch and MONAI happen inside the ``run`` functions, so ``prostatekd --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

COMMANDS = ("train", "export", "prepare", "evaluate", "train_teacher", "distill", "self_distill", "adapt", "coteach",
            "distill_data_free", "teach_cache")


def add_parsers(subparsers: Any) -> None:
    """Register every training subcommand; those that read a YAML config also get ``--set KEY=VALUE``."""
    for name in COMMANDS:
        before = set(subparsers.choices)
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(subparsers)
        for added in set(subparsers.choices) - before:
            parser = subparsers.choices[added]
            if any(action.dest == "config" for action in parser._actions):
                _add_set_option(parser)


def _add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="set_options",
        help="override any config key, e.g. --set train.learning_rate=3e-4 --set data.sites=[RUNMC,HK] (repeatable)",
    )
    run = parser.get_default("func")

    def run_with_overrides(args: argparse.Namespace) -> int:
        from .config_set import parse_set_options, using_overrides

        with using_overrides(parse_set_options(args.set_options)):
            return run(args)

    parser.set_defaults(func=run_with_overrides)


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    """The full ``prostatekd`` parser: the library's subcommands and the training ones."""
    from ProstateKDLib.cli import build_parser as library_parser

    return library_parser(json_errors=json_errors, extra=add_parsers)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prostatekd`` with every command; returns the process exit code."""
    from ProstateKDLib.cli import main as library_main

    return library_main(argv, extra=add_parsers)


if __name__ == "__main__":
    sys.exit(main())
