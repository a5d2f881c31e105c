"""``ta_ensemble``: a student distilled from a weighted ensemble of teaching assistants.

Mirzadeh et al. (2020), "Improved Knowledge Distillation via Teacher Assistant"
(AAAI 2020): a network sized between the teacher and the student (a teaching
assistant, TA) bridges the capacity gap; here several TAs, each already distilled
from the full teacher (the recipe trains them), are the config's ``teachers`` and
the student learns from their weighted ensemble. With ``p_a^T = softmax(z_a / T)``
the softened probabilities of assistant ``a`` and ensemble weights ``w_a >= 0``,
``Σ_a w_a = 1``::

    p̄^T = Σ_a w_a · p_a^T                       (target logits: z̄ = T · logsumexp_a(log w_a + log p_a^T))
    L = w_dice · Dice(p_s, y) + w_lovasz · Lovász(p_s, y) + w_kl · T² · KL(p̄^T || p_s^T)

Dice is MONAI's ``DiceLoss`` (foreground, batch-wise), Lovász the Lovász-Softmax
loss (Berman et al. 2018), KL :class:`~training.losses.SoftmaxKLDivLoss`
(mean over voxels), as in the feature-distilling methods.

The weights ``w`` are fitted once, in :meth:`TAEnsemble.prepare`, by differential
evolution (``scipy.optimize.differential_evolution``, seeded with the run's seed)
maximising the mean validation Dice of the ensemble's argmax
(:func:`fit_ensemble_weights`); each assistant's sliding-window probabilities on
the validation volumes are computed once, with the inferer settings of the
training loop's validation. The option ``ensemble_weights`` sets them instead;
without validation volumes they stay uniform (with a warning). The weights are a
buffer, so checkpoints keep them and a resumed run does not search again.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import LovaszSoftmaxLoss, SoftmaxKLDivLoss, dice_loss
from ProstateKDLib.checks import positive_number
from .base import DISTILLERS, Distiller, Option, TrainingContext

# Sliding-window settings of training.train.validate (mirrored, not imported: the library
# does not depend on the training package).
SW_BATCH_SIZE = 2
SW_OVERLAP = 0.25
SW_BLEND_MODE = "gaussian"
SOURCES = ("uniform", "fitted", "explicit")


# ------------------------------------------------------------------ option checks
def positive_int(value: Any) -> int:
    """An integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an integer >= 1, got {value!r}")
    return int(value)


def weight_list(value: Any) -> list[float] | None:
    """``None`` (fit the weights) or a list of finite numbers >= 0 with a positive sum, normalised to sum 1."""
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                   for v in value)
        or not sum(value) > 0
    ):
        raise ValueError(f"must be null or a non-empty list of numbers >= 0 with a positive sum, got {value!r}")
    total = float(sum(value))
    return [float(v) / total for v in value]


