"""``ctkd``: curriculum temperature KD (Li et al., "Curriculum Temperature for Knowledge
Distillation", AAAI 2023).

Loss, per batch::

    L = w_dice · Dice(p_s, y) + w_ce · CE(p_s, y) + w_kl · mean_c(T_c²) · KL(p̄_t^T || p_s^T)

with ``p^T = softmax(z / T)`` per voxel (``T`` one learnable scalar, or in
``temperature_mode: class`` one ``T_c`` per class dividing logit channel ``c`` of
student and teacher alike) and ``p̄_t^T`` the softened teacher probabilities, or
their plain average over several teachers. Dice and CE are MONAI's ``DiceCELoss``
terms as in ``none``; the KL is a mean over voxels.

The temperature is ``T = t_min + (t_max - t_min) · sigmoid(θ)``, so it never leaves
``[t_min, t_max]``; ``θ`` is a parameter of the distiller (trained by the same
optimizer, saved in checkpoints). ``T`` reaches the KL through a gradient reversal
layer (identity forward, gradient times ``-λ`` backward): minimising ``L`` moves the
student to *lower* the KL and the temperature to *raise* it, so distillation gets
harder as training goes on. ``λ`` follows an easy-to-hard cosine curriculum over
training progress ``p`` in [0, 1] (0 in the first epoch, 1 in the last)::

    λ = λ_max · (1 - cos(π · min(1, p / ramp))) / 2

Logged statistics: ``temperature`` (mean ``T``) and ``grl_lambda`` (``λ``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ProstateKDLib.checks import choice, non_negative_number, positive_number
from .parts import dice_ce_loss, dice_ce_terms
from .base import DISTILLERS, Distiller, Option

TEMPERATURE_MODES = ("global", "class")


def fraction(value: Any) -> float:
    """A finite number in (0, 1] (``ValueError("must be a number in (0, 1], got ...")``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"must be a number in (0, 1], got {value!r}")
    return float(value)


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``-λ`` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, value: torch.Tensor, lam: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lam = float(lam)
        return value.view_as(value)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.lam * grad, None


def reverse_gradient(value: torch.Tensor, lam: float) -> torch.Tensor:
    """``value`` unchanged, with its gradient multiplied by ``-lam`` on the way back."""
    return GradientReversal.apply(value, lam)


