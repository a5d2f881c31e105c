"""The warm worker: one process, model loaded once; later requests skip start-up; cancel kills it."""

from __future__ import annotations

import os
import time

import pytest

from ProstateKDLib.errors import CancelledError, ProstateKDError
from ProstateKDLib.segment_worker import WarmWorker

from conftest import ROOT

SAMPLE = ROOT / "Resources" / "Samples" / "PhantomCase01.nii.gz"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_second_request_skips_start_up(tmp_path):
    worker = WarmWorker(device="cpu", threads=1)
    try:
        start = time.perf_counter()
        first = worker.segment(str(SAMPLE), str(tmp_path / "a.nii.gz"))
        first_s = time.perf_counter() - start
        pid = worker.process.pid
        seen = []
        start = time.perf_counter()
        second = worker.segment(str(SAMPLE), str(tmp_path / "b.nii.gz"), progress=lambda f, m: seen.append(f))
        second_s = time.perf_counter() - start
        assert worker.process.pid == pid and worker.ready["backend"] == "onnx"
        assert first["volume_ml"] == second["volume_ml"] > 5 and (tmp_path / "b.nii.gz").is_file()
        assert seen[0] == 0.0 and seen[-1] == 1.0
        # the second pays only the work: the same process, no new start-up (times recorded, not asserted:
        # speed targets live in the benchmarks)
        assert first_s > 0 and second_s > 0
        with pytest.raises(ProstateKDError, match="input not found") as error:
            worker.segment(str(tmp_path / "missing.nii.gz"), str(tmp_path / "c.nii.gz"))
        assert error.value.exit_code == 3 and worker.process.pid == pid  # an error keeps the worker
    finally:
        process = worker.process
        worker.close()
    assert process.returncode == 0  # it exits by itself once its stdin closes


def test_cancel_kills_and_the_next_request_restarts(tmp_path):
    worker = WarmWorker(device="cpu", threads=1)
    worker.segment(str(SAMPLE), str(tmp_path / "a.nii.gz"))
    pid = worker.process.pid
    progress = []
    with pytest.raises(CancelledError):
        worker.segment(str(SAMPLE), str(tmp_path / "b.nii.gz"), progress=lambda f, m: progress.append(f),
                       cancelled=lambda: len(progress) > 1)
    assert not alive(pid) and not (tmp_path / "b.nii.gz").exists()
    result = worker.segment(str(SAMPLE), str(tmp_path / "c.nii.gz"))
    assert worker.process.pid != pid and result["volume_ml"] > 5
    worker.close()


def test_bad_model_is_reported():
    worker = WarmWorker(model="no-such-model", device="cpu")
    with pytest.raises(ProstateKDError, match="model 'no-such-model' not found") as error:
        worker.segment(str(SAMPLE), "/tmp/never-written.nii.gz")
    assert error.value.exit_code == 5 and not worker.running


def test_worker_ends_when_its_parent_is_killed(tmp_path):
    """Slicer killed (no chance to close the pipe politely): the worker notices and exits."""
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from ProstateKDLib.segment_worker import WarmWorker\n"
        "worker = WarmWorker(device='cpu', threads=1)\n"
        f"worker.segment({str(SAMPLE)!r}, {str(tmp_path / 'a.nii.gz')!r})\n"
        "print(worker.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=str(ROOT), stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert alive(pid) and (tmp_path / "a.nii.gz").is_file()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        try:  # reap it if it became our zombie (it is the killed parent's child, re-parented to init)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    assert not alive(pid), "the worker outlived its parent"


def test_parent_watch_ends_the_process_even_with_its_stdin_open():
    """``--parent-pid``: a launcher between Slicer and the worker may keep the pipe open; the pid decides."""
    import subprocess
    import sys

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    watcher = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom ProstateKDLib.segment_worker import watch_parent\n"
         f"watch_parent({parent.pid}, interval=0.1)\ntime.sleep(600)\n"],
        cwd=str(ROOT), stdin=subprocess.PIPE)
    try:
        time.sleep(1.0)
        assert watcher.poll() is None  # the parent lives: it waits
        parent.kill()
        parent.wait(timeout=10)
        watcher.wait(timeout=10)  # ended by itself (SIGTERM to itself)
    finally:
        for process in (parent, watcher):
            if process.poll() is None:
                process.kill()
                process.wait()
