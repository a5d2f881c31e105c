"""``amal``: instance-specific mixing of the supervised and the distillation loss, meta-learned.

Sivasubramanian, Maheshwari, Prathosh, Shenoy, Ramakrishnan (AAAI 2023),
"Adaptive Mixing of Auxiliary Losses in Supervised Learning" (AMAL). Every
training instance ``i`` (a training case) has its own mixing weight
``λ_i = sigmoid(a_i)`` between its supervised loss and its distillation loss::

    L = w_supervised · (1/B) Σ_b λ_i(b) · (Dice_b(p_s, y) + CE_b(p_s, y))
        + w_kd · (1/B) Σ_b (1 − λ_i(b)) · T² · KL_b(p̄_t^T || p_s^T)

(``Dice_b``, ``CE_b``, ``KL_b``: per-sample soft Dice of the gland, cross-entropy
and temperature KL to the (mean) teacher, all means over the sample's voxels.)

The ``a_i`` are learned by a bi-level, one-step look-ahead update before each
optimizer step: with the batch's current ``λ``, take a virtual SGD step of the
student ``θ' = θ − α ∇_θ L(θ, λ)``; evaluate the supervised loss of ``θ'`` on a
held-out validation batch; move each ``a_i`` of the batch against the gradient
of that validation loss (normalised by its root mean square over the batch, so
``meta_lr`` is the step size in logit units). A sample whose label disagrees
with the held-out data (a corrupted label) then has its supervised weight
lowered and learns from the teacher instead; a sample whose teacher is wrong
gets a higher supervised weight.

Options: ``temperature`` (T, 2), ``lookahead_lr`` (α, 0.1), ``meta_lr`` (0.1),
``initial_weight`` (λ before any update, 0.5), ``meta_batch_size`` (2),
``meta_every`` (a look-ahead every k steps, 1). The ``a_i`` are a buffer
(saved with the checkpoint); the training loop says which case every sample
came from (``batch_case_index``); without it (a batch outside the loop) the
batch positions are the instances. Under ``torchrun`` every rank updates the
``a_i`` of its own batch and the updates are summed over ranks (all-reduce),
so every rank holds the same ``λ`` (the one rank 0 saves).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F

from ..losses import SoftmaxKLDivLoss
from ProstateKDLib.checks import positive_number
from .parts import mean_teacher_logits
from .base import DISTILLERS, Distiller, Option, TrainingContext

POSITIVE_FRACTION = 2.0 / 3.0  # share of meta patches centred on the gland


def distributed() -> bool:
    """Whether this process is one of several in a torch.distributed process group (torchrun)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def _weight_in_open_unit_interval(value: Any) -> float:
    number = positive_number(value)
    if not number < 1:
        raise ValueError(f"must be a number strictly between 0 and 1, got {value!r}")
    return number


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an integer >= 1, got {value!r}")
    return int(value)