def cosine_lambda(progress: float, lambda_max: float, ramp: float) -> float:
    """``λ_max · (1 - cos(π · min(1, progress / ramp))) / 2``: 0 at the start, ``λ_max`` from ``ramp`` on."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress!r}")
    if not 0.0 < ramp <= 1.0:
        raise ValueError(f"ramp must be in (0, 1], got {ramp!r}")
    return lambda_max * (1.0 - math.cos(math.pi * min(1.0, progress / ramp))) / 2.0


def teacher_log_probs(teacher_logits: Sequence[torch.Tensor], temperature: torch.Tensor) -> torch.Tensor:
    """``log mean_t softmax(z_t / T)`` over the class channel (teacher logits detached)."""
    logs = [F.log_softmax(z.detach().float() / temperature, dim=1) for z in teacher_logits]
    if len(logs) == 1:
        return logs[0]
    return torch.logsumexp(torch.stack(logs), dim=0) - math.log(len(logs))


def tensor_temperature_kl(
    student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor], temperature: torch.Tensor
) -> torch.Tensor:
    """``mean_c(T_c²) · KL(p̄_t^T || p_s^T)``, averaged over voxels, for a tensor temperature.

    Args:
        student_logits: (B, C, *spatial).
        teacher_logits: one or more tensors of the same shape (their softened
            probabilities are averaged).
        temperature: shape (1,) (one ``T``) or (C,) (one ``T_c`` per class); it
            receives gradients (the logits of the teachers do not).

    Raises:
        ValueError: shapes differ, or the temperature has neither 1 nor C entries.
    """
    if not teacher_logits:
        raise ValueError("need at least one teacher's logits")
    shape = student_logits.shape
    if any(z.shape != shape for z in teacher_logits):
        shapes = [tuple(z.shape) for z in teacher_logits]
        raise ValueError(f"teacher logits {shapes} must have the student's shape {tuple(shape)}")
    if temperature.ndim != 1 or temperature.numel() not in (1, shape[1]):
        raise ValueError(f"temperature must have shape (1,) or ({shape[1]},), got {tuple(temperature.shape)}")
    t = temperature.float().reshape(1, -1, *([1] * (len(shape) - 2)))
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = teacher_log_probs(teacher_logits, t)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return kl.mean() * (temperature.float() ** 2).mean()


def _output_classes(student: torch.nn.Module, example_input: torch.Tensor | None) -> int:
    """Class channels of the student: its ``out_channels``, else one forward pass of ``example_input``."""
    classes = getattr(student, "out_channels", None)
    if isinstance(classes, int) and classes >= 2:
        return classes
    if example_input is None:
        raise ValueError(
            f"temperature_mode 'class' needs the student's class count: {type(student).__name__} has no "
            "out_channels and no example_input was given"
        )
    was_training = student.training
    student.eval()
    with torch.no_grad():
        classes = int(student(example_input).shape[1])
    student.train(was_training)
    return classes


@DISTILLERS.register("ctkd")
class CurriculumTemperatureKD(Distiller):
    """Logit KD with a learnable, adversarially trained temperature: terms ``dice``, ``ce``, ``kl``.

    Options: ``temperature_mode`` (``global`` or ``class``), ``t_min``, ``t_max``,
    ``t_init`` (strictly between them), ``lambda_max`` and ``ramp`` of the cosine
    schedule of the gradient-reversal strength. The temperature parameter ``theta``
    is a learned parameter of this module: :meth:`trainable_parameters` hands it to
    the optimizer and :meth:`learned_state_dict` saves it. Note that the optimizer's
    weight decay, if any, also pulls ``theta`` towards 0 (``T`` towards the middle
    of the range).

    Raises:
        ValueError: bad options (``t_min >= t_max``, ``t_init`` outside the range),
            besides the checks of :class:`~training.distillers.base.Distiller`.
    """

    name = "ctkd"
    loss_names = ("dice", "ce", "kl")
    default_weights = {"dice": 1.0, "ce": 1.0, "kl": 1.0}
    options = {
        "temperature_mode": Option("global", choice(*TEMPERATURE_MODES), "one temperature, or one per class"),
        "t_min": Option(1.0, positive_number, "lowest temperature"),
        "t_max": Option(10.0, positive_number, "highest temperature"),
        "t_init": Option(4.0, positive_number, "starting temperature, strictly between t_min and t_max"),
        "lambda_max": Option(1.0, non_negative_number, "final gradient-reversal strength λ_max"),
        "ramp": Option(0.5, fraction, "fraction of training over which λ rises (cosine) from 0 to λ_max"),
    }
    min_teachers = 1
    max_teachers = None

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
        example_input: torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        super().__init__(student, teachers, weights, **options)
        t_min, t_max, t_init = (self.settings[k] for k in ("t_min", "t_max", "t_init"))
        if not t_min < t_max:
            raise ValueError(f"option 't_min' must be less than t_max ({t_max:g}), got {t_min:g}")
        if not t_min < t_init < t_max:
            raise ValueError(f"option 't_init' must lie strictly between t_min ({t_min:g}) and t_max ({t_max:g}), "
                             f"got {t_init:g}")
        count = 1 if self.settings["temperature_mode"] == "global" else _output_classes(student, example_input)
        start = (t_init - t_min) / (t_max - t_min)
        self.theta = torch.nn.Parameter(torch.full((count,), math.log(start / (1.0 - start))))
        self.loss = dice_ce_loss()

    def temperature(self) -> torch.Tensor:
        """``T = t_min + (t_max - t_min) · sigmoid(θ)``: shape (1,) or (C,), differentiable in ``θ``."""
        t_min, t_max = self.settings["t_min"], self.settings["t_max"]
        return t_min + (t_max - t_min) * torch.sigmoid(self.theta)

    def grl_lambda(self) -> float:
        """Gradient-reversal strength ``λ`` at the current training progress."""
        return cosine_lambda(self.progress(), self.settings["lambda_max"], self.settings["ramp"])

    def stat_names(self) -> list[str]:
        """``temperature`` (mean T) and ``grl_lambda``."""
        return ["temperature", "grl_lambda"]

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"dice", "ce", "kl"}`` (unweighted)."""
        logits = self.student(image)
        lam = self.grl_lambda()
        temperature = self.temperature()
        kl = tensor_temperature_kl(logits, self.teacher_logits(image), reverse_gradient(temperature, lam))
        self.stats = {"temperature": temperature.detach().mean(), "grl_lambda": torch.tensor(lam)}
        return logits, {**dice_ce_terms(self.loss, logits, label), "kl": kl}
