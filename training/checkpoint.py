"""Checkpoints: atomic writes, safe reads, and the complete random state of a run.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it
loads with ``torch.load(weights_only=True)`` and can never run code.
"""

from __future__ import annotations

import os
import random
import secrets
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ProstateKDLib.errors import OutputError

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"


def atomic_save(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a hidden temporary file in the same folder, fsync, then rename.

    A reader (or a run killed mid-write) sees either the old file or the new one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(dict(obj), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``.

    Raises:
        OutputError: ``checkpoint not found: <path>`` or ``cannot read checkpoint <path>: <reason>``.
    """
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, pickled code, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OutputError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(data, dict) or "model" not in data:
        raise OutputError(f"cannot read checkpoint {path}: it holds no model weights")
    return data


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """The state of every global generator, as plain Python values and tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Restore the generators saved by :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
