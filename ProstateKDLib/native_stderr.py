"""Keep ITK's and MetaIO's own console messages off stderr while an image is read.

ITK prints warnings through its global warning display, and MetaIO writes
straight to the C++ ``std::cerr`` (``MetaImage: M_ReadElementsData: data not
read completely``). A command line that promises one line of error text must
catch both: the warning display is switched off and file descriptor 2 is
pointed at a temporary file for the duration, and the captured lines are
handed back so an error message can quote them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def captured_native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 inside the block; yields the list of lines (filled on exit).

    ITK's global warning display is off inside the block. When fd 2 cannot be
    redirected (it is closed, say), the block runs with only the warning
    display switched off and the list stays empty.
    """
    import SimpleITK as sitk

    lines: list[str] = []
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        saved = -1
    try:
        if saved < 0:
            yield lines
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", errors="replace")
                lines.extend(line.strip() for line in text.splitlines() if line.strip())
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def first_native_line(lines: list[str]) -> str:
    """The first captured line that says something (``""`` when none), for an error message."""
    for line in lines:
        if not line.startswith(("WARNING: In ", "ITK ERROR", "Exception thrown")):
            return line
    return ""
