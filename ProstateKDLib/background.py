"""Run ``prostatekd segment`` in a child process, so a GUI stays responsive.

:class:`BackgroundSegmentation` writes the input volume to a temporary folder
(NRRD: exact geometry, no compression), starts ``python -m ProstateKDLib.cli
segment INPUT OUTPUT --json`` in a child process, collects its output lines in
a reader thread, and hands them out from :meth:`~BackgroundSegmentation.poll`
(call it from a GUI timer). Lines ``progress <fraction> <message>`` update
:attr:`~BackgroundSegmentation.fraction` / :attr:`~BackgroundSegmentation.message`;
the final JSON line is the run summary; ``prostatekd segment: error: ...`` is
the one-line error. :meth:`~BackgroundSegmentation.cancel` kills the whole
process tree (``psutil``). :meth:`~BackgroundSegmentation.result` reads the mask
back as a :class:`~ProstateKDLib.inference.SegmentationResult`.

This module is pure Python (no ``slicer``, ``qt`` or ``vtk``): 3D Slicer passes
its own ``launcher`` (``slicer.util.launchConsoleProcess``) and interpreter
(``PythonSlicer``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import CancelledError, error_for_exit_code

Launcher = Callable[[list[str], str], "subprocess.Popen[str]"]
PROGRESS_PREFIX = "progress "
ERROR_MARKER = "prostatekd segment: error: "


def library_parent() -> Path:
    """The folder holding ``ProstateKDLib`` (the child process runs there, so ``-m`` finds it)."""
    return Path(__file__).resolve().parent.parent


def default_launcher(args: list[str], cwd: str) -> "subprocess.Popen[str]":
    """Start ``args`` with stdout and stderr merged into one text pipe."""
    return subprocess.Popen(
        args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def parse_progress(line: str) -> tuple[float, str] | None:
    """``"progress 0.42 network: window 3/8"`` -> ``(0.42, "network: window 3/8")``; else None."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    parts = line[len(PROGRESS_PREFIX):].split(" ", 1)
    try:
        fraction = float(parts[0])
    except ValueError:
        return None
    return min(max(fraction, 0.0), 1.0), (parts[1].strip() if len(parts) > 1 else "")


def read_lines(stream: Any) -> Iterator[str]:
    """The lines of a child's output pipe, without line ends, until it closes.

    Reads bytes (the binary buffer under a text pipe, such as the one
    ``slicer.util.launchConsoleProcess`` opens with the locale's strict codec)
    and decodes each line as UTF-8 on its own: a line that does not decode is
    skipped and reading goes on, so the child never blocks on a full pipe.
    """
    raw = getattr(stream, "buffer", stream)
    try:
        while True:
            try:
                line = raw.readline()
            except UnicodeDecodeError:  # a text stream without a binary buffer
                continue
            if not line:
                return
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError:
                    continue
            yield line.rstrip("\r\n")
    except (OSError, ValueError):  # pipe closed by a kill
        return


