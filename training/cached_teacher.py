"""A teacher whose outputs are cached probability maps rather than a network run at every step.

:class:`CachedTeacher` takes a teacher's place in a distiller's ``teachers`` list. It holds
no weights; the training loop hands the distiller each batch's maps
(``Distiller.teacher_maps``, shape (B, T_cached, X, Y, Z), foreground probabilities cropped
and augmented with the image), and :meth:`~training.distillers.base.Distiller.teacher_logits`
turns channel :attr:`CachedTeacher.channel` into two-class logits with
:func:`probability_logits`. Calling the module itself is an error: a method that needs a
teacher's *features* (or runs it on other inputs) needs the network.
"""

from __future__ import annotations

import torch

#: probabilities are clamped to [EPSILON, 1 - EPSILON] before the log.
EPSILON = 1e-4


def probability_logits(probability: torch.Tensor) -> torch.Tensor:
    """Two-class logits ``(log(1 - p), log p)`` of a (B, 1, *spatial) foreground probability.

    ``softmax`` of the result is ``(1 - p, p)`` (up to the clamp), so temperature-softened
    KL to a cached teacher compares with ``softmax(log p / T)`` as for a network teacher.
    """
    p = probability.float().clamp(EPSILON, 1.0 - EPSILON)
    return torch.cat([torch.log1p(-p), torch.log(p)], dim=1)


class CachedTeacher(torch.nn.Module):
    """Stands for an external (cached) teacher in a distiller; no parameters.

    Args:
        name: the teacher's name (for messages).
        channel: which channel of ``Distiller.teacher_maps`` holds this teacher's maps.
    """

    def __init__(self, name: str, channel: int) -> None:
        super().__init__()
        self.name, self.channel = str(name), int(channel)

    def logits_from(self, maps: torch.Tensor | None) -> torch.Tensor:
        """This teacher's two-class logits from a batch of maps (B, T, *spatial)."""
        if maps is None:
            raise RuntimeError(f"teacher {self.name!r} is a cached probability map, but the batch carries no maps")
        return probability_logits(maps[:, self.channel : self.channel + 1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: ARG002 - a network's signature
        raise RuntimeError(
            f"teacher {self.name!r} is a cached probability map and cannot be run as a network "
            "(this distiller needs a network teacher: its features or its outputs on other inputs)"
        )


def is_cached(teacher: torch.nn.Module) -> bool:
    """True for a :class:`CachedTeacher`."""
    return isinstance(teacher, CachedTeacher)
