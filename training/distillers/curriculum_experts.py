"""``curriculum_experts``: per-sample choice of one expert from a capacity ladder, easy to hard.

The teachers are a ladder of capacities (e.g. the smallest teaching assistant …
the full teacher), ordered here by parameter count, ascending: expert 0 is the
smallest, expert ``n-1`` the largest, whatever the config's order. Curriculum
learning (Bengio et al. 2009, "Curriculum Learning", ICML) over the experts:
a small expert's targets are easier for a small student to follow (the capacity
gap of Mirzadeh et al. 2020, "Improved Knowledge Distillation via Teacher
Assistant", AAAI), so easy samples and early epochs use small experts and hard
samples, as training goes on, the large ones.

Per sample ``b`` a difficulty ``d_b ∈ [0, 1]`` (no gradients)::

    disagreement (default)  d_b = 1 - mean_{i<j} HardDice(argmax z_i, argmax z_j)   over all n experts
    student_loss            d_b = 1 - SoftDice(p_s, y)                              the student's own Dice

(Dice: mean over foreground classes, smoothing 1, per sample). With training
progress ``P ∈ [0, 1]`` (0 in the first epoch, 1 in the last), ramp ``r`` and
``c_0`` start experts, the number of unlocked experts and the chosen expert are::

    c   = c_0 + floor((n - c_0) · min(1, P / r))        (n when r = 0)
    k_b = min(c - 1, floor(c · d_b))

and the loss (the terms of :mod:`training.distillers.feature_kd`, with the
one-hot weights ``w_tb = [t = k_b]``: KL and feature terms from the chosen expert only)::

    L = w_dice · Dice + w_lovasz · Lovász
        + w_kl · Σ_b T² · KL_b(p_{k_b}^T || p_s^T)
        + w_feature · Σ_b (1/L) Σ_l MSE_b(A_{k_b}l(f_s,l), f_{k_b},l)

Stats per batch: ``expert_mean`` (mean k_b), ``unlocked`` (c), ``difficulty`` (mean d_b).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F

from ProstateKDLib.checks import choice
from .feature_kd import FEATURE_OPTIONS, FeatureKD
from .base import DISTILLERS, Option
from .multi_teacher_adaptive import DICE_SMOOTH, teacher_reliability

DIFFICULTIES = ("disagreement", "student_loss")


# ------------------------------------------------------------------ option checks
def fraction(value: Any) -> float:
    """A number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"must be a number in [0, 1], got {value!r}")
    return float(value)


def positive_int(value: Any) -> int:
    """An integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an integer >= 1, got {value!r}")
    return int(value)


# ------------------------------------------------------------------ difficulty and selection
def disagreement_difficulty(teacher_logits: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``1 - mean pairwise hard Dice`` of the experts' argmax predictions, per sample; (B,) in [0, 1].

    Raises:
        ValueError: fewer than 2 experts.
    """
    if len(teacher_logits) < 2:
        raise ValueError(f"disagreement needs at least 2 experts, got {len(teacher_logits)}")
    with torch.no_grad():
        dice = [
            teacher_reliability(teacher_logits[i], teacher_logits[j].argmax(1, keepdim=True), "dice")
            for i in range(len(teacher_logits)) for j in range(i + 1, len(teacher_logits))
        ]
        return (1.0 - torch.stack(dice).mean(0)).clamp(0.0, 1.0)


