"""What every ``prostatekd`` subcommand shares: -q/-v, errors as JSON under --json, quiet logs.

- ``-q/--quiet``: only errors (and the ``--json`` object when asked for); no
  progress. ``-v/--verbose``: debug logging of the library on stderr.
- ``--json``: an error is one JSON object on stdout,
  ``{"error": "...", "exit_code": 3, "kind": "input", "command": "segment"}``,
  also for usage errors (exit 2); nothing on stderr.
- When stderr is not a terminal (a log file, CI, a pipe), tqdm progress bars
  redraw at most every :data:`LOG_PROGRESS_INTERVAL_S` seconds instead of ten
  times a second; ``segment``'s batch bar prints one line per case or per 5 %
  (see :mod:`ProstateKDLib.progress`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from typing import Any, Iterator, NoReturn, Sequence

from ..errors import ProstateKDError

LOG_PROGRESS_INTERVAL_S = 30
_KINDS = {2: "usage", 3: "input", 4: "output", 5: "model bundle", 6: "device", 7: "config", 8: "data", 130: "cancelled"}


def wants_json(argv: Sequence[str]) -> bool:
    """True when ``--json`` is among the arguments (before ``--``)."""
    for item in argv:
        if item == "--":
            return False
        if item == "--json":
            return True
    return False


def error_object(command: str | None, message: str, exit_code: int) -> dict[str, Any]:
    """The JSON form of an error."""
    return {"error": message, "exit_code": exit_code, "kind": _KINDS.get(exit_code, "error"), "command": command}


def report_error(command: str | None, error: ProstateKDError | str, exit_code: int, as_json: bool) -> None:
    """One line on stderr (``prostatekd CMD: error: ...``), or one JSON object on stdout."""
    message = str(error)
    if as_json:
        print(json.dumps(error_object(command, message, exit_code)), flush=True)
    else:
        prefix = f"prostatekd {command}" if command else "prostatekd"
        print(f"{prefix}: error: {message}", file=sys.stderr, flush=True)


def json_error_parser(base: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    """An ArgumentParser class whose usage errors are printed as JSON (subparsers inherit it)."""

    class JsonErrorParser(base):  # type: ignore[misc, valid-type]
        def error(self, message: str) -> NoReturn:
            command = self.prog.split()[1] if len(self.prog.split()) > 1 else None
            report_error(command, message, 2, as_json=True)
            raise SystemExit(2)

    return JsonErrorParser


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` and ``-v/--verbose`` on ``parser``, keeping options it already has."""
    known = {option for action in parser._actions for option in action.option_strings}
    quiet = [flag for flag in ("-q", "--quiet") if flag not in known]
    if quiet:
        parser.add_argument(*quiet, dest="quiet", action="store_true",
                            help="only errors: no progress, no summary (the --json object still comes)")
    verbose = [flag for flag in ("-v", "--verbose") if flag not in known]
    if verbose:
        parser.add_argument(*verbose, dest="verbose", action="store_true", help="debug messages on stderr")


@contextlib.contextmanager
def configured_output(quiet: bool, verbose: bool) -> Iterator[None]:
    """Within the block: the library's logging level, and tqdm's redraw rate when stderr is no terminal.

    The environment variables tqdm reads (``TQDM_MININTERVAL``, ``TQDM_DISABLE``)
    are restored afterwards, so one command never changes the next.
    """
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING
    for name in ("ProstateKDLib", "training"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
    saved = {key: os.environ.get(key) for key in ("TQDM_MININTERVAL", "TQDM_DISABLE")}
    if not _is_terminal(sys.stderr) and saved["TQDM_MININTERVAL"] is None:
        os.environ["TQDM_MININTERVAL"] = str(LOG_PROGRESS_INTERVAL_S)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # bars that do not set disable= themselves
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
