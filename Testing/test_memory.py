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


def test_skip_optional_imports_blocks_only_inside_and_only_new_modules():
    import importlib
    import sys

    from ProstateKDLib.memory import skip_optional_imports

    name = "wave"  # a standard-library module nothing here imports
    if name in sys.modules:
        pytest.skip(f"{name} already imported")
    with skip_optional_imports([name, "os"]) as blocked:
        assert blocked == [name]  # os is already imported: left alone
        with pytest.raises(ImportError):
            importlib.import_module(name)
        assert importlib.import_module("os") is sys.modules["os"]
    assert importlib.import_module(name).__name__ == name  # importable again afterwards
