"""``seed_kd``: single-teacher distillation of Ben Loussaief et al. (2023).

"Knowledge Distillation for Adaptive MRI Prostate Segmentation Based on
Limit-Trained Multi-Teacher Models", procedure 1 (one well-trained teacher)::

    L = w_dice · Dice(p_s, y) + w_lovasz · Lovász(p_s, y)
        + w_kl · T² · KL(p_t^T || p_s^T) + w_feature · (1/L) Σ_l MSE(A_l(f_s,l), f_t,l)

``p^T = softmax(z / T)`` per voxel; ``f_s,l``, ``f_t,l`` the student's and the
teacher's features at paired layers ``l`` (forward hooks; defaults: bottleneck
and decoder stages), ``A_l`` a learned 1x1x1 convolution (trained with the
student, exported never). See :mod:`training.distillers.feature_kd`.
"""

from __future__ import annotations

from .feature_kd import FeatureKD
from .base import DISTILLERS


@DISTILLERS.register("seed_kd")
class SeedKD(FeatureKD):
    """Dice + Lovász + KL(T) + feature distillation from exactly one teacher.

    Options: ``temperature`` (2), ``feature_layers`` (``all``), ``student_layers``,
    ``teacher_layers`` (null: defaults), ``feature_normalize`` (``none``).
    """

    name = "seed_kd"
    min_teachers = 1
    max_teachers = 1
