"""Argument checks shared by the loss modules."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is ``"mean"``, ``"sum"`` or ``"none"``; ValueError otherwise."""
    value = getattr(reduction, "value", reduction)  # accept monai.utils.LossReduction members
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return str(value)


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` to a tensor of per-item losses."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def check_tensor(name: str, value: object, min_ndim: int = 3) -> torch.Tensor:
    """``value`` must be a tensor of shape (B, C, *spatial) with at least one spatial dim."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have shape (B, C, *spatial), got {tuple(value.shape)}")
    return value


def check_labels(labels: object, logits: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """Labels of shape (B, 1, *spatial) matching ``logits`` (B, C, *spatial); returned as long."""
    labels = check_tensor(name, labels)
    if hasattr(labels, "as_tensor"):  # MONAI MetaTensor -> plain tensor
        labels = labels.as_tensor()
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"{name} must have shape (B, 1, *spatial) = {expected} to match input {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        as_long = labels.long()
        if not torch.equal(as_long.to(labels.dtype), labels):
            raise ValueError(f"{name} must hold integer class indices, got non-integer values")
        return as_long
    return labels.long()


def as_float(x: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16/integer tensors (stable under autocast), float64 kept."""
    return x if x.dtype == torch.float64 else x.float()
