"""``none``: the student alone, supervised by Dice + cross-entropy (MONAI ``DiceCELoss``)."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from .base import DISTILLERS, Distiller


@DISTILLERS.register("none")
class NoDistillation(Distiller):
    """Plain supervised training: terms ``dice`` and ``ce`` of MONAI's ``DiceCELoss``.

    Dice is the soft Dice of the foreground classes over the whole batch
    (``include_background=False, batch=True``), so patches without gland do
    not give a degenerate per-sample Dice; ``ce`` is the voxel-wise cross-entropy.
    """

    loss_names = ("dice", "ce")
    default_weights = {"dice": 1.0, "ce": 1.0}

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
    ) -> None:
        teachers = list(teachers)
        if teachers:
            raise ValueError(f"distiller 'none' takes no teachers, got {len(teachers)}")
        super().__init__(student, teachers, weights)
        from monai.losses import DiceCELoss

        self.loss = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"dice": ..., "ce": ...}`` (unweighted)."""
        logits = self.student(image)
        scores, target = logits.float(), label.float()
        return logits, {"dice": self.loss.dice(scores, target), "ce": self.loss.ce(scores, target)}
