"""``multi_teacher_adaptive``: the adaptive student of Ben Loussaief et al. (2023).

Several limit-trained teachers (e.g. one per site); each teacher's KL and
feature terms are weighted per sample by how reliable that teacher is on that
sample. For teacher ``t`` and sample ``b`` of the batch (``p_t = softmax(z_t)``,
``ŷ_t = argmax_c p_t``, label ``y``, ``V`` voxels, ``C`` classes, ``ε = 1``)::

    reliability  R_tb = D_t(site of b)   (reliability "held_out", default): teacher t's mean hard
                        Dice on the run's *validation* cases of sample b's site, measured once
                        before training (mean over all validation cases for a site without
                        any). Validation cases are held out from every teacher of an index
                        fold, so a teacher is never rewarded for having seen a case: a teacher
                        that memorised its own training cases but generalises poorly gets a low
                        weight on them too. Label-free per sample; needs network teachers.
                 or R_tb = (1/(C-1)) Σ_{c≥1} (2 |ŷ_t=c ∧ y=c| + ε) / (|ŷ_t=c| + |y=c| + ε)
                        (hard Dice of the teacher's prediction on the training patch; "dice":
                        rewards memorisation when the patch is from the teacher's training data)
                 or R_tb = -(1/V) Σ_v log p_t,y_v(v)   (negative cross-entropy; reliability "ce")
    confidence   K_tb = 1 - (1/V) Σ_v H(p_t(v)) / log C        (1: certain, 0: uniform)
    score        s_tb = R_tb + β · K_tb
    weight       w_tb = exp(s_tb / τ) / Σ_t' exp(s_t'b / τ)   (softmax over teachers)

and the loss (see :mod:`training.distillers.feature_kd`)::

    L = w_dice · Dice + w_lovasz · Lovász
        + w_kl · Σ_t Σ_b w_tb · T² · KL_b(p_t^T || p_s^T)
        + w_feature · Σ_t Σ_b w_tb · (1/L) Σ_l MSE_b(A_tl(f_s,l), f_t,l)

Weights are computed without gradients from the labels, so they exist only in
training; the exported student needs no teacher. Options: ``tau`` (τ, 0.1: with held-out
Dice differences of 0.05-0.3 between teachers the weights stay soft, e.g. 0.62/0.38 for a
difference of 0.05), ``confidence_weight`` (β, 0.2), ``reliability`` (``held_out``, ``dice``
or ``ce``). :meth:`MultiTeacherAdaptive.describe` records the held-out Dice table and the
per-site weights it implies (``site_weights``, without the confidence term) in ``run.json``. After every
:meth:`MultiTeacherAdaptive.forward_train`, ``last_weights`` / ``last_reliability``
/ ``last_confidence`` hold the (B, T) tensors and ``stats`` the batch means
``weight_t<i>`` and ``reliability_t<i>`` (columns of the training log).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ProstateKDLib.checks import choice, non_negative_number, positive_number
from .feature_kd import FEATURE_OPTIONS, FeatureKD
from ..cached_teacher import is_cached
from .base import DISTILLERS, Option, TrainingContext
from .ta_ensemble import sliding_window_probabilities

RELIABILITIES = ("held_out", "dice", "ce")
LABEL_RELIABILITIES = ("dice", "ce")
DICE_SMOOTH = 1.0


def teacher_reliability(teacher_logits: torch.Tensor, label: torch.Tensor, kind: str = "dice") -> torch.Tensor:
    """``R_b`` of one teacher per sample: hard Dice (``dice``) or negative cross-entropy (``ce``).

    Args:
        teacher_logits: (B, C, *spatial).
        label: (B, 1, *spatial) class indices.

    Returns:
        (B,) float32 tensor.
    """
    if kind not in LABEL_RELIABILITIES:
        raise ValueError(f"reliability must be one of {', '.join(LABEL_RELIABILITIES)}, got {kind!r}")
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


ALL_SITES = "*"  # key of the held-out Dice over all validation cases


@torch.no_grad()
def held_out_site_dice(
    teachers: list[torch.nn.Module], volumes: Sequence[tuple[torch.Tensor, torch.Tensor]], sites: Sequence[str],
    patch_size: Sequence[int], device: torch.device,
) -> dict[str, list[float]]:
    """``{site: [Dice of each teacher]}`` on held-out volumes (mean per site; ``"*"``: all volumes).

    Hard Dice of the sliding-window argmax against the label, per volume (1 when both are empty).
    """
    if len(sites) != len(volumes):
        raise ValueError(f"need one site per validation volume, got {len(sites)} for {len(volumes)}")
    per_volume = []  # (volumes, teachers)
    probabilities = [sliding_window_probabilities(t, volumes, patch_size, device) for t in teachers]
    for v, (_, label) in enumerate(volumes):
        target = torch.as_tensor(label).bool()[0]
        row = []
        for probs in probabilities:
            pred = probs[v].argmax(0).bool()
            total = float(pred.sum() + target.sum())
            row.append(1.0 if total == 0 else 2.0 * float((pred & target).sum()) / total)
        per_volume.append(row)
    table = torch.tensor(per_volume, dtype=torch.float64)
    out = {ALL_SITES: table.mean(0).tolist()}
    for site in sorted(set(sites)):
        keep = torch.tensor([s == site for s in sites])
        out[site] = table[keep].mean(0).tolist()
    return out


def held_out_teacher_weights(
    teacher_logits: Sequence[torch.Tensor], reliability: torch.Tensor, tau: float = 0.1, confidence_weight: float = 0.2,
) -> dict[str, torch.Tensor]:
    """``w = softmax_t((R + β K) / τ)`` with a given (B, T) reliability (held-out Dice); see the module docstring."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    with torch.no_grad():
        conf = torch.stack([teacher_confidence(z) for z in teacher_logits], dim=1)
        weights = torch.softmax((reliability.float() + confidence_weight * conf) / tau, dim=1)
    return {"weights": weights, "reliability": reliability.float(), "confidence": conf}


