"""A warm segmentation worker: one process keeps the model loaded and segments file after file.

A front end (3D Slicer) pays Python start-up, imports and model load once, on the
first request; later requests pay only the work. The protocol is JSON lines:

* the worker (``python -m ProstateKDLib.segment_worker --model M --device D ...``)
  prints ``{"ready": {...}}`` once the model is loaded, then for each request line
  ``{"input": ..., "output": ..., "overwrite": false, "channel": null}`` on stdin it
  prints ``{"progress": [fraction, message]}`` lines and one ``{"result": summary}``
  or ``{"error": message, "exit_code": n}``; it exits when stdin closes, and with
  ``--parent-pid P`` also as soon as process ``P`` is gone (so it ends with 3D Slicer even
  when Slicer is killed, or a launcher sits between the two);
* :class:`WarmWorker` is the client: :meth:`WarmWorker.segment` sends one request and
  waits; cancelling kills the worker and everything it started (instantly, whatever it
  is doing) and the next request, or :meth:`WarmWorker.start`, starts a new one.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Sequence

from .errors import CancelledError, ProstateKDError, error_for_exit_code

ProgressCallback = Callable[[float, str], None]
#: ``launcher(args) -> Popen`` with text stdin and stdout pipes (stderr: a pipe or DEVNULL).
WorkerLauncher = Callable[[list], "subprocess.Popen[str]"]
POLL_SECONDS = 0.05
PARENT_CHECK_SECONDS = 1.0


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (psutil when installed; else a signal-0 probe, POSIX only)."""
    try:
        import psutil
    except ImportError:
        if os.name == "nt":  # os.kill would terminate it: assume alive (stdin closing still ends the worker)
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watch_parent(pid: int, interval: float = PARENT_CHECK_SECONDS) -> threading.Thread:
    """A daemon thread that ends this process (SIGTERM to itself) once process ``pid`` is gone."""

    def watch() -> None:
        while process_alive(pid):
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)  # the main thread may be blocked reading stdin

    thread = threading.Thread(target=watch, name="ProstateKD-parent-watch", daemon=True)
    thread.start()
    return thread


def default_worker_launcher(args: list) -> "subprocess.Popen[str]":
    """Start the worker with text stdin/stdout pipes and its stderr in a pipe (last lines kept)."""
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace", bufsize=1)


def kill_tree(process: "subprocess.Popen[str]") -> None:
    """Kill ``process`` and every process it started (e.g. python-real under a launcher); reap it.

    Without psutil only ``process`` itself is killed.
    """
    if process.poll() is not None:
        return
    try:
        import psutil
    except ImportError:
        process.kill()
        process.wait(timeout=10)
        return
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.kill()
    process.wait(timeout=10)
    psutil.wait_procs(children, timeout=5)