def per_sample_supervised_loss(logits: torch.Tensor, label: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss of the foreground classes plus cross-entropy, one value per sample (B,)."""
    probs = torch.softmax(logits.float(), dim=1)
    target = F.one_hot(label.long()[:, 0], logits.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(2, logits.ndim))
    inter = (probs[:, 1:] * target[:, 1:]).sum(dims)
    denom = probs[:, 1:].sum(dims) + target[:, 1:].sum(dims)
    dice = 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean(1)
    ce = F.cross_entropy(logits.float(), label.long()[:, 0], reduction="none").flatten(1).mean(1)
    return dice + ce


@DISTILLERS.register("amal")
class AMAL(Distiller):
    """Per-instance supervised/distillation mixing weights learned by a one-step look-ahead; terms ``supervised``, ``kd``."""

    name = "amal"
    loss_names = ("supervised", "kd")
    default_weights = {"supervised": 1.0, "kd": 1.0}
    min_teachers = 1
    max_teachers = None
    needs_validation_data = True
    options = {
        "temperature": Option(2.0, positive_number, "softmax temperature T of the KL term"),
        "lookahead_lr": Option(0.1, positive_number, "α: step size of the virtual SGD step"),
        "meta_lr": Option(0.1, positive_number, "step of the mixing logits per meta update"),
        "initial_weight": Option(0.5, _weight_in_open_unit_interval, "λ of every instance before any update"),
        "meta_batch_size": Option(2, _positive_int, "validation patches per meta update"),
        "meta_every": Option(1, _positive_int, "a meta update every k training steps"),
    }

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
        example_input: torch.Tensor | None = None,
        **options: Any,
    ) -> None:
        super().__init__(student, teachers, weights, **options)
        self.kl = SoftmaxKLDivLoss(self.settings["temperature"], reduction="none")
        prior = self.settings["initial_weight"]
        self.register_buffer("mix_logits", torch.zeros(0))
        self.prior_logit = math.log(prior / (1 - prior))
        self.meta_volumes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.meta_patch: tuple[int, ...] = tuple(example_input.shape[2:]) if example_input is not None else ()
        self._generator = torch.Generator().manual_seed(0)
        self._steps = 0

    # ------------------------------------------------------------ set-up
    def prepare(self, context: TrainingContext) -> None:
        """One mixing logit per training case (kept when resumed) and the held-out volumes for meta batches."""
        count = len(context.train_case_ids)
        if not (context.resumed and self.mix_logits.numel() == count):
            self.mix_logits = torch.full((count,), self.prior_logit, device=self.mix_logits.device)
        self.set_meta_data(context.val_volumes, context.patch_size, context.seed)

    def set_meta_data(
        self, volumes: Iterable[tuple[torch.Tensor, torch.Tensor]], patch_size: Iterable[int], seed: int = 0
    ) -> None:
        """Held-out ``(image (1, X, Y, Z), label (1, X, Y, Z))`` volumes the meta batches are cut from."""
        self.meta_volumes = [(image.float(), label) for image, label in volumes]
        self.meta_patch = tuple(int(p) for p in patch_size)
        self._generator = torch.Generator().manual_seed(int(seed) + 7919)

    def load_learned_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the mixing logits (any number of instances)."""
        if "mix_logits" in state:
            self.mix_logits = state["mix_logits"].clone().to(self.mix_logits.device)
        super().load_learned_state_dict(state)

    # ------------------------------------------------------------ mixing weights
    def instance_weights(self) -> torch.Tensor:
        """λ of every training instance (a copy, (N,))."""
        return torch.sigmoid(self.mix_logits.detach().clone())

    def _instances(self, batch: int, device: torch.device) -> torch.Tensor:
        index = self.batch_case_index
        if index is None or len(index) != batch:
            index = torch.arange(batch)
        index = index.to(device=self.mix_logits.device, dtype=torch.long)
        needed = int(index.max()) + 1
        if self.mix_logits.numel() < needed:  # instances outside the training loop: start at the prior
            extra = torch.full((needed - self.mix_logits.numel(),), self.prior_logit, device=self.mix_logits.device)
            self.mix_logits = torch.cat([self.mix_logits, extra])
        return index

    def meta_batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Random held-out patches (image, label), two thirds centred on the gland; None without data."""
        if not self.meta_volumes:
            return None
        images, labels = [], []
        for _ in range(self.settings["meta_batch_size"]):
            pick = int(torch.randint(len(self.meta_volumes), (1,), generator=self._generator))
            image, label = self.meta_volumes[pick]
            corner = self._corner(label, bool(torch.rand(1, generator=self._generator) < POSITIVE_FRACTION))
            window = tuple(slice(c, c + p) for c, p in zip(corner, self.meta_patch))
            images.append(_pad(image, self.meta_patch)[(slice(None), *window)])
            labels.append(_pad(label, self.meta_patch)[(slice(None), *window)])
        return torch.stack(images).to(device), torch.stack(labels).to(device)

    def _corner(self, label: torch.Tensor, positive: bool) -> list[int]:
        shape = [max(s, p) for s, p in zip(label.shape[1:], self.meta_patch)]
        foreground = torch.nonzero(_pad(label, self.meta_patch)[0] > 0) if positive else None
        if foreground is not None and len(foreground):
            centre = foreground[int(torch.randint(len(foreground), (1,), generator=self._generator))].tolist()
        else:
            centre = [int(torch.randint(s, (1,), generator=self._generator)) for s in shape]
        return [min(max(0, c - p // 2), s - p) for c, p, s in zip(centre, self.meta_patch, shape)]

    def meta_update(
        self, image: torch.Tensor, label: torch.Tensor, target: torch.Tensor, instances: torch.Tensor
    ) -> torch.Tensor | None:
        """One look-ahead update of the batch's mixing logits; returns the meta gradient (B,) or None."""
        meta = self.meta_batch(image.device)
        if meta is None:
            return None
        from torch.func import functional_call

        names = [n for n, p in self.student.named_parameters() if p.requires_grad]
        params = [p for p in self.student.parameters() if p.requires_grad]
        logits_a = self.mix_logits[instances].clone().requires_grad_(True)
        lam = torch.sigmoid(logits_a)
        with torch.enable_grad():
            logits = self.student(image)
            sup = per_sample_supervised_loss(logits, label)
            kd = self.kl(logits, target).flatten(1).mean(1)
            inner = (lam * sup + (1 - lam) * kd).mean()
            grads = torch.autograd.grad(inner, params, create_graph=True)
            alpha = self.settings["lookahead_lr"]
            stepped = {n: p - alpha * g for n, p, g in zip(names, params, grads)}
            buffers = dict(self.student.named_buffers())
            meta_logits = functional_call(self.student, {**stepped, **buffers}, (meta[0],))
            outer = per_sample_supervised_loss(meta_logits, meta[1]).mean()
            (grad_a,) = torch.autograd.grad(outer, logits_a)
        rms = grad_a.pow(2).mean().sqrt()
        step = self.settings["meta_lr"] * grad_a / rms if torch.isfinite(rms) and rms > 0 else None
        if distributed():  # every rank adds every rank's update: λ stays identical on all ranks
            delta = torch.zeros_like(self.mix_logits)
            if step is not None:
                delta.index_add_(0, instances, -step.detach())
            torch.distributed.all_reduce(delta)
            self.mix_logits.add_(delta)
        elif step is not None:
            self.mix_logits.index_add_(0, instances, -step.detach())
        return grad_a.detach()

    # ------------------------------------------------------------ the loss
    def forward_train(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and ``{"supervised", "kd"}`` (unweighted, already mixed per sample)."""
        target = mean_teacher_logits(self.teacher_logits(image), self.kl.temperature)
        instances = self._instances(image.shape[0], image.device)
        if self.training and self._steps % self.settings["meta_every"] == 0:
            self.meta_update(image, label, target, instances)
        self._steps += 1
        lam = torch.sigmoid(self.mix_logits[instances]).detach().to(image.device)
        logits = self.student(image)
        sup = per_sample_supervised_loss(logits, label)
        kd = self.kl(logits, target).flatten(1).mean(1)
        all_lam = torch.sigmoid(self.mix_logits.detach())
        self.stats = {"lambda_batch": lam.mean(), "lambda_min": all_lam.min(), "lambda_max": all_lam.max()}
        return logits, {"supervised": (lam * sup).mean(), "kd": ((1 - lam) * kd).mean()}

    def stat_names(self) -> list[str]:
        """``lambda_batch`` (mean λ of the batch), ``lambda_min``, ``lambda_max`` (over all instances)."""
        return ["lambda_batch", "lambda_min", "lambda_max"]


def _pad(tensor: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(C, X, Y, Z) padded at the end by edge replication to at least ``size``."""
    pads: list[int] = []
    for have, want in reversed(list(zip(tensor.shape[1:], size))):
        pads += [0, max(0, want - have)]
    if not any(pads):
        return tensor
    return F.pad(tensor[None].float(), pads, mode="replicate")[0].to(tensor.dtype)
