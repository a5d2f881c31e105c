"""TensorBoard scalars for a run, when ``torch.utils.tensorboard`` imports (the package is optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

TENSORBOARD_DIR = "tensorboard"


def open_tensorboard(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """``(writer or None, info for run.json)``; a missing ``tensorboard`` package is not an error."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as exc:  # ImportError, or a broken tensorboard install
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, {"enabled": False, "reason": f"torch.utils.tensorboard unavailable: {reason}"}
    return SummaryWriter(str(run_dir / TENSORBOARD_DIR)), {"enabled": True, "logdir": TENSORBOARD_DIR}


def write_scalars(writer: Any, row: Mapping[str, Any], epoch: int) -> None:
    """Add every numeric value of a log row (``train/<name>``; ``val/dice``) at ``epoch``."""
    if writer is None:
        return
    for name, value in row.items():
        if name in ("epoch", "val_case_dice") or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        tag = "val/dice" if name == "val_dice" else f"train/{name}"
        writer.add_scalar(tag, value, epoch)
    writer.flush()
