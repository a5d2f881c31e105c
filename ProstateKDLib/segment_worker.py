"""A warm segmentation worker: one process keeps the model loaded and segments file after file.

A front end (3D Slicer) pays Python start-up, imports and model load once, on the
first request; later requests pay only the work. The protocol is JSON lines:

* the worker (``python -m ProstateKDLib.segment_worker --model M --device D ...``)
  prints ``{"ready": {...}}`` once the model is loaded, then for each request line
  ``{"input": ..., "output": ..., "overwrite": false, "channel": null}`` on stdin it
  prints ``{"progress": [fraction, message]}`` lines and one ``{"result": summary}``
  or ``{"error": message, "exit_code": n}``; it exits when stdin closes (so it ends
  with the process that started it);
* :class:`WarmWorker` is the client: :meth:`WarmWorker.segment` sends one request and
  waits; cancelling kills the worker (instantly, whatever it is doing) and the next
  request starts a new one.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
from typing import Any, Callable, Sequence

from .errors import CancelledError, ProstateKDError

ProgressCallback = Callable[[float, str], None]
POLL_SECONDS = 0.05


def serve(args: argparse.Namespace, stdin: Any = None, stdout: Any = None) -> int:
    """Load the model, then answer requests from ``stdin`` until it closes."""
    from .inference import Segmenter
    from .memory import use_mmap_for_large_blocks

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout

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

    Args:
        command: how to start Python with ProstateKD importable (default: this interpreter).
        model, device, backend, threads, largest_component: as for ``prostatekd segment``.
    """

    def __init__(self, model: str | None = None, device: str = "auto", backend: str = "auto",
                 threads: int | None = None, largest_component: bool | None = None,
                 command: Sequence[str] | None = None) -> None:
        args = [*(command or [sys.executable]), "-m", "ProstateKDLib.segment_worker", "--device", device,
                "--backend", backend]
        if model is not None:
            args += ["--model", str(model)]
        if threads is not None:
            args += ["--threads", str(threads)]
        if largest_component is not None:
            args.append("--largest-component" if largest_component else "--no-largest-component")
        self.args = args
        self.process: subprocess.Popen | None = None
        self.ready: dict[str, Any] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        self.process = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._lines = queue.Queue()
        lines, stdout = self._lines, self.process.stdout

        def read() -> None:
            for line in stdout:  # type: ignore[union-attr]
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        self.ready = None

    def _next(self, cancelled: Callable[[], bool] | None) -> dict[str, Any]:
        while True:
            if cancelled is not None and cancelled():
                self.cancel()
                raise CancelledError("segmentation cancelled")
            try:
                line = self._lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait() if self.process else None
                self.process = None
                raise ProstateKDError(f"the segmentation worker stopped (exit code {code})")
            return json.loads(line)

    def segment(self, input_path: str, output_path: str, overwrite: bool = False, channel: int | None = None,
                progress: ProgressCallback | None = None,
                cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Segment one file; returns the summary ``prostatekd segment --json`` prints.

        Raises:
            ProstateKDError: the worker's error (with its exit code), or the worker died.
            CancelledError: ``cancelled()`` became true; the worker was killed.
        """
        if not self.running:
            self._start()
        while self.ready is None:
            message = self._next(cancelled)
            if "error" in message:
                self.close()
                error = ProstateKDError(message["error"])
                error.exit_code = int(message["exit_code"])
                raise error
            self.ready = message.get("ready")
        request = {"input": str(input_path), "output": str(output_path), "overwrite": overwrite, "channel": channel}
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        while True:
            message = self._next(cancelled)
            if "progress" in message and progress is not None:
                progress(float(message["progress"][0]), str(message["progress"][1]))
            elif "result" in message:
                return message["result"]
            elif "error" in message:
                error = ProstateKDError(message["error"])
                error.exit_code = int(message["exit_code"])
                raise error

    def cancel(self) -> None:
        """Kill the worker now; the next :meth:`segment` starts a fresh one."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process, self.ready = None, None

    def close(self, timeout: float = 10.0) -> None:
        """Let the worker exit (stdin closed); kill it if it does not within ``timeout``."""
        if self.process is None:
            return
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            self.process.kill()
            self.process.wait(timeout=10)
        self.process, self.ready = None, None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ProstateKDLib.segment_worker``: serve requests on stdin (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m ProstateKDLib.segment_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
    parser.add_argument("--threads", type=int, default=None)
    component = parser.add_mutually_exclusive_group()
    component.add_argument("--largest-component", dest="largest_component", action="store_true", default=None)
    component.add_argument("--no-largest-component", dest="largest_component", action="store_false")
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
