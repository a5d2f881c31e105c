"""``none``: the student alone, supervised by Dice + cross-entropy (MONAI ``DiceCELoss``).

Loss: ``L = w_dice · Dice(p_s, y) + w_ce · CE(p_s, y)`` (no teacher).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from .parts import dice_ce_loss, dice_ce_terms
from .base import DISTILLERS, Distiller


@DISTILLERS.register("none")
class NoDistillation(Distiller):
    """Plain supervised training: terms ``dice`` and ``ce`` of MONAI's ``DiceCELoss``.

    Dice is the soft Dice of the foreground classes over the whole batch
    (``include_background=False, batch=True``), so patches without gland do
    not give a degenerate per-sample Dice; ``ce`` is the voxel-wise cross-entropy.
    """

    name = "none"
    loss_names = ("dice", "ce")
    default_weights = {"dice": 1.0, "ce": 1.0}
    min_teachers = 0
    max_teachers = 0

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

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"dice": ..., "ce": ...}`` (unweighted)."""
        logits = self.student(image)
        return logits, dice_ce_terms(self.loss, logits, label)
