"""One segmentation sent to a warm worker, polled like a background process (for a GUI timer).

:class:`WarmSegmentation` has the interface of
:class:`~ProstateKDLib.background.BackgroundSegmentation` (``start``, ``poll``,
``finished``, ``fraction``, ``message``, ``wait``, ``cancel``, ``result``,
``cleanup``), but instead of starting ``prostatekd segment`` for every volume it
hands the volume to a :class:`~ProstateKDLib.segment_worker.WarmWorker` that keeps
the model loaded: the first run pays Python start-up, imports and model load, later
ones only the work. The request waits in a thread, so the caller's thread stays free;
:meth:`~WarmSegmentation.cancel` kills the worker at once and, when the job ends,
a fresh worker is started so the next run is warm again.

Pure Python (no ``slicer``, ``qt`` or ``vtk``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .background import ERROR_MARKER, JobFolder, result_from_summary
from .errors import CancelledError, ProstateKDError
from .segment_worker import WarmWorker


class WarmSegmentation(JobFolder):
    """One volume segmented by ``worker`` (started on :meth:`start`).

    Args:
        image: the 3D SimpleITK volume (written to a temporary uncompressed NRRD).
        worker: the warm worker to send it to (shared by every job of a front end).
        restart_after_cancel: start a fresh worker once a cancelled job has ended.
    """

    def __init__(self, image: Any, worker: WarmWorker, restart_after_cancel: bool = True) -> None:
        self.image = image
        self.worker = worker
        self.restart_after_cancel = restart_after_cancel
        self.folder: Path | None = None
        self.fraction = 0.0
        self.message = ""
        self.summary: dict[str, Any] | None = None
        self.error: str | None = None
        self.exit_code = 0
        self.log: list[str] = []
        self.cancelled = False
        self.warm = False  # whether the worker was already running when the job started
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def process(self) -> Any:
        """The worker's process (None before the start or after a cancel)."""
        return self.worker.process

    def start(self) -> "WarmSegmentation":
        """Write the input, then send it to the worker from a thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("this segmentation was already started")
        try:
            self.write_input(self.image)
            self.warm = self.worker.ready is not None and self.worker.running
            self.worker.start()
        except BaseException:
            self.cleanup()
            raise
        self._thread = threading.Thread(target=self._run, name="ProstateKD-warm-job", daemon=True)
        self._thread.start()
        return self

    def _progress(self, fraction: float, message: str) -> None:
        with self._lock:
            self.fraction, self.message = min(max(fraction, 0.0), 1.0), message

    def _run(self) -> None:
        try:
            self.summary = self.worker.segment(
                str(self.input_path), str(self.output_path), overwrite=True,
                progress=self._progress, cancelled=lambda: self.cancelled,
            )
        except CancelledError as error:
            self._failure = error
        except ProstateKDError as error:
            self._failure = error
            self.error = str(error)
            self.exit_code = getattr(error, "exit_code", 1)
            self.log.append(f"{ERROR_MARKER}{error}")
        except BaseException as error:  # reported by result(), never lost in the thread
            self._failure = error
            self.error = f"{type(error).__name__}: {error}"
        if self.cancelled and self.restart_after_cancel:
            try:
                self.worker.start()  # warm again for the next run
            except Exception as error:  # the next run starts it (and reports the problem)
                self.log.append(f"could not restart the worker: {error}")

    def poll(self) -> list[str]:
        """Nothing to hand out line by line: progress is in :attr:`fraction` / :attr:`message`."""
        return []

    @property
    def finished(self) -> bool:
        """True once the request has ended (result, error or cancel)."""
        return self._thread is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> "WarmSegmentation":
        """Block until the request ends (tests, scripts); returns self."""
        if self._thread is None:
            raise RuntimeError("start() first")
        self._thread.join(timeout)
        return self

    def cancel(self) -> None:
        """Kill the worker now (whatever it is doing); the job then ends as cancelled."""
        self.cancelled = True
        self.worker.cancel()

    def result(self) -> Any:
        """The segmentation read back, as a ``SegmentationResult`` on the input grid.

        Raises:
            CancelledError: :meth:`cancel` was called.
            ProstateKDError: the worker's one-line error (``exit_code`` as the command's).
        """
        if self.cancelled:
            raise CancelledError("segmentation cancelled")
        if not self.finished:
            raise RuntimeError("the segmentation has not finished")
        if self._failure is not None:
            if isinstance(self._failure, ProstateKDError):
                raise self._failure
            raise ProstateKDError(f"segmentation failed: {self.error}") from self._failure
        return result_from_summary(self.summary or {}, self.output_path)

    def cleanup(self) -> None:
        """Cancel the request if it still runs and remove the temporary folder (the worker stays)."""
        if self._thread is not None and self._thread.is_alive():
            self.cancel()
            self._thread.join(15)
        self.remove_folder()
