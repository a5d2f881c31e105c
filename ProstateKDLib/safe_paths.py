"""Output paths that can never replace an input or leave the output folder.

Two rules of the command line: an output is never the input itself (by
name, through a symbolic link, or a file of the input DICOM series), and a
batch case name becomes a file name only when it cannot point elsewhere
(no path separators, no ``..``, no absolute or hidden names).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import OutputError

_UNSAFE_CHARACTERS = re.compile(r"[/\\\x00-\x1f:]")


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def check_not_input(output: str | os.PathLike, input_path: str | os.PathLike) -> None:
    """Refuse an ``output`` that is, or resolves to, the input file or a file of the input DICOM folder.

    Raises:
        OutputError: ``output <output> is the input file <input>; choose another output path``, or
            ``output <output> is a file of the input DICOM series <folder>; choose another output path``.
    """
    if not isinstance(output, (str, os.PathLike)) or not isinstance(input_path, (str, os.PathLike)):
        raise TypeError("output and input_path must be str or os.PathLike")
    out, source = Path(output).expanduser(), Path(input_path).expanduser()
    if not source.exists():
        return
    target = out.resolve()
    if source.is_dir():
        if target.parent == source.resolve() and target.is_file() and _is_dicom_file(target):
            raise OutputError(
                f"output {output} is a file of the input DICOM series {input_path}; choose another output path"
            )
        return
    same = target == source.resolve() or (target.exists() and os.path.samefile(target, source))
    if same:
        raise OutputError(f"output {output} is the input file {input_path}; choose another output path")


def unsafe_case_name(case: str) -> str | None:
    """Why ``case`` cannot be used in a file name (None when it can)."""
    if not isinstance(case, str):
        raise TypeError(f"case must be a str, got {type(case).__name__}")
    if not case:
        return "it is empty"
    if case in (".", "..") or case.startswith("."):
        return "it starts with '.'"
    if _UNSAFE_CHARACTERS.search(case):
        return "it holds a path separator or control character"
    if Path(case).is_absolute() or os.path.isabs(case):
        return "it is an absolute path"
    return None


def check_inside(path: Path, folder: Path) -> None:
    """Raise OutputError when ``path`` (resolved) is not directly inside ``folder`` (resolved)."""
    if Path(path).resolve().parent != Path(folder).resolve():
        raise OutputError(f"output {path} would be written outside the output folder {folder}")
