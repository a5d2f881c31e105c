"""``cross_modality``: a multi-channel teacher distilled into a student that sees fewer channels.

After CMEDL (Jiang et al. 2022, "Cross-modality educed distillation learning"): a
teacher trained on T2 *and* ADC teaches a student that sees T2 only, so the
deployed model needs only the T2 series.

Loss, per batch (``x`` the full multi-channel patch, ``x_S`` its channels
``student_channels``)::

    L = w_dice · Dice(p_s, y) + w_ce · CE(p_s, y) + w_kl · T² · KL(p_t^T || p_s^T)

    p_s = softmax(student(x_S)),  p_t^T = softmax(teacher(x) / T)

The teacher gets every channel of the image; the student only the selected ones
(:meth:`CrossModalityKD.select_student_input`), so the student's logits never
depend on the other channels.

Training loop contract: the loop hands :meth:`~Distiller.forward_train` the full
multi-channel image. Anything that runs ``distiller.student`` directly (the
validation of :mod:`training.train`) must first pass the image through
:meth:`~training.distillers.base.Distiller.student_input` (identity for every
other method, the channel selection here); :meth:`CrossModalityKD.forward`
accepts either the full image or the already-selected student channels.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from ..losses import SoftmaxKLDivLoss
from ProstateKDLib.checks import positive_number
from .parts import dice_ce_loss, dice_ce_terms
from .base import DISTILLERS, Distiller, Option

DEFAULT_STUDENT_CHANNELS = (0,)  # T2 in the Decathlon prostate layout (0: T2, 1: ADC)


def channel_list(value: Any) -> list[int]:
    """A non-empty list of unique channel indices >= 0."""
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(f"must be a non-empty list of unique channel indices >= 0, got {value!r}")
    return [int(v) for v in value]


def first_conv_in_channels(network: torch.nn.Module) -> int:
    """``in_channels`` of the first convolution of ``network`` (module order).

    Raises:
        ValueError: the network has no convolution.
    """
    for module in network.modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            return int(module.in_channels)
    raise ValueError(f"cannot tell the input channels of {type(network).__name__}: it has no convolution")


@DISTILLERS.register("cross_modality")
class CrossModalityKD(Distiller):
    """Multi-channel teacher (e.g. T2 + ADC) to a student on a channel subset (T2): terms ``dice``, ``ce``, ``kl``.

    Options: ``temperature`` (T > 0, default 2); ``student_channels`` (input
    channel indices the student sees, default ``[0]`` = T2).

    Raises:
        ValueError: not exactly one teacher; a teacher with fewer than 2 input
            channels; ``student_channels`` not fewer than the teacher's channels or
            out of its range; a student whose first convolution does not take
            ``len(student_channels)`` channels.
    """

    name = "cross_modality"
    loss_names = ("dice", "ce", "kl")
    default_weights = {"dice": 1.0, "ce": 1.0, "kl": 1.0}
    options = {
        "temperature": Option(2.0, positive_number, "softmax temperature T of the KL term"),
        "student_channels": Option(
            list(DEFAULT_STUDENT_CHANNELS), channel_list, "input channels the student sees (default [0] = T2)"
        ),
    }
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
        super().__init__(student, teachers, weights, **options)
        channels = list(self.settings["student_channels"])
        self.teacher_channels = first_conv_in_channels(self.teachers[0])
        student_in = first_conv_in_channels(self.student)
        if self.teacher_channels < 2:
            raise ValueError(
                f"distiller 'cross_modality' needs a teacher that sees several input channels (e.g. T2 and ADC); "
                f"the teacher takes {self.teacher_channels}"
            )
        if max(channels) >= self.teacher_channels:
            raise ValueError(
                f"option 'student_channels' {channels} is out of range: the teacher takes "
                f"{self.teacher_channels} channels (0-{self.teacher_channels - 1})"
            )
        if len(channels) >= self.teacher_channels:
            raise ValueError(
                f"option 'student_channels' {channels} must select fewer channels than the teacher's "
                f"{self.teacher_channels}"
            )
        if student_in != len(channels):
            raise ValueError(
                f"the student takes {student_in} input channel{'s' if student_in != 1 else ''} but "
                f"option 'student_channels' selects {len(channels)} ({channels}); set model.in_channels "
                f"to {len(channels)}"
            )
        self.student_channels = channels
        self.loss = dice_ce_loss()
        self.kl = SoftmaxKLDivLoss(self.settings["temperature"])

    # ------------------------------------------------------------ channel selection
    def _check_full(self, image: torch.Tensor) -> None:
        if image.dim() < 2 or image.shape[1] != self.teacher_channels:
            got = image.shape[1] if image.dim() >= 2 else "no channel axis"
            raise ValueError(
                f"distiller 'cross_modality' needs the full {self.teacher_channels}-channel image "
                f"(the teacher's input), got {got} channel(s)"
            )

    def select_student_input(self, image: torch.Tensor) -> torch.Tensor:
        """The student's channels ``image[:, student_channels]`` of a full (B, C_t, ...) image.

        Raises:
            ValueError: ``image`` does not have the teacher's channel count.
        """
        self._check_full(image)
        return image[:, self.student_channels]

    def student_input(self, image: torch.Tensor) -> torch.Tensor:
        """What the student sees of a batch: the selected channels of a full image; an already
        selected (B, len(student_channels), ...) image unchanged.

        Raises:
            ValueError: any other channel count.
        """
        if image.dim() >= 2 and image.shape[1] == len(self.student_channels):
            return image
        return self.select_student_input(image)

    # ------------------------------------------------------------ the computation
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Student logits for the full image or for the student's channels alone."""
        return self.student(self.student_input(image))

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"dice", "ce", "kl"}`` (unweighted) for a full (B, C_t, ...) image."""
        self._check_full(image)
        logits = self.student(image[:, self.student_channels])
        target = self.teacher_logits(image)[0]
        return logits, {**dice_ce_terms(self.loss, logits, label), "kl": self.kl(logits, target)}
