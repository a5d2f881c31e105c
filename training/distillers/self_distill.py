"""``self_distill``: born-again networks (Furlanello et al., "Born-Again Neural Networks",
ICML 2018), i.e. self-distillation across generations.

The teacher is the previous generation of the student itself: the same network
class with the same parameter shapes, trained before (``training.self_distill``
trains generation 1 without a teacher, then each generation from the one before).

Loss, per batch::

    L = w_dice · Dice(p_s, y) + w_ce · CE(p_s, y) + w_kl · T² · KL(p_t^T || p_s^T)

with ``p^T = softmax(z / T)`` per voxel and ``p_t^T`` the previous generation's
softened probabilities; the terms are those of ``logit_kd`` with exactly one teacher.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from .base import DISTILLERS
from .logit_kd import LogitKD


def check_same_architecture(student: torch.nn.Module, teacher: torch.nn.Module) -> None:
    """ValueError unless ``teacher`` has the student's class and tensor names and shapes.

    The message names both networks and the first difference.
    """
    s_name, t_name = type(student).__name__, type(teacher).__name__
    prefix = "self_distill needs a teacher of the student's own architecture (a previous generation)"
    if type(student) is not type(teacher):
        raise ValueError(f"{prefix}: teacher is a {t_name}, student is a {s_name}")
    s_shapes = {k: tuple(v.shape) for k, v in student.state_dict().items()}
    t_shapes = {k: tuple(v.shape) for k, v in teacher.state_dict().items()}
    if s_shapes == t_shapes:
        return
    for key in [*s_shapes, *(k for k in t_shapes if k not in s_shapes)]:  # first difference, module order
        if s_shapes.get(key) != t_shapes.get(key):
            teacher_has = t_shapes.get(key, "no such tensor")
            student_has = s_shapes.get(key, "no such tensor")
            raise ValueError(
                f"{prefix}: teacher {t_name} and student {s_name} differ at {key!r} "
                f"(teacher {teacher_has}, student {student_has})"
            )


@DISTILLERS.register("self_distill")
class SelfDistill(LogitKD):
    """Born-again distillation from the previous generation: terms ``dice``, ``ce``, ``kl``.

    Options: ``temperature`` (T > 0, default 2).

    Raises:
        ValueError: not exactly one teacher, or a teacher whose class or
            parameter shapes differ from the student's.
    """

    name = "self_distill"
    min_teachers = 1
    max_teachers = 1

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
        example_input: torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        teachers = list(teachers)
        self.check_teacher_count(len(teachers))
        check_same_architecture(student, teachers[0])
        super().__init__(student, teachers, weights, example_input, **options)
