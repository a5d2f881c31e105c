"""Training subcommands of ``prostatekd`` (added to the CLI by ``ProstateKDLib.cli``).

Each command is a module of ``training.commands`` with ``add_parser(subparsers)``;
a new command is one new module plus its name in ``COMMANDS``. Imports of
torch and MONAI happen inside the ``run`` functions, so ``prostatekd --help``
stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

COMMANDS = ("train", "export", "prepare", "evaluate", "train_teacher", "distill", "self_distill", "adapt", "coteach",
            "distill_data_free")


def add_parsers(subparsers: Any) -> None:
    """Register every training subcommand."""
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.commands.{name}").add_parser(subparsers)
