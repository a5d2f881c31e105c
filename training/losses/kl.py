"""Temperature-softened KL divergence between teacher and student voxel probabilities.

Hinton, Vinyals, Dean (2015), "Distilling the Knowledge in a Neural Network":
the student matches the teacher's softened class distribution
``p^T = softmax(z / T)``; the loss is scaled by ``T²`` so that its gradients keep
their magnitude when ``T`` changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tensor_checks import as_float, check_reduction, check_tensor

__all__ = ["SoftmaxKLDivLoss"]


class SoftmaxKLDivLoss(nn.Module):
    """``T² · KL(p_teacher^T || p_student^T)`` over the class channel of every voxel.

    Per voxel ``v``: ``KL_v = Σ_c p_t,c(v) · (log p_t,c(v) - log p_s,c(v))`` with
    ``p = softmax(logits / T, dim=1)`` (computed with ``log_softmax``, so it is
    stable for large logits). The teacher logits are detached: gradients reach the
    student only.

    ``weights`` multiply the voxel values; with ``reduction="mean"`` the weighted sum
    is divided by the number of voxels (B · X · Y · Z), *not* by the sum of the
    weights, so per-teacher losses with per-sample weights that sum to 1 over the
    teachers add up to the weighted average over teachers, and a zero weight simply
    removes a sample. Set ``normalize_weights=True`` to divide by the sum of the
    (broadcast) weights instead (a masked mean, e.g. for a voxel mask).

    Args:
        temperature: softmax temperature ``T > 0``.
        reduction: ``"mean"`` (weighted mean over voxels and batch), ``"sum"`` or
            ``"none"`` (the weighted, ``T²``-scaled map of shape (B, 1, *spatial)).
        normalize_weights: with ``reduction="mean"`` and ``weights`` given, divide by
            the sum of the weights instead of the voxel count (0 if they sum to 0).

    Raises:
        ValueError: ``temperature`` not a finite number > 0, or invalid ``reduction``.

    Example:
        >>> kd = SoftmaxKLDivLoss(temperature=2.0)
        >>> loss = kd(student_logits, teacher_logits, weights=torch.tensor([0.7, 0.3]))
    """

    def __init__(self, temperature: float = 1.0, reduction: str = "mean", normalize_weights: bool = False) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        temperature = float(temperature)
        if not (temperature > 0.0 and temperature < float("inf")):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = temperature
        self.reduction = check_reduction(reduction)
        self.normalize_weights = bool(normalize_weights)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """KD loss of the student against one teacher.

        Args:
            student_logits: (B, C, *spatial) student logits.
            teacher_logits: teacher logits of the same shape (detached here).
            weights: optional non-negative weights, shape (B,) (per sample) or
                (B, 1, *spatial) (per voxel; spatial sizes may be 1 to broadcast).

        Raises:
            ValueError: shapes differ, C < 2, or ``weights`` has a wrong shape or
                negative entries.
        """
        student_logits = check_tensor("student_logits", student_logits)
        teacher_logits = check_tensor("teacher_logits", teacher_logits)
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                f"{tuple(teacher_logits.shape)} must have the same shape"
            )
        if student_logits.shape[1] < 2:
            raise ValueError(f"need C >= 2 class channels for a softmax, got {tuple(student_logits.shape)}")
        batch, spatial = student_logits.shape[0], tuple(student_logits.shape[2:])
        if weights is not None:
            weights = self._check_weights(weights, batch, spatial).to(student_logits.device)

        t = self.temperature
        log_p_student = F.log_softmax(as_float(student_logits) / t, dim=1)
        log_p_teacher = F.log_softmax(as_float(teacher_logits.detach()) / t, dim=1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True)
        kl = kl.sum(dim=1, keepdim=True) * (t * t)  # (B, 1, *spatial)
        if weights is not None:
            weights = weights.to(kl.dtype)
            kl = kl * weights
        if self.reduction == "none":
            return kl
        if self.reduction == "sum":
            return kl.sum()
        if weights is not None and self.normalize_weights:
            total = torch.broadcast_to(weights, kl.shape).sum()
            return kl.sum() / total.clamp(min=torch.finfo(total.dtype).tiny)
        return kl.mean()

    @staticmethod
    def _check_weights(weights: torch.Tensor, batch: int, spatial: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(weights, torch.Tensor):
            raise TypeError(f"weights must be a torch.Tensor or None, got {type(weights).__name__}")
        if hasattr(weights, "as_tensor"):  # MONAI MetaTensor -> plain tensor
            weights = weights.as_tensor()
        weights = as_float(weights)  # bool masks and integer weights too
        shape = tuple(weights.shape)
        if shape == (batch,):
            weights = weights.reshape(batch, 1, *([1] * len(spatial)))
        elif not (
            len(shape) == 2 + len(spatial)
            and shape[0] == batch
            and shape[1] == 1
            and all(w in (1, s) for w, s in zip(shape[2:], spatial))
        ):
            raise ValueError(
                f"weights must have shape ({batch},) or {(batch, 1, *spatial)} (spatial sizes may be 1), got {shape}"
            )
        if weights.numel() and bool((weights < 0).any()):
            raise ValueError("weights must be non-negative")
        return weights