def student_loss_difficulty(student_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``1 - soft Dice`` of the student per sample (foreground classes, smoothing 1); (B,) in [0, 1]."""
    with torch.no_grad():
        p = torch.softmax(student_logits.float(), dim=1)[:, 1:].flatten(2)
        y = F.one_hot(label.long()[:, 0], student_logits.shape[1]).movedim(-1, 1)[:, 1:].flatten(2).float()
        dice = (2 * (p * y).sum(2) + DICE_SMOOTH) / (p.sum(2) + y.sum(2) + DICE_SMOOTH)
        return (1.0 - dice.mean(1)).clamp(0.0, 1.0)


def unlocked_experts(progress: float, n_experts: int, ramp: float, start_experts: int = 1) -> int:
    """``c = c_0 + floor((n - c_0) · min(1, P / r))``: experts available at training progress ``P``.

    Raises:
        ValueError: ``n_experts < 1``, ``start_experts`` outside [1, n], ``ramp`` or ``progress`` outside [0, 1].
    """
    if n_experts < 1:
        raise ValueError(f"need n_experts >= 1, got {n_experts}")
    if not 1 <= start_experts <= n_experts:
        raise ValueError(f"start_experts must be in [1, {n_experts}], got {start_experts}")
    if not 0 <= ramp <= 1:
        raise ValueError(f"ramp must be in [0, 1], got {ramp}")
    if not 0 <= progress <= 1:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    share = 1.0 if ramp == 0 else min(1.0, progress / ramp)
    return start_experts + int(math.floor((n_experts - start_experts) * share + 1e-9))


def select_experts(
    difficulty: torch.Tensor, progress: float, n_experts: int, ramp: float = 0.5, start_experts: int = 1
) -> torch.Tensor:
    """Expert index per sample: ``k_b = min(c - 1, floor(c · d_b))`` with ``c`` unlocked experts.

    Args:
        difficulty: (B,) values in [0, 1] (clamped).
        progress: training progress in [0, 1].
        n_experts: experts on the ladder (0 = smallest).
        ramp: share of training over which all experts unlock.
        start_experts: experts unlocked at the start.

    Returns:
        (B,) int64 indices in [0, c - 1].
    """
    c = unlocked_experts(progress, n_experts, ramp, start_experts)
    index = torch.floor(c * difficulty.float().clamp(0.0, 1.0)).long()
    return index.clamp(max=c - 1)


def parameter_count(network: torch.nn.Module) -> int:
    """All parameters of ``network`` (trainable or frozen)."""
    return sum(p.numel() for p in network.parameters())


@DISTILLERS.register("curriculum_experts")
class CurriculumExperts(FeatureKD):
    """Dice + Lovász + KL(T) and feature terms from one expert per sample, chosen by difficulty on a curriculum.

    The teachers are sorted by parameter count (ascending, stable): ``expert_order[k]``
    is the config index of expert ``k`` and ``expert_sizes[k]`` its parameter count.

    Options (besides the feature options of ``seed_kd``): ``difficulty``
    (``disagreement`` or ``student_loss``), ``ramp`` (share of training until all
    experts are unlocked, 0.5), ``start_experts`` (unlocked at the start, 1).

    Raises:
        ValueError: ``start_experts`` larger than the number of teachers, or bad options.
    """

    name = "curriculum_experts"
    min_teachers = 2
    max_teachers = None
    options = {
        **FEATURE_OPTIONS,
        "difficulty": Option(
            "disagreement", choice(*DIFFICULTIES),
            "disagreement (1 - mean pairwise Dice of the experts) or student_loss (1 - the student's soft Dice)",
        ),
        "ramp": Option(0.5, fraction, "share of training over which all experts unlock (0: all from the start)"),
        "start_experts": Option(1, positive_int, "experts unlocked in the first epoch (smallest first)"),
    }

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
        example_input: torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        teachers = list(teachers)
        sizes = [parameter_count(t) for t in teachers]
        order = sorted(range(len(teachers)), key=lambda i: sizes[i])
        super().__init__(student, [teachers[i] for i in order], weights, example_input, **options)
        self.expert_order = order
        self.expert_sizes = [sizes[i] for i in order]
        if self.settings["start_experts"] > len(self.teachers):
            raise ValueError(
                f"option 'start_experts' must be at most the number of teachers ({len(self.teachers)}), "
                f"got {self.settings['start_experts']}"
            )
        self.last_experts: torch.Tensor | None = None
        self.last_difficulty: torch.Tensor | None = None
        self._student_logits: torch.Tensor | None = None

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"dice", "lovasz", "kl", "feature"}``; also fills :attr:`stats`."""
        if self.settings["difficulty"] != "student_loss":
            return super().forward_train(image, label)

        def keep(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self._student_logits = output.detach()

        handle = self.student.register_forward_hook(keep)
        try:
            return super().forward_train(image, label)
        finally:
            handle.remove()
            self._student_logits = None

    def difficulty(self, teacher_logits: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """``d_b`` of the module docstring, (B,) in [0, 1]."""
        if self.settings["difficulty"] == "disagreement":
            return disagreement_difficulty(teacher_logits)
        if self._student_logits is None:
            raise RuntimeError("difficulty 'student_loss' needs the student's logits of this batch")
        return student_loss_difficulty(self._student_logits, label)

    def teacher_weights(self, teacher_logits: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """One-hot (B, T): the expert chosen for each sample; also fills ``last_*`` and :attr:`stats`."""
        s = self.settings
        n = len(teacher_logits)
        difficulty = self.difficulty(teacher_logits, label)
        experts = select_experts(difficulty, self.progress(), n, s["ramp"], s["start_experts"])
        unlocked = unlocked_experts(self.progress(), n, s["ramp"], s["start_experts"])
        self.last_experts, self.last_difficulty = experts, difficulty
        self.stats = {
            "expert_mean": experts.float().mean(),
            "unlocked": torch.tensor(float(unlocked)),
            "difficulty": difficulty.mean(),
        }
        return F.one_hot(experts, n).float().to(label.device)

    def stat_names(self) -> list[str]:
        """``expert_mean``, ``unlocked``, ``difficulty``."""
        return ["expert_mean", "unlocked", "difficulty"]

    def describe(self) -> dict[str, Any]:
        """The base description plus the expert ladder (config index and size of each expert)."""
        ladder = [{"expert": k, "teacher": i, "parameters": n}
                  for k, (i, n) in enumerate(zip(self.expert_order, self.expert_sizes))]
        return {**super().describe(), "experts": ladder}
