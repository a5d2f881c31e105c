"""``run.json``: what produced a run (code version, packages, machine, seeds, data)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import secrets
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "monai", "SimpleITK", "numpy")


def now_iso() -> str:
    """Current local time, ISO 8601 with offset, to the second."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def git_commit(path: Path = REPO_ROOT) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout holding ``path``, or None."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status)} if sha else None


def package_versions() -> dict[str, str | None]:
    """Versions of python, prostatekd and the numeric packages."""
    from ProstateKDLib import __version__

    versions: dict[str, str | None] = {"python": platform.python_version(), "prostatekd": __version__}
    for name in PACKAGES:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module else None
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = None
        versions[name] = str(version) if version is not None else None
    return versions


def machine_info(device: Any = None) -> dict[str, Any]:
    """Host name, platform, CPU count, torch threads and the training device."""
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
    }
    if device is not None and getattr(device, "type", "") == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def write_json(data: Mapping[str, Any], path: Path) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def start_session(run_dir: Path, info: Mapping[str, Any], resumed_from: int | None) -> dict[str, Any]:
    """Create ``run.json`` (or add a session to it on resume) and return its contents."""
    path = run_dir / "run.json"
    session = {
        "started": now_iso(),
        "resumed_from_epoch": resumed_from,
        "git": git_commit(),
        "versions": package_versions(),
        "machine": info.get("machine"),
    }
    if resumed_from is not None and path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        data.setdefault("sessions", []).append(session)
    else:
        data = {**info, "started": session["started"], "git": session["git"],
                "versions": session["versions"], "sessions": [session]}
    write_json(data, path)
    return data