def serve(args: argparse.Namespace, stdin: Any = None, stdout: Any = None) -> int:
    """Load the model, then answer requests from ``stdin`` until it closes."""
    from .inference import Segmenter
    from .memory import use_mmap_for_large_blocks

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if getattr(args, "parent_pid", None):
        watch_parent(args.parent_pid)

    def send(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    use_mmap_for_large_blocks()
    try:
        segmenter = Segmenter(args.model, device=args.device, num_threads=args.threads, backend=args.backend,
                              largest_component=args.largest_component)
    except ProstateKDError as exc:
        send({"error": str(exc), "exit_code": exc.exit_code})
        return exc.exit_code
    send({"ready": {"model": f"{segmenter.bundle.meta.name} {segmenter.bundle.meta.version}",
                    "backend": segmenter.backend, "device": str(segmenter.device)}})
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            result = segmenter.segment_file(
                request["input"], request["output"], channel=request.get("channel"),
                overwrite=bool(request.get("overwrite", False)),
                progress=lambda fraction, message: send({"progress": [fraction, message]}),
            )
        except ProstateKDError as exc:
            send({"error": str(exc), "exit_code": exc.exit_code})
            continue
        except (ValueError, KeyError, TypeError) as exc:
            send({"error": f"bad request: {exc}", "exit_code": 2})
            continue
        summary = result.summary()
        summary["model_path"] = str(segmenter.bundle.path)
        send({"result": summary})
    return 0


class WarmWorker:
    """Client of one warm worker process (started on the first :meth:`segment`).

    Thread use: one thread at a time sends requests (:meth:`segment`); :meth:`cancel` may be
    called from any other thread while it waits.

    Args:
        command: how to start Python with ProstateKD importable (default: this interpreter).
        model, device, backend, threads, largest_component: as for ``prostatekd segment``.
        parent_pid: the worker exits once this process is gone (default: this process).
        launcher: ``launcher(args) -> Popen`` with stdin/stdout text pipes (3D Slicer passes one
            that sets Slicer's environment and working folder).
    """

    def __init__(self, model: str | None = None, device: str = "auto", backend: str = "auto",
                 threads: int | None = None, largest_component: bool | None = None,
                 command: Sequence[str] | None = None, parent_pid: int | None = None,
                 launcher: WorkerLauncher | None = None) -> None:
        args = [*(command or [sys.executable]), "-m", "ProstateKDLib.segment_worker", "--device", device,
                "--backend", backend, "--parent-pid", str(parent_pid or os.getpid())]
        if model is not None:
            args += ["--model", str(model)]
        if threads is not None:
            args += ["--threads", str(threads)]
        if largest_component is not None:
            args.append("--largest-component" if largest_component else "--no-largest-component")
        self.args = args
        self.launcher = launcher or default_worker_launcher
        self.process: subprocess.Popen | None = None
        self.ready: dict[str, Any] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=5)

    @property
    def running(self) -> bool:
        """Whether a worker process is alive (loading the model or ready)."""
        process = self.process
        return process is not None and process.poll() is None

    def start(self) -> None:
        """Start a worker process now (it loads the model meanwhile); no-op when one runs."""
        if self.running:
            return
        process = self.launcher(self.args)
        lines: queue.Queue[str | None] = queue.Queue()
        stderr_lines: deque[str] = deque(maxlen=5)

        def read() -> None:
            try:
                for line in process.stdout:  # type: ignore[union-attr]
                    lines.put(line)
            except (OSError, ValueError):  # pipe closed by a kill
                pass
            lines.put(None)

        def read_stderr() -> None:
            try:
                for line in process.stderr:  # type: ignore[union-attr]
                    if line.strip():
                        stderr_lines.append(line.strip())
            except (OSError, ValueError):
                pass

        threading.Thread(target=read, name="ProstateKD-worker-out", daemon=True).start()
        if process.stderr is not None:
            threading.Thread(target=read_stderr, name="ProstateKD-worker-err", daemon=True).start()
        self.process, self._lines, self._stderr, self.ready = process, lines, stderr_lines, None

    def _next(self, process: subprocess.Popen, lines: "queue.Queue[str | None]",
              cancelled: Callable[[], bool] | None) -> dict[str, Any]:
        while True:
            if cancelled is not None and cancelled():
                self.cancel()
                raise CancelledError("segmentation cancelled")
            try:
                line = lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if line is None:
                try:
                    code = process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    code = None
                if self.process is process:
                    self.process, self.ready = None, None
                if cancelled is not None and cancelled():
                    raise CancelledError("segmentation cancelled")
                detail = f": {self._stderr[-1]}" if self._stderr else ""
                raise ProstateKDError(f"the segmentation worker stopped (exit code {code}){detail}")
            try:
                return json.loads(line)
            except json.JSONDecodeError:  # a stray print of a library: not a message
                continue

    def segment(self, input_path: str, output_path: str, overwrite: bool = False, channel: int | None = None,
                progress: ProgressCallback | None = None,
                cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Segment one file; returns the summary ``prostatekd segment --json`` prints.

        Raises:
            ProstateKDError: the worker's error (with its exit code), or the worker died.
            CancelledError: ``cancelled()`` became true; the worker was killed.
        """
        self.start()
        process, lines = self.process, self._lines
        assert process is not None and process.stdin is not None
        while self.ready is None:
            message = self._next(process, lines, cancelled)
            if "error" in message:
                self.close()
                raise error_for_exit_code(int(message["exit_code"]), message["error"])
            self.ready = message.get("ready")
        request = {"input": str(input_path), "output": str(output_path), "overwrite": overwrite, "channel": channel}
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except (OSError, ValueError):  # killed meanwhile: _next reports how
            pass
        while True:
            message = self._next(process, lines, cancelled)
            if "progress" in message and progress is not None:
                progress(float(message["progress"][0]), str(message["progress"][1]))
            elif "result" in message:
                return message["result"]
            elif "error" in message:
                raise error_for_exit_code(int(message["exit_code"]), message["error"])

    def cancel(self) -> None:
        """Kill the worker and what it started, now; the next :meth:`segment` starts a fresh one."""
        process = self.process
        self.process, self.ready = None, None
        if process is not None:
            kill_tree(process)

    def close(self, timeout: float = 10.0) -> None:
        """Let the worker exit (stdin closed); kill it if it does not within ``timeout``."""
        process = self.process
        if process is None:
            return
        self.process, self.ready = None, None
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            kill_tree(process)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ProstateKDLib.segment_worker``: serve requests on stdin (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m ProstateKDLib.segment_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit once this process is gone")
    component = parser.add_mutually_exclusive_group()
    component.add_argument("--largest-component", dest="largest_component", action="store_true", default=None)
    component.add_argument("--no-largest-component", dest="largest_component", action="store_false")
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
