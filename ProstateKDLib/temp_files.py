"""Hidden temporary files next to an output, and what happens to them when a run dies.

An output is written to ``.<stem>.tmp-<pid>-<8 hex><suffix>`` in the target
folder and renamed onto the target. The process id in the name lets a later
run tell a dead run's leftovers (removed by :func:`remove_stale_temporaries`)
from a live run's file (left alone). SIGTERM is turned into
:class:`Terminated` (a ``KeyboardInterrupt``) by :func:`terminate_as_interrupt`,
so the clean-up that runs on Ctrl-C also runs when a process is terminated.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<pid>\d+)(?:-[0-9a-f]{8})?(?:\.[A-Za-z0-9.]+)?$")


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; raised where it was, so ``finally`` blocks clean up."""


def temporary_path(target: Path, suffix: str = "") -> Path:
    """A hidden temporary path beside ``target``: ``.<stem>.tmp-<pid>-<hex><suffix>``.

    ``suffix`` (e.g. ``.nii.gz``) is kept at the end so writers that choose a
    format by suffix still do; ``stem`` is the name without it.
    """
    target = Path(target)
    name = target.name
    stem = name[: len(name) - len(suffix)] if suffix and name.endswith(suffix) else name
    return target.with_name(f".{stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process, or a pid we cannot test: keep the file
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove this program's temporary files in ``folder`` whose process is no longer running.

    Only names of the form ``.<name>.tmp-<pid>[-<8 hex>][<suffix>]`` are touched,
    and only when no process with that id exists (a SIGKILLed run's
    leftovers). Returns the removed paths; a file that cannot be removed is skipped.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        children = list(folder.iterdir())
    except OSError:
        return removed
    for child in children:
        match = _TEMPORARY.match(child.name)
        if not match or not child.is_file() or child.is_symlink() or _alive(int(match["pid"])):
            continue
        try:
            child.unlink()
        except OSError:
            continue
        removed.append(child)
    return removed


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` (so temporary files are removed).

    Outside the main thread (where Python cannot install signal handlers) the
    block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("terminated")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
