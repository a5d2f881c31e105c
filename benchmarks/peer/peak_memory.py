"""Peak resident memory of the current process; shared by the worker scripts of both environments.

Imported as a top-level module: the workers run as scripts from this folder (their folder is
``sys.path[0]``), the torch worker in the project's environment and the TAPS runner in the peer's.
"""

from __future__ import annotations

import resource
import sys


def rss_mb() -> float:
    """Peak resident memory of this process so far (MB).

    Linux: ``VmHWM`` of /proc/self/status. Not ``ru_maxrss``: Linux carries the parent's
    resident size at fork over into the child's ``ru_maxrss`` through exec, so a worker
    started by a 500 MB parent would never report less than 500 MB.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, kB elsewhere
