"""How a recipe script ends: run its ``main`` and turn a ProstateKD error into one line and its exit code."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn


def run_recipe(main: Callable[[], int], name: str) -> NoReturn:
    """``sys.exit(main())``; a :class:`~ProstateKDLib.errors.ProstateKDError` prints ``<name>: error: ...``."""
    from ProstateKDLib.errors import ProstateKDError

    try:
        sys.exit(main())
    except ProstateKDError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
