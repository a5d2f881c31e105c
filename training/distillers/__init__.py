"""Distillation methods, one module each, registered by name in :data:`DISTILLERS`.

A distiller wraps the student (and frozen teachers) and turns a batch into
named loss terms; the training loop only sums them with the configured
weights. Add a method by writing one module with a registered
:class:`~training.distillers.base.Distiller` subclass and importing it here.

======================== ======================================= ==========================
name                     loss terms                              teachers
======================== ======================================= ==========================
``none``                 dice, ce                                none
``logit_kd``             dice, ce, kl                            1 or more (mean target)
``seed_kd``              dice, lovasz, kl, feature               exactly 1
``multi_teacher_mean``   dice, lovasz, kl, feature               2 or more, plain average
``multi_teacher_adaptive`` dice, lovasz, kl, feature             2 or more, per-sample weights
``ta_ensemble``          dice, lovasz, kl                        2 or more TAs, fitted weights
``curriculum_experts``   dice, lovasz, kl, feature               2 or more, one expert per sample
``ctkd``                 dice, ce, kl                            1 or more; learned temperature
``self_distill``         dice, ce, kl                            exactly 1, previous generation
``cross_modality``       dice, ce, kl                            exactly 1, more channels (T2+ADC)
======================== ======================================= ==========================
"""

from __future__ import annotations

from .base import DISTILLERS, Distiller, Option, TrainingContext, build_distiller
from . import none, logit_kd, seed_kd, multi_teacher_mean, multi_teacher_adaptive  # noqa: F401,E402 (register)
from . import amal  # noqa: F401,E402
from . import ctkd  # noqa: F401,E402
from . import self_distill  # noqa: F401,E402
from . import ta_ensemble  # noqa: F401,E402
from . import curriculum_experts  # noqa: F401,E402
from . import cross_modality  # noqa: F401,E402

__all__ = ["DISTILLERS", "Distiller", "Option", "TrainingContext", "build_distiller"]
