"""``logit_kd``: Hinton et al. (2015), "Distilling the Knowledge in a Neural Network".

Loss, per batch::

    L = w_dice · Dice(p_s, y) + w_ce · CE(p_s, y) + w_kl · T² · KL(p̄_t^T || p_s^T)

with ``p^T = softmax(z / T)`` per voxel and ``p̄_t^T`` the softened probabilities
of the single teacher, or their plain average over several teachers
(:func:`~training.distillers.parts.mean_teacher_logits`). Dice and CE are
MONAI's ``DiceCELoss`` terms as in ``none``; the KL term is
:class:`~training.losses.SoftmaxKLDivLoss` (mean over voxels).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from ..losses import SoftmaxKLDivLoss
from ProstateKDLib.checks import positive_number
from .parts import dice_ce_loss, dice_ce_terms, mean_teacher_logits
from .base import DISTILLERS, Distiller, Option


@DISTILLERS.register("logit_kd")
class LogitKD(Distiller):
    """Supervised Dice + CE plus temperature KL to the (mean) teacher: terms ``dice``, ``ce``, ``kl``.

    Options: ``temperature`` (T > 0, default 2).
    """

    name = "logit_kd"
    loss_names = ("dice", "ce", "kl")
    default_weights = {"dice": 1.0, "ce": 1.0, "kl": 1.0}
    options = {"temperature": Option(2.0, positive_number, "softmax temperature T of the KL term")}
    min_teachers = 1
    max_teachers = None
    accepts_cached_teachers = True
    accepts_unlabelled = True

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
        example_input: torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        super().__init__(student, teachers, weights, **options)
        self.loss = dice_ce_loss()
        self.kl = SoftmaxKLDivLoss(self.settings["temperature"])

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"dice", "ce", "kl"}`` (unweighted)."""
        logits = self.student(image)
        target = mean_teacher_logits(self.teacher_logits(image), self.kl.temperature)
        labelled = self.labelled_part(logits, label)
        if labelled is None:  # a batch of unlabelled images: only the teacher term
            zero = logits.sum() * 0.0
            supervised = {"dice": zero, "ce": zero}
        else:
            supervised = dice_ce_terms(self.loss, *labelled)
        return logits, {**supervised, "kl": self.kl(logits, target)}