# ------------------------------------------------------------------ the ensemble target
def weighted_teacher_logits(
    teacher_logits: Sequence[torch.Tensor], weights: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Logits ``z̄`` with ``softmax(z̄ / T) = Σ_a w_a softmax(z_a / T)``.

    ``z̄ = T · logsumexp_a(log w_a + log_softmax(z_a / T))`` (a zero weight drops an
    assistant). ``weights`` (A,) must be >= 0 and sum to 1.

    Raises:
        ValueError: number of weights differs from the number of logits.
    """
    if len(teacher_logits) != weights.numel():
        raise ValueError(f"need one weight per teacher: {len(teacher_logits)} teachers, {weights.numel()} weights")
    logs = torch.stack([F.log_softmax(z.float() / temperature, dim=1) for z in teacher_logits])
    log_w = torch.log(weights.float().to(logs.device)).view(-1, *([1] * (logs.ndim - 1)))
    return temperature * torch.logsumexp(logs + log_w, dim=0)


# ------------------------------------------------------------------ the weight search
def ensemble_dice(
    weights: np.ndarray | Sequence[float], stacked: Sequence[torch.Tensor], labels: Sequence[torch.Tensor]
) -> float:
    """Mean over volumes of the hard Dice (mean over foreground classes) of ``argmax_c Σ_a w_a p_a``.

    Args:
        weights: (A,) ensemble weights.
        stacked: per volume, the assistants' probabilities (A, C, N) (N flattened voxels).
        labels: per volume, class indices (N,).

    A class absent from both label and prediction scores 1.
    """
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    scores = []
    for probs, label in zip(stacked, labels):
        prediction = torch.einsum("a,acn->cn", w.to(probs.device), probs).argmax(0)
        per_class = []
        for c in range(1, probs.shape[1]):
            p, y = prediction == c, label == c
            denominator = int(p.sum()) + int(y.sum())
            per_class.append(1.0 if denominator == 0 else 2.0 * int((p & y).sum()) / denominator)
        scores.append(sum(per_class) / len(per_class))
    return float(sum(scores) / len(scores))


def fit_ensemble_weights(
    probabilities: Sequence[Sequence[torch.Tensor]],
    labels: Sequence[torch.Tensor],
    seed: int = 0,
    maxiter: int = 20,
    popsize: int = 8,
) -> tuple[np.ndarray, float, float]:
    """Ensemble weights maximising the mean validation Dice, by differential evolution.

    Each candidate ``x ∈ [0, 1]^A`` gives ``w = x / Σ x``; the population starts with
    the uniform weights, so the result is never worse than them on these volumes.
    No polishing (the Dice of an argmax is piecewise constant in ``w``).

    Args:
        probabilities: ``probabilities[a][v]`` = assistant ``a``'s class probabilities
            (C, *spatial) on volume ``v``.
        labels: ``labels[v]`` = class indices of volume ``v`` ((1, *spatial) or (*spatial)).
        seed: random seed of the search.
        maxiter, popsize: ``differential_evolution`` settings (small: seconds).

    Returns:
        ``(weights (A,) summing to 1, fitted Dice, uniform-ensemble Dice)``.

    Raises:
        ValueError: fewer than 2 assistants, no volumes, or mismatched counts or shapes.
    """
    from scipy.optimize import differential_evolution

    n = len(probabilities)
    if n < 2:
        raise ValueError(f"need the probabilities of at least 2 assistants, got {n}")
    if not labels:
        raise ValueError("need at least one validation volume")
    if any(len(per_volume) != len(labels) for per_volume in probabilities):
        counts = [len(per_volume) for per_volume in probabilities]
        raise ValueError(f"every assistant needs one probability map per volume ({len(labels)}), got {counts}")
    stacked, flat_labels = [], []
    for v, label in enumerate(labels):
        maps = [probabilities[a][v].float() for a in range(n)]
        if any(m.shape != maps[0].shape for m in maps) or maps[0].shape[1:] != label.shape[-(maps[0].ndim - 1):]:
            raise ValueError(f"volume {v}: probability maps {[tuple(m.shape) for m in maps]} do not match "
                             f"each other or the label {tuple(label.shape)}")
        stacked.append(torch.stack(maps).flatten(2))
        flat_labels.append(label.reshape(-1).long().to(stacked[-1].device))

    def normalise(x: np.ndarray) -> np.ndarray:
        total = float(np.sum(x))
        return np.full(n, 1.0 / n) if total <= 0 else np.asarray(x, dtype=float) / total

    uniform = np.full(n, 1.0 / n)
    uniform_dice = ensemble_dice(uniform, stacked, flat_labels)
    result = differential_evolution(
        lambda x: -ensemble_dice(normalise(x), stacked, flat_labels),
        bounds=[(0.0, 1.0)] * n, seed=seed, maxiter=maxiter, popsize=popsize, polish=False,
        x0=np.full(n, 0.5), tol=0.0, init="latinhypercube",
    )
    weights, dice = normalise(result.x), -float(result.fun)
    if dice < uniform_dice:  # cannot happen with x0 in the population; kept as a guard
        weights, dice = uniform, uniform_dice
    return weights, dice, uniform_dice


@torch.no_grad()
def sliding_window_probabilities(
    network: torch.nn.Module, volumes: Sequence[tuple[torch.Tensor, torch.Tensor]],
    patch_size: Sequence[int], device: torch.device,
) -> list[torch.Tensor]:
    """Softmax probabilities (C, *spatial) of ``network`` on each image, on the CPU.

    Same inferer as the training loop's validation (gaussian blending, overlap 0.25).
    """
    from monai.inferers import SlidingWindowInferer

    inferer = SlidingWindowInferer(roi_size=tuple(patch_size), sw_batch_size=SW_BATCH_SIZE, overlap=SW_OVERLAP,
                                   mode=SW_BLEND_MODE, padding_mode="replicate")
    was_training = network.training
    network.eval()
    out = []
    with torch.inference_mode():
        for image, _ in volumes:
            logits = inferer(torch.as_tensor(image)[None].to(device), network)
            out.append(torch.softmax(torch.as_tensor(logits).float(), dim=1)[0].cpu())
    network.train(was_training)
    return out


@DISTILLERS.register("ta_ensemble")
class TAEnsemble(Distiller):
    """Dice + Lovász + KL(T) to a weighted ensemble of 2 or more teaching assistants.

    Options: ``temperature`` (T, 2), ``ensemble_weights`` (null: fit by differential
    evolution on the validation volumes; or one number per assistant, normalised),
    ``search_maxiter`` (20) and ``search_popsize`` (8) of the search.

    Buffers (kept in checkpoints): ``ensemble_weights`` (A,), ``weights_source``
    (index into ``uniform``, ``fitted``, ``explicit``), ``fitted_dice`` and
    ``uniform_dice`` (validation Dice of the fitted and the uniform ensemble; NaN
    unless fitted).

    Raises:
        ValueError: ``ensemble_weights`` not one number per assistant, or bad options.
    """

    name = "ta_ensemble"
    loss_names = ("dice", "lovasz", "kl")
    default_weights = {"dice": 1.0, "lovasz": 1.0, "kl": 1.0}
    options = {
        "temperature": Option(2.0, positive_number, "softmax temperature T of the KL term"),
        "ensemble_weights": Option(
            None, weight_list, "null: fit on the validation volumes; or one weight per assistant (normalised)"
        ),
        "search_maxiter": Option(20, positive_int, "differential evolution: generations"),
        "search_popsize": Option(8, positive_int, "differential evolution: population size per weight"),
    }
    min_teachers = 2
    max_teachers = None
    needs_validation_data = True

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
        example_input: torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        super().__init__(student, teachers, weights, **options)
        n = len(self.teachers)
        self.dice = dice_loss()
        self.lovasz = LovaszSoftmaxLoss()
        self.kl = SoftmaxKLDivLoss(self.settings["temperature"])
        explicit = self.settings["ensemble_weights"]
        self.check_weight_count(explicit)
        initial = explicit if explicit is not None else [1.0 / n] * n
        self.register_buffer("ensemble_weights", torch.tensor(initial, dtype=torch.float32))
        self.register_buffer("weights_source", torch.tensor(SOURCES.index("explicit" if explicit else "uniform")))
        self.register_buffer("fitted_dice", torch.tensor(float("nan")))
        self.register_buffer("uniform_dice", torch.tensor(float("nan")))

    def check_weight_count(self, weights: Sequence[float] | torch.Tensor | None) -> None:
        """ValueError unless ``weights`` is None or has one entry per assistant."""
        if weights is not None and len(weights) != len(self.teachers):
            raise ValueError(
                f"option 'ensemble_weights' needs one weight per teaching assistant ({len(self.teachers)}), "
                f"got {len(weights)}"
            )

    @property
    def source(self) -> str:
        """Where the weights come from: ``uniform``, ``fitted`` or ``explicit``."""
        return SOURCES[int(self.weights_source)]

    def prepare(self, context: TrainingContext) -> None:
        """Fit the ensemble weights on ``context.val_volumes`` unless given or restored."""
        explicit = self.settings["ensemble_weights"]
        if explicit is not None:
            self.check_weight_count(explicit)
            self.set_weights(explicit, "explicit")
            return
        if context.resumed and self.source == "fitted":
            return
        if not context.val_volumes:
            warnings.warn("ta_ensemble: no validation volumes to fit the ensemble weights; using uniform weights",
                          stacklevel=2)
            self.set_weights([1.0 / len(self.teachers)] * len(self.teachers), "uniform")
            return
        probabilities = [
            sliding_window_probabilities(teacher, context.val_volumes, context.patch_size, context.device)
            for teacher in self.teachers
        ]
        labels = [torch.as_tensor(label) for _, label in context.val_volumes]
        weights, dice, uniform_dice = fit_ensemble_weights(
            probabilities, labels, seed=context.seed,
            maxiter=self.settings["search_maxiter"], popsize=self.settings["search_popsize"],
        )
        self.set_weights(weights.tolist(), "fitted", dice, uniform_dice)

    def set_weights(
        self, weights: Sequence[float], source: str, dice: float = math.nan, uniform_dice: float = math.nan
    ) -> None:
        """Store the ensemble weights (normalised) and their provenance in the buffers."""
        self.check_weight_count(weights)
        w = torch.tensor(weights, dtype=torch.float32)
        self.ensemble_weights.copy_(w / w.sum())
        self.weights_source.fill_(SOURCES.index(source))
        self.fitted_dice.fill_(dice)
        self.uniform_dice.fill_(uniform_dice)

    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"dice", "lovasz", "kl"}`` (unweighted)."""
        logits = self.student(image)
        with torch.no_grad():
            target = weighted_teacher_logits(self.teacher_logits(image), self.ensemble_weights, self.kl.temperature)
        self.stats = {f"ensemble_w{a}": w for a, w in enumerate(self.ensemble_weights.detach().clone())}
        terms = {
            "dice": self.dice(logits.float(), label.float()),
            "lovasz": self.lovasz(logits, label),
            "kl": self.kl(logits, target),
        }
        return logits, terms

    def stat_names(self) -> list[str]:
        """``ensemble_w0 … ensemble_w{A-1}``."""
        return [f"ensemble_w{a}" for a in range(len(self.teachers))]

    def describe(self) -> dict[str, Any]:
        """The base description plus the ensemble weights, their source and validation Dice."""

        def number(t: torch.Tensor) -> float | None:
            return None if math.isnan(float(t)) else float(t)

        return {
            **super().describe(),
            "ensemble": {
                "weights": [float(w) for w in self.ensemble_weights],
                "source": self.source,
                "val_dice_fitted": number(self.fitted_dice),
                "val_dice_uniform": number(self.uniform_dice),
            },
        }
