"""The :class:`Distiller` base class and the :data:`DISTILLERS` registry."""

from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping

import torch

from ..registry import Registry

DISTILLERS: Registry[type["Distiller"]] = Registry("distiller")


class Distiller(torch.nn.Module):
    """A student and its (possibly no) teachers, computing named loss terms.

    Teachers are frozen (``requires_grad=False``) and stay in eval mode even
    when :meth:`train` is called, so their batch-norm statistics and dropout
    never change. Subclasses set :attr:`loss_names` and
    :attr:`default_weights` and implement :meth:`forward_train`.

    Args:
        student: the network being trained.
        teachers: trained networks to distil from (frozen here).
        weights: loss weight per term name; missing names take the defaults.
    """

    loss_names: ClassVar[tuple[str, ...]] = ()
    default_weights: ClassVar[Mapping[str, float]] = {}
    needs_teachers: ClassVar[bool] = False

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        self.teachers = torch.nn.ModuleList(list(teachers))
        for teacher in self.teachers:
            teacher.requires_grad_(False)
            teacher.eval()
        unknown = sorted(set(weights or {}) - set(self.loss_names))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no loss term {unknown[0]!r} (terms: {', '.join(self.loss_names)})"
            )
        self.weights = {**self.default_weights, **dict(weights or {})}

    def train(self, mode: bool = True) -> "Distiller":
        """Set the student's mode; teachers always stay in eval mode."""
        super().train(mode)
        for teacher in self.teachers:
            teacher.eval()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Student logits (what inference runs)."""
        return self.student(image)

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and the unweighted loss terms for a batch.

        Args:
            image: (B, C, X, Y, Z) float tensor.
            label: (B, 1, X, Y, Z) integer class indices.
        """
        raise NotImplementedError

    def total_loss(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the loss terms (the weights of :attr:`weights`)."""
        return sum(self.weights[name] * value for name, value in terms.items())  # type: ignore[return-value]

    @torch.no_grad()
    def teacher_logits(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every teacher for ``image`` (no gradients)."""
        return [teacher(image) for teacher in self.teachers]


def build_distiller(
    name: str,
    student: torch.nn.Module,
    teachers: Iterable[torch.nn.Module] = (),
    weights: Mapping[str, float] | None = None,
    **kwargs: Any,
) -> Distiller:
    """Build the registered distiller ``name`` (KeyError lists the known names)."""
    return DISTILLERS.get(name)(student, teachers, weights, **kwargs)