@DISTILLERS.register("multi_teacher_adaptive")
class MultiTeacherAdaptive(FeatureKD):
    """Dice + Lovász + per-sample reliability-weighted KL(T) and feature terms; 2 or more teachers."""

    name = "multi_teacher_adaptive"
    min_teachers = 2
    max_teachers = None
    accepts_unlabelled = False  # label-based reliability needs the label of every sample
    needs_validation_data = True  # held-out reliability is measured on the validation cases
    options = {
        **FEATURE_OPTIONS,
        "tau": Option(0.1, positive_number, "softmax temperature τ of the teacher weights"),
        "confidence_weight": Option(0.2, non_negative_number, "β: weight of the teacher's confidence"),
        "reliability": Option("held_out", choice(*RELIABILITIES),
                              "held_out (Dice on the validation cases of the sample's site), dice (hard Dice "
                              "vs the patch label) or ce (-cross-entropy)"),
    }
    site_dice: dict[str, list[float]] | None = None  # held-out Dice per site, one value per teacher
    sample_sites: tuple[str, ...] = ()

    def prepare(self, context: TrainingContext) -> None:
        """Measure each teacher's Dice on the validation cases of every site (reliability ``held_out``)."""
        super().prepare(context)
        if self.settings["reliability"] != "held_out":
            return
        if any(is_cached(t) for t in self.teachers):
            raise ValueError("reliability 'held_out' runs the teachers on the validation cases: it needs network "
                             "teachers (set distiller.reliability: dice)")
        if not context.val_volumes:
            from ProstateKDLib.errors import DataError

            raise DataError("distiller 'multi_teacher_adaptive': reliability 'held_out' needs validation cases, and "
                            "this run has none (data.val_fraction > 0, an index fold with validation cases of the "
                            "kept sites, or reliability 'dice')")
        self.site_dice = held_out_site_dice(list(self.teachers), context.val_volumes, context.val_sites,
                                            context.patch_size, context.device)
        self.sample_sites = tuple(context.train_sites)

    def held_out_reliability(self, batch: int, device: torch.device) -> torch.Tensor:
        """(B, T) held-out Dice of each teacher for each sample's site."""
        if self.site_dice is None:
            raise RuntimeError("reliability 'held_out' is measured in prepare() (the training loop calls it with the "
                               "validation cases); call prepare() first or set reliability 'dice'")
        overall = self.site_dice[ALL_SITES]
        if self.batch_case_index is None or not self.sample_sites:
            rows = [overall] * batch
        else:
            rows = [self.site_dice.get(self.sample_sites[int(i)], overall) for i in self.batch_case_index]
        return torch.tensor(rows, dtype=torch.float32, device=device)

    last_weights: torch.Tensor | None = None
    last_reliability: torch.Tensor | None = None
    last_confidence: torch.Tensor | None = None

    def teacher_weights(self, teacher_logits: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """``w_tb`` of the module docstring; also fills ``last_*`` and :attr:`stats`."""
        s = self.settings
        if s["reliability"] == "held_out":
            out = held_out_teacher_weights(teacher_logits, self.held_out_reliability(label.shape[0], label.device),
                                           s["tau"], s["confidence_weight"])
        else:
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

    def describe(self) -> dict[str, Any]:
        """Method record; with held-out reliability also ``held_out_dice`` and ``site_weights`` per site."""
        out = super().describe()
        if self.site_dice is not None:
            tau = self.settings["tau"]
            out["held_out_dice"] = {site: [round(v, 4) for v in row] for site, row in self.site_dice.items()}
            out["site_weights"] = {
                site: [round(float(w), 4) for w in torch.softmax(torch.tensor(row) / tau, dim=0)]
                for site, row in self.site_dice.items()
            }
        return out
