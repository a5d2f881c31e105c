"""``multi_teacher_mean``: several teachers, plain average (the baseline of the adaptive student).

As ``seed_kd`` but with ``n`` teachers, each weighted ``1/n``::

    L = w_dice · Dice + w_lovasz · Lovász
        + w_kl · T² · KL(p̄^T || p_s^T),   p̄^T = (1/n) Σ_t p_t^T
        + w_feature · (1/n) Σ_t (1/L) Σ_l MSE(A_tl(f_s,l), f_t,l)

The KL target is the average of the teachers' softened probabilities. Features
of independently trained teachers are not channel-aligned, so their average
would mean nothing: each teacher has its own adapters and the feature *losses*
are averaged. Reference: Ben Loussaief et al. (2023), the multi-teacher setting
without adaptive weights; see :mod:`training.distillers.feature_kd`.
"""

from __future__ import annotations

import torch

from .parts import mean_teacher_logits
from .feature_kd import FeatureKD
from .base import DISTILLERS


@DISTILLERS.register("multi_teacher_mean")
class MultiTeacherMean(FeatureKD):
    """Dice + Lovász + KL(T) to the mean teacher + mean feature loss; 2 or more teachers."""

    name = "multi_teacher_mean"
    min_teachers = 2
    max_teachers = None

    def kl_term(self, logits: torch.Tensor, teacher_logits: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        """KL to the plain average of the teachers' softened probabilities."""
        return self.kl(logits, mean_teacher_logits(teacher_logits, self.kl.temperature))
