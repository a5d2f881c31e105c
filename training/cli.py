"""The full ``prostatekd`` command: the library's subcommands plus the training ones.

``prostatekd`` (the installed script) and ``python -m training.cli`` run :func:`main`;
the library (``ProstateKDLib.cli``) never imports this package.

Each command is a module of ``training.commands`` with ``add_parser(subparsers)``;
a new command is one new module plus its name in ``COMMANDS``. Imports of
torch and MONAI happen inside the ``run`` functions, so ``prostatekd --help``
stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Sequence

COMMANDS = ("train", "export", "prepare", "evaluate", "train_teacher", "distill", "self_distill", "adapt", "coteach",
            "distill_data_free")


def add_parsers(subparsers: Any) -> None:
    """Register every training subcommand."""
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prostatekd`` with every command; returns the process exit code."""
    from ProstateKDLib.cli import main as library_main

    return library_main(argv, extra=add_parsers)


if __name__ == "__main__":
    sys.exit(main())
