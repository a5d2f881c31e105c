"""Pieces shared by the distillers: supervised terms, teacher targets, feature layers.

Option checks are :mod:`ProstateKDLib.checks`."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

FEATURE_LAYER_CHOICES = ("all", "bottleneck", "decoder")
FEATURE_NORMALIZE_CHOICES = ("none", "l2", "attention")
_FAMILIES = {"UNet": "unet", "DynUNet": "dynunet", "SegResNet": "segresnet"}


# ------------------------------------------------------------------ supervised terms
def dice_ce_terms(loss: Any, logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"dice", "ce"}`` of a MONAI ``DiceCELoss`` (float32 scores)."""
    scores, target = logits.float(), label.float()
    return {"dice": loss.dice(scores, target), "ce": loss.ce(scores, target)}


def dice_ce_loss() -> Any:
    """MONAI ``DiceCELoss``: soft Dice of the foreground over the whole batch + voxel cross-entropy."""
    from monai.losses import DiceCELoss

    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)


# ------------------------------------------------------------------ teacher targets
def mean_teacher_logits(teacher_logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """Logits ``z̄`` with ``softmax(z̄ / T) = mean_t softmax(z_t / T)``.

    ``z̄ = T · (logsumexp_t log_softmax(z_t / T) - log n)``, so
    :class:`~training.losses.SoftmaxKLDivLoss` with the same ``T`` compares the
    student with the plain average of the teachers' softened probabilities.
    """
    if len(teacher_logits) == 1:
        return teacher_logits[0]
    logs = torch.stack([F.log_softmax(z.float() / temperature, dim=1) for z in teacher_logits])
    return temperature * (torch.logsumexp(logs, dim=0) - math.log(len(teacher_logits)))


# ------------------------------------------------------------------ feature layers
def network_family(network: torch.nn.Module) -> str:
    """Registry name of a MONAI network family (``unet``, ``dynunet``, ``segresnet``).

    Raises:
        ValueError: not one of those; name the layers explicitly then.
    """
    family = _FAMILIES.get(type(network).__name__)
    if family is None:
        raise ValueError(
            f"no default feature layers for {type(network).__name__}; set distiller.student_layers "
            "and distiller.teacher_layers"
        )
    return family


def feature_layer_pair(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    which: str,
    student_layers: Sequence[str] | None,
    teacher_layers: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    """Student and teacher layers to match: the given lists, or the paired defaults.

    Defaults: :func:`~training.losses.default_feature_layers` of each network
    (``which``), paired with :func:`~training.losses.pair_feature_layers`.

    Raises:
        ValueError: lists of different lengths, or no defaults for a network.
    """
    from ..losses import default_feature_layers, pair_feature_layers

    s = list(student_layers) if student_layers else default_feature_layers(network_family(student), student, which)
    t = list(teacher_layers) if teacher_layers else default_feature_layers(network_family(teacher), teacher, which)
    if student_layers and teacher_layers:
        if len(s) != len(t):
            raise ValueError(
                f"student_layers and teacher_layers must have the same length, got {len(s)} and {len(t)}"
            )
        return s, t
    if which == "bottleneck":
        return s[:1], t[:1]
    if which == "decoder":
        n = min(len(s), len(t))
        return s[len(s) - n :], t[len(t) - n :]
    return pair_feature_layers(s, t)


def unique(names: Sequence[Sequence[str]]) -> list[str]:
    """Names of several lists, each once, in first-seen order."""
    seen: dict[str, None] = {}
    for group in names:
        for name in group:
            seen.setdefault(name, None)
    return list(seen)
