"""Run one measurement cell (model x input x threads x device) in a fresh process; Dice of masks."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import ModelSpec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@dataclass(frozen=True)
class Cell:
    """What one fresh worker process measures."""

    model: ModelSpec
    size: str  # input name
    threads: int
    device: str
    repeats: int  # warm runs after the cold one

    @property
    def name(self) -> str:
        return f"{self.model.key}:{self.size}:{self.threads}:{self.device}"


def _env(threads: int, peer: bool) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if peer:  # the peer's venv must see nothing of the project's environment
        for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(key, None)
    return env


def run_cell(cell: Cell, image: Path, workdir: Path, peer_python: Path | None, timeout: float) -> dict[str, Any]:
    """Run the worker for ``cell`` on ``image``; return its JSON plus the process wall time."""
    mask = workdir / f"mask_{cell.model.key}_{cell.size}_{cell.threads}_{cell.device.replace(':', '')}.nii.gz"
    common = ["--input", str(image), "--mask", str(mask), "--threads", str(cell.threads),
              "--repeats", str(cell.repeats), "--device", cell.device]
    if cell.model.role == "peer":
        if peer_python is None:
            raise RuntimeError("no peer environment")
        command = [str(peer_python), str(HERE / "taps_runner.py"), "run", *common]
    else:
        command = [sys.executable, str(HERE / "torch_worker.py"), "--bundle", str(cell.model.bundle), *common]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    busy_before, children_before = _busy_seconds(), _children_cpu_seconds()
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                              env=_env(cell.threads, cell.model.role == "peer"))
    except subprocess.TimeoutExpired:
        return {"errors": [f"timed out after {timeout:.0f} s"], "runs": []}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"errors": [f"worker exited with {done.returncode}: {' | '.join(tail)}"], "runs": []}
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    raw["process_wall_s"] = wall
    raw["load_average_1min_before"] = load_before
    others = (_busy_seconds() - busy_before) - (_children_cpu_seconds() - children_before)
    raw["other_processes_cores"] = max(others, 0.0) / wall  # CPU used by everything else meanwhile
    return raw


def _busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (user, nice, system, irq, softirq)."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (the workers)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(cell: Cell, raw: dict[str, Any], input_info: dict[str, Any]) -> dict[str, Any]:
    """One result row: times (cold, warm median), network-only time, memory, cost as run."""
    runs = raw.get("runs") or []
    info = cell.model.info
    row: dict[str, Any] = {
        "model": cell.model.key, "label": cell.model.label, "role": cell.model.role,
        "size": cell.size, "input_size": input_info["size"], "input_voxels": _prod(input_info["size"]),
        "threads": cell.threads, "device": raw.get("device", cell.device), "warm_runs": max(len(runs) - 1, 0),
        "parameters": info.get("parameters"), "gflops_320x320x24": info.get("gflops_320x320x24"),
        "errors": raw.get("errors", []),
    }
    if not runs:
        return row
    cold, warm = runs[0], runs[1:]
    windows = cold.get("windows")
    per_window = info.get("gflops_per_window")
    row.update({
        "import_s": raw.get("import_s"),
        "model_load_s": raw.get("load_s"),
        "model_load_per_call_s": _median([r["model_load"] for r in runs if "model_load" in r]),
        "cold_s": raw.get("load_s", 0.0) + cold["total"],
        "warm_median_s": _median([r["total"] for r in warm]),
        "warm_runs_s": [round(r["total"], 3) for r in warm],
        "network_cold_s": cold.get("network_forward"),
        "network_warm_median_s": _median([r["network_forward"] for r in warm]),
        "first_call_in_fresh_process_s": (raw.get("import_s") or 0.0) + raw.get("load_s", 0.0) + cold["total"],
        "process_wall_s": raw.get("process_wall_s"),
        "load_average_1min_before": raw.get("load_average_1min_before"),
        "other_processes_cores": raw.get("other_processes_cores"),
        "windows": windows,
        "gflops_as_run": windows * per_window if windows and per_window else None,
        "peak_rss_mb": raw.get("peak_rss_mb"),
        "rss_after_imports_and_load_mb": raw.get("baseline_rss_mb"),
        "gpu_peak_mb": raw.get("gpu_peak_mb"),
        "mask": raw.get("mask"),
        "warnings": raw.get("warnings", []),
    })
    if raw.get("providers"):
        row["providers"] = raw["providers"]
    basis = warm or [cold]
    stages = [k for k, v in cold.items() if isinstance(v, float) and k not in ("total", "volume_ml")]
    row["stages_median_s"] = {k: _median([r[k] for r in basis if r.get(k) is not None]) for k in stages}
    row["time_s"] = row["warm_median_s"] if row["warm_median_s"] is not None else row["cold_s"]
    row["time_basis"] = "warm median" if row["warm_median_s"] is not None else "cold (no warm run)"
    return row


def _prod(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def mask_volume_ml(mask_path: str | None) -> float | None:
    """Foreground volume (ml) of a mask file."""
    if not mask_path or not Path(mask_path).is_file():
        return None
    import numpy as np
    import SimpleITK as sitk

    mask = sitk.ReadImage(str(mask_path))
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * float(np.prod(mask.GetSpacing())) / 1000


def dice(mask_path: str | None, reference_path: str | None) -> float | None:
    """Dice of two binary masks on the reference's grid (nearest-neighbour resampled if grids differ)."""
    if not mask_path or not reference_path or not Path(mask_path).is_file() or not Path(reference_path).is_file():
        return None
    import numpy as np
    import SimpleITK as sitk

    mask, reference = sitk.ReadImage(str(mask_path)), sitk.ReadImage(str(reference_path))
    same = (mask.GetSize() == reference.GetSize()
            and np.allclose(mask.GetSpacing(), reference.GetSpacing(), atol=1e-4)
            and np.allclose(mask.GetOrigin(), reference.GetOrigin(), atol=1e-3)
            and np.allclose(mask.GetDirection(), reference.GetDirection(), atol=1e-4))
    if not same:
        mask = sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    a = sitk.GetArrayViewFromImage(mask) > 0
    b = sitk.GetArrayViewFromImage(reference) > 0
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else None
