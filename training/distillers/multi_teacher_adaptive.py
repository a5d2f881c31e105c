"""``multi_teacher_adaptive``: the adaptive student of Ben Loussaief et al. (2023).

Several limit-trained teachers (e.g. one per site); each teacher's KL and
feature terms are weighted per sample by how reliable that teacher is on that
sample. For teacher ``t`` and sample ``b`` of the batch (``p_t = softmax(z_t)``,
``ŷ_t = argmax_c p_t``, label ``y``, ``V`` voxels, ``C`` classes, ``ε = 1``)::

    reliability  R_tb = (1/(C-1)) Σ_{c≥1} (2 |ŷ_t=c ∧ y=c| + ε) / (|ŷ_t=c| + |y=c| + ε)
                        (hard Dice of the teacher's prediction; reliability "dice", default)
                 or R_tb = -(1/V) Σ_v log p_t,y_v(v)   (negative cross-entropy; reliability "ce")
    confidence   K_tb = 1 - (1/V) Σ_v H(p_t(v)) / log C        (1: certain, 0: uniform)
    score        s_tb = R_tb + β · K_tb
    weight       w_tb = exp(s_tb / τ) / Σ_t' exp(s_t'b / τ)   (softmax over teachers)

and the loss (see :mod:`training.distillers.feature_kd`)::

    L = w_dice · Dice + w_lovasz · Lovász
        + w_kl · Σ_t Σ_b w_tb · T² · KL_b(p_t^T || p_s^T)
        + w_feature · Σ_t Σ_b w_tb · (1/L) Σ_l MSE_b(A_tl(f_s,l), f_t,l)

Weights are computed without gradients from the labels, so they exist only in
training; the exported student needs no teacher. Options: ``tau`` (τ, 0.1),
``confidence_weight`` (β, 0.2), ``reliability`` (``dice`` or ``ce``). After every
:meth:`MultiTeacherAdaptive.forward_train`, ``last_weights`` / ``last_reliability``
/ ``last_confidence`` hold the (B, T) tensors and ``stats`` the batch means
``weight_t<i>`` and ``reliability_t<i>`` (columns of the training log).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ProstateKDLib.checks import choice, non_negative_number, positive_number
from .feature_kd import FEATURE_OPTIONS, FeatureKD
from .base import DISTILLERS, Option

RELIABILITIES = ("dice", "ce")
DICE_SMOOTH = 1.0


def teacher_reliability(teacher_logits: torch.Tensor, label: torch.Tensor, kind: str = "dice") -> torch.Tensor:
    """``R_b`` of one teacher per sample: hard Dice (``dice``) or negative cross-entropy (``ce``).

    Args:
        teacher_logits: (B, C, *spatial).
        label: (B, 1, *spatial) class indices.

    Returns:
        (B,) float32 tensor.
    """
    if kind not in RELIABILITIES:
        raise ValueError(f"reliability must be one of {', '.join(RELIABILITIES)}, got {kind!r}")
    logits = teacher_logits.float()
    target = label.long()[:, 0]
    if kind == "ce":
        return -F.cross_entropy(logits, target, reduction="none").flatten(1).mean(1)
    prediction = logits.argmax(1)
    scores = []
    for c in range(1, logits.shape[1]):
        p, y = (prediction == c).flatten(1).float(), (target == c).flatten(1).float()
        scores.append((2 * (p * y).sum(1) + DICE_SMOOTH) / (p.sum(1) + y.sum(1) + DICE_SMOOTH))
    return torch.stack(scores).mean(0)


def teacher_confidence(teacher_logits: torch.Tensor) -> torch.Tensor:
    """``K_b = 1 - mean_v H(p(v)) / log C`` per sample, in [0, 1]; (B,) float32."""
    log_p = F.log_softmax(teacher_logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(1)  # (B, *spatial)
    return 1.0 - entropy.flatten(1).mean(1) / math.log(teacher_logits.shape[1])


def adaptive_teacher_weights(
    teacher_logits: list[torch.Tensor] | tuple[torch.Tensor, ...],
    label: torch.Tensor,
    tau: float = 0.1,
    confidence_weight: float = 0.2,
    reliability: str = "dice",
) -> dict[str, torch.Tensor]:
    """Per-teacher, per-sample weights ``w = softmax_t((R + β K) / τ)`` (see the module docstring).

    Returns:
        ``{"weights", "reliability", "confidence"}``, each (B, T) float32; every
        row of ``weights`` sums to 1.

    Raises:
        ValueError: no teachers, ``tau <= 0``, ``confidence_weight < 0`` or unknown ``reliability``.
    """
    if not teacher_logits:
        raise ValueError("need at least one teacher's logits")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    if not confidence_weight >= 0:
        raise ValueError(f"confidence_weight must be >= 0, got {confidence_weight!r}")
    with torch.no_grad():
        rel = torch.stack([teacher_reliability(z, label, reliability) for z in teacher_logits], dim=1)
        conf = torch.stack([teacher_confidence(z) for z in teacher_logits], dim=1)
        weights = torch.softmax((rel + confidence_weight * conf) / tau, dim=1)
    return {"weights": weights, "reliability": rel, "confidence": conf}


@DISTILLERS.register("multi_teacher_adaptive")
class MultiTeacherAdaptive(FeatureKD):
    """Dice + Lovász + per-sample reliability-weighted KL(T) and feature terms; 2 or more teachers."""

    name = "multi_teacher_adaptive"
    min_teachers = 2
    max_teachers = None
    options = {
        **FEATURE_OPTIONS,
        "tau": Option(0.1, positive_number, "softmax temperature τ of the teacher weights"),
        "confidence_weight": Option(0.2, non_negative_number, "β: weight of the teacher's confidence"),
        "reliability": Option("dice", choice(*RELIABILITIES), "dice (hard Dice vs label) or ce (-cross-entropy)"),
    }

    last_weights: torch.Tensor | None = None
    last_reliability: torch.Tensor | None = None
    last_confidence: torch.Tensor | None = None

    def teacher_weights(self, teacher_logits: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """``w_tb`` of the module docstring; also fills ``last_*`` and :attr:`stats`."""
        s = self.settings
        out = adaptive_teacher_weights(teacher_logits, label, s["tau"], s["confidence_weight"], s["reliability"])
        self.last_weights, self.last_reliability, self.last_confidence = (
            out["weights"], out["reliability"], out["confidence"]
        )
        self.stats = {
            **{f"weight_t{t}": out["weights"][:, t].mean() for t in range(len(teacher_logits))},
            **{f"reliability_t{t}": out["reliability"][:, t].mean() for t in range(len(teacher_logits))},
        }
        return out["weights"]

    def stat_names(self) -> list[str]:
        """``weight_t0 … weight_t{n-1}, reliability_t0 … reliability_t{n-1}``."""
        n = len(self.teachers)
        return [f"weight_t{t}" for t in range(n)] + [f"reliability_t{t}" for t in range(n)]
