"""The allocator setting of the segment command."""

import subprocess
import sys

import pytest

from ProstateKDLib.memory import use_mmap_for_large_blocks


def test_threshold_is_checked():
    with pytest.raises(ValueError, match="threshold_bytes must be at least 4096, got 10"):
        use_mmap_for_large_blocks(10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_glibc_accepts_the_setting():
    # in a child process: the setting would slow the rest of the test session
    code = "from ProstateKDLib.memory import use_mmap_for_large_blocks as u; print(u())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