class JobFolder:
    """The temporary folder of one background segmentation: ``input.nrrd`` in, ``mask.nrrd`` out."""

    folder: Path | None = None

    @property
    def input_path(self) -> Path:
        assert self.folder is not None, "start() first"
        return self.folder / "input.nrrd"

    @property
    def output_path(self) -> Path:
        assert self.folder is not None, "start() first"
        return self.folder / "mask.nrrd"

    def write_input(self, image: Any) -> Path:
        """Make the folder and write ``image`` there (NRRD: exact geometry, no compression)."""
        import SimpleITK as sitk

        self.folder = Path(tempfile.mkdtemp(prefix="ProstateKD-"))
        sitk.WriteImage(image, str(self.input_path), useCompression=False)
        return self.input_path

    def remove_folder(self) -> None:
        """Remove the folder and what is in it."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class BackgroundSegmentation(JobFolder):
    """One ``prostatekd segment`` run in a child process.

    Args:
        image: the 3D SimpleITK volume to segment (written to a temporary NRRD).
        model: bundle name or path passed to ``--model``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        largest_component: True/False passes ``--largest-component``/``--no-largest-component``;
            None follows the bundle.
        python: the interpreter (default: this one; in 3D Slicer ``PythonSlicer``).
        launcher: ``launcher(args, cwd) -> Popen`` with text stdout (stderr merged).
    """

    def __init__(
        self,
        image: Any,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        largest_component: bool | None = None,
        python: str | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        self.image = image
        self.model = model
        self.device = device
        self.largest_component = largest_component
        self.python = python or sys.executable
        self.launcher = launcher or default_launcher
        self.folder: Path | None = None
        self.process: "subprocess.Popen[str] | None" = None
        self.fraction = 0.0
        self.message = ""
        self.summary: dict[str, Any] | None = None
        self.error: str | None = None
        self.log: list[str] = []
        self.cancelled = False
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        self._reader: threading.Thread | None = None
        self._drained = False

    def command(self) -> list[str]:
        """The child's command line."""
        args = [self.python, "-u", "-m", "ProstateKDLib.cli", "segment",
                str(self.input_path), str(self.output_path), "--json", "--device", self.device]
        if self.model:
            args += ["--model", str(self.model)]
        if self.largest_component is not None:
            args.append("--largest-component" if self.largest_component else "--no-largest-component")
        return args + ["--progress"]

    def start(self) -> "BackgroundSegmentation":
        """Write the input and start the child process; returns self."""
        if self.process is not None:
            raise RuntimeError("this segmentation was already started")
        try:
            self.write_input(self.image)
            self.process = self.launcher(self.command(), str(library_parent()))
        except BaseException:
            self.cleanup()
            raise
        self._reader = threading.Thread(target=self._read, name="ProstateKD-output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            for line in read_lines(self.process.stdout):
                self._lines.put(line)
        finally:
            self._lines.put(None)

    def poll(self) -> list[str]:
        """Handle the output lines that arrived since the last call; returns them."""
        new: list[str] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._drained = True
                break
            new.append(line)
            self._handle(line)
        return new

    def _handle(self, line: str) -> None:
        progress = parse_progress(line)
        if progress is not None:
            self.fraction, self.message = progress
            return
        self.log.append(line)
        if ERROR_MARKER in line:
            self.error = line.split(ERROR_MARKER, 1)[1].strip()
        elif line.startswith("{"):
            try:
                self.summary = json.loads(line)
            except json.JSONDecodeError:
                pass

    @property
    def finished(self) -> bool:
        """True once the process has exited and all of its output was handled by :meth:`poll`."""
        if self.process is None:
            return False
        return self._drained and self.process.poll() is not None

    def wait(self, timeout: float | None = None) -> "BackgroundSegmentation":
        """Block until the process ends (tests, scripts); returns self."""
        if self.process is None:
            raise RuntimeError("start() first")
        self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        self.poll()
        return self

    def cancel(self) -> None:
        """Kill the child process and everything it started."""
        self.cancelled = True
        if self.process is None or self.process.poll() is not None:
            return
        import psutil

        try:
            parent = psutil.Process(self.process.pid)
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:  # e.g. python-real under the PythonSlicer launcher
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.kill()
        self.process.wait(timeout=10)  # reap it here, so its exit status stays known to Popen
        psutil.wait_procs(children, timeout=5)

    def result(self) -> Any:
        """The segmentation read back, as a ``SegmentationResult`` on the input grid.

        Raises:
            CancelledError: :meth:`cancel` was called.
            ProstateKDError: (the subclass matching the exit code) with the child's one-line error.
        """
        if self.cancelled:
            raise CancelledError("segmentation cancelled")
        if self.process is None or self.process.poll() is None:
            raise RuntimeError("the segmentation process has not finished")
        self.poll()
        code = self.process.returncode
        if code != 0 or self.summary is None:
            detail = self.error or _last_lines(self.log) or "no output"
            if self.error is None:
                detail = f"segmentation process failed (exit code {code}): {detail}"
            raise error_for_exit_code(code, detail)
        return result_from_summary(self.summary, self.output_path)

    def cleanup(self) -> None:
        """Kill the process if it still runs and remove the temporary folder."""
        if self.process is not None and self.process.poll() is None:
            self.cancel()
        self.remove_folder()


def result_from_summary(summary: dict[str, Any], mask_path: str | os.PathLike) -> Any:
    """A ``SegmentationResult`` from a run's JSON summary and the mask file it wrote."""
    import SimpleITK as sitk

    from .inference import SegmentationResult

    mask = sitk.ReadImage(str(mask_path))
    return SegmentationResult(
        mask=mask,
        model=summary.get("model", ""),
        device=summary.get("device", ""),
        input_size=tuple(summary.get("input_size", mask.GetSize())),
        input_spacing=tuple(summary.get("input_spacing_mm", mask.GetSpacing())),
        volume_ml=float(summary.get("volume_ml", 0.0)),
        warnings=list(summary.get("warnings", [])),
        timings=dict(summary.get("timings_s", {})),
    )


def _last_lines(lines: Sequence[str], count: int = 3) -> str:
    return " | ".join(line.strip() for line in lines[-count:] if line.strip())
