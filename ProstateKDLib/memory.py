"""Keep the peak memory of a segmentation process low.

glibc keeps freed large blocks in its heap for reuse; with the many
short-lived tensors of preprocessing and sliding-window inference the heap
fragments and the resident size grows well past what is live. Serving blocks
of 4 MiB and more from ``mmap`` returns them to the system when freed, at
the price of fresh (zeroed) pages for every large tensor. Measured on
2026-11-22, default student, 320x320x24 phantom volume, 2 CPU threads:

    mmap threshold   peak RSS   network time
    glibc default    ~640 MB    ~0.50 s
    4 MiB            ~593 MB    ~1.00 s
    64 KiB           ~584 MB    ~1.12 s

4 MiB keeps the whole command under both targets (600 MB, 2 s in process).
About 455 MB of the peak is the imports themselves (torch ~200 MB,
SimpleITK ~95 MB, scipy and matplotlib pulled in by MONAI ~95 MB).

``import monai`` imports every MONAI submodule, and with them the optional
packages they can use (matplotlib, PIL, nibabel, scipy.signal) whenever these
are installed, which they are for training and plots. Segmentation uses none
of them: :func:`skip_optional_imports` around the first ``import monai`` of
the ``prostatekd segment`` process makes MONAI see them as absent, 58 MB less
(measured 2026-11-29: 453 -> 395 MB after importing torch, SimpleITK and
MONAI; the whole command 620 -> about 560 MB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

UNUSED_BY_SEGMENTATION = ("matplotlib", "PIL", "scipy.signal")  # not nibabel: MONAI's Orientation uses it
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def use_mmap_for_large_blocks(threshold_bytes: int = 4 * 1024 * 1024) -> bool:
    """Ask glibc to serve blocks of ``threshold_bytes`` and more by ``mmap``.

    Meant for processes that ProstateKD owns (the ``prostatekd`` command), not
    for a host application such as 3D Slicer. Returns False where this is not
    glibc (macOS, Windows, musl) and nothing was changed.
    """
    if threshold_bytes < 4096:
        raise ValueError(f"threshold_bytes must be at least 4096, got {threshold_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, threshold_bytes))


@contextmanager
def skip_optional_imports(names: Sequence[str] = UNUSED_BY_SEGMENTATION) -> Iterator[list[str]]:
    """While active, importing one of ``names`` (not yet imported) raises ImportError.

    Meant for the first ``import monai`` of a process that only segments: MONAI's
    optional imports then record those packages as missing instead of loading them.
    Afterwards the packages import normally again (MONAI keeps them marked missing,
    which only matters for MONAI features segmentation does not use). Yields the
    names that were blocked (those already imported are left alone).
    """
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system raises ImportError
    try:
        yield blocked
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
