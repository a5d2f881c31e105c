"""Shared machinery of the feature-distilling methods (``seed_kd`` and the multi-teacher ones).

Loss terms (all unweighted here; the config's ``distiller.weights`` scale them)::

    dice    = Dice(p_s, y)                      MONAI DiceLoss, foreground, batch-wise
    lovasz  = Lovász-Softmax(p_s, y)            Berman et al. 2018, per image
    kl      = Σ_t Σ_b w_tb · T² · KL_b(p_t^T || p_s^T)        (mean over voxels)
    feature = Σ_t Σ_b w_tb · (1/L) Σ_l MSE_b(A_tl(f_s,l), f_t,l)   (mean over batch)

``w_tb`` are per-teacher, per-sample weights that sum to 1 over teachers (one
teacher: 1; subclasses choose them), ``A_tl`` is a learned 1x1x1 adapter from
the student's channels of layer ``l`` to teacher ``t``'s. Features are read with
forward hooks (:class:`~training.losses.FeatureHooks`) on the default
layers of each network family or on configured layers.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from ..losses import FeatureDistillationLoss, FeatureHooks, LovaszSoftmaxLoss, SoftmaxKLDivLoss, dice_loss
from ProstateKDLib.checks import choice, module_names, positive_number
from .parts import FEATURE_LAYER_CHOICES, FEATURE_NORMALIZE_CHOICES, feature_layer_pair, unique
from .base import Distiller, Option
from ..cached_teacher import is_cached

FEATURE_OPTIONS: dict[str, Option] = {
    "temperature": Option(2.0, positive_number, "softmax temperature T of the KL term"),
    "feature_layers": Option(
        "all", choice(*FEATURE_LAYER_CHOICES),
        "default layers to match: all (bottleneck + decoder stages), bottleneck or decoder",
    ),
    "student_layers": Option(None, module_names, "student module names (overrides feature_layers)"),
    "teacher_layers": Option(None, module_names, "teacher module names, one per student layer"),
    "feature_normalize": Option(
        "none", choice(*FEATURE_NORMALIZE_CHOICES),
        "none: MSE of adapted features; l2: channel-normalised; attention: spatial attention maps",
    ),
}


class FeatureKD(Distiller):
    """Dice + Lovász + KL(T) + feature distillation from one or more teachers.

    Args:
        student, teachers, weights: see :class:`~training.distillers.base.Distiller`.
        example_input: one input patch (1, C, *patch) used once to size the adapters.
        **options: ``temperature``, ``feature_layers``, ``student_layers``,
            ``teacher_layers``, ``feature_normalize`` (plus a subclass's own).

    Raises:
        ValueError: ``example_input`` missing, layers unknown, or bad options.
    """

    loss_names = ("dice", "lovasz", "kl", "feature")
    accepts_cached_teachers = True  # with weight feature 0: cached teachers have no features
    accepts_unlabelled = True
    default_weights = {"dice": 1.0, "lovasz": 1.0, "kl": 1.0, "feature": 1.0}
    options = FEATURE_OPTIONS

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
        example_input: torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        super().__init__(student, teachers, weights, **options)
        if not isinstance(example_input, torch.Tensor) or example_input.ndim != 5:
            raise ValueError(
                f"distiller {self.name!r} needs example_input, one (1, C, X, Y, Z) patch, to size its feature adapters"
            )
        s = self.settings
        self.dice = dice_loss()
        self.lovasz = LovaszSoftmaxLoss()
        self.kl = SoftmaxKLDivLoss(s["temperature"])
        self.uses_features = not any(is_cached(t) for t in self.teachers)
        if not self.uses_features and self.weights["feature"] > 0:
            raise ValueError(f"a cached (external) teacher has no features: set distiller.weights.feature to 0 "
                             f"for {self.name!r} (or use network teachers)")
        self.layer_pairs = [
            feature_layer_pair(student, teacher, s["feature_layers"], s["student_layers"], s["teacher_layers"])
            if self.uses_features else ([], [])
            for teacher in self.teachers
        ]
        example = example_input[:1].detach()
        self.feature_losses = torch.nn.ModuleList(
            FeatureDistillationLoss.from_models(student, teacher, sl, tl, example, normalize=s["feature_normalize"])
            for teacher, (sl, tl) in zip(self.teachers, self.layer_pairs) if self.uses_features
        )
        self.student_layers = unique([sl for sl, _ in self.layer_pairs])

    def teacher_weights(self, teacher_logits: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """Per-sample teacher weights (B, T), each row summing to 1. Default: uniform."""
        batch, count = label.shape[0], len(teacher_logits)
        return torch.full((batch, count), 1.0 / count, device=label.device)

    def kl_term(self, logits: torch.Tensor, teacher_logits: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        """``Σ_t`` KL to teacher ``t`` with per-sample weights ``weights[:, t]``."""
        if len(teacher_logits) == 1:
            return self.kl(logits, teacher_logits[0])
        return sum(self.kl(logits, z, weights[:, t]) for t, z in enumerate(teacher_logits))  # type: ignore[return-value]

    def feature_term(
        self, student_features: dict[str, torch.Tensor], teacher_features: list[list[torch.Tensor]],
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """``Σ_t`` feature loss of teacher ``t`` with per-sample weights ``weights[:, t]``."""
        total = None
        for t, (loss, (sl, _), tf) in enumerate(zip(self.feature_losses, self.layer_pairs, teacher_features)):
            w = None if len(self.teachers) == 1 else weights[:, t]
            value = loss([student_features[name] for name in sl], tf, w)
            total = value if total is None else total + value
        assert total is not None
        return total

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"dice", "lovasz", "kl", "feature"}`` (unweighted)."""
        if self.uses_features:
            with FeatureHooks(self.student, self.student_layers) as s_hooks:
                logits = self.student(image)
                student_features = {name: s_hooks[name] for name in self.student_layers}
        else:  # cached teachers: no features to match
            logits, student_features = self.student(image), {}
        teacher_logits, teacher_features = [], []
        with torch.no_grad():
            for teacher, (_, tl) in zip(self.teachers, self.layer_pairs):
                if is_cached(teacher):
                    teacher_logits.append(teacher.logits_from(self.teacher_maps))
                    continue
                with FeatureHooks(teacher, tl, detach=True) as t_hooks:
                    teacher_logits.append(teacher(image))
                    teacher_features.append(t_hooks.outputs())
            weights = self.teacher_weights(teacher_logits, label)
        zero = logits.sum() * 0.0
        labelled = self.labelled_part(logits, label)  # label terms skip unlabelled samples
        terms = {
            "dice": zero if labelled is None else self.dice(labelled[0].float(), labelled[1].float()),
            "lovasz": zero if labelled is None else self.lovasz(*labelled),
            "kl": self.kl_term(logits, teacher_logits, weights),
            "feature": self.feature_term(student_features, teacher_features, weights) if self.uses_features else zero,
        }
        return logits, terms
