"""Dice loss with the project's defaults (MONAI's ``DiceLoss``; not re-implemented)."""

from __future__ import annotations

from typing import Any

__all__ = ["dice_loss"]


def dice_loss(
    include_background: bool = False,
    to_onehot_y: bool = True,
    softmax: bool = True,
    batch: bool = True,
    **kwargs: Any,
) -> Any:
    """``monai.losses.DiceLoss`` for logits (B, C, *spatial) and labels (B, 1, *spatial).

    Defaults as in the ``none`` distiller: softmax over the class channel, labels
    one-hot encoded, background excluded, and intersection/union summed over the
    batch (``batch=True``) so patches without gland do not give a degenerate
    per-sample Dice. Other keyword arguments go to ``DiceLoss`` unchanged.

    Raises:
        TypeError: an argument ``DiceLoss`` does not take.
    """
    from monai.losses import DiceLoss

    return DiceLoss(
        include_background=include_background, to_onehot_y=to_onehot_y, softmax=softmax, batch=batch, **kwargs
    )
