"""The :class:`Distiller` base class, its :class:`Option` declarations and the :data:`DISTILLERS` registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import torch

from ProstateKDLib.checks import plain_data
from ProstateKDLib.registry import Registry

DISTILLERS: Registry[type["Distiller"]] = Registry("distiller")


@dataclass(frozen=True)
class Option:
    """A method setting read from the config key ``distiller.<name>``.

    Attributes:
        default: value when the config does not set it.
        check: returns the (normalised) value or raises ``ValueError("must be ...")``;
            the message completes ``key 'distiller.<name>' ...``.
        help: one line for the docs.
    """

    default: Any
    check: Callable[[Any], Any]
    help: str = ""


@dataclass
class TrainingContext:
    """What the training loop hands to :meth:`Distiller.prepare` once, before the first epoch.

    Attributes:
        val_volumes: preprocessed ``(image (1, X, Y, Z), label (1, X, Y, Z))`` validation
            volumes on the model grid (what validation Dice is measured on).
        patch_size: training patch (x, y, z).
        batch_size: training batch size.
        epochs: total epochs of the run.
        device: the training device.
        seed: the run's training seed (for a method's own random draws).
        resumed: True when the run continues from a checkpoint (learned state restored).
        train_case_ids: ids of the training cases (index order of the patch sampler).
        train_sites: site of every volume of the patch sampler (training cases, then any
            unlabelled images), indexed like :attr:`Distiller.batch_case_index`.
        val_sites: site of every validation volume.
    """

    val_volumes: Sequence[tuple[torch.Tensor, torch.Tensor]]
    patch_size: tuple[int, ...]
    batch_size: int
    epochs: int
    device: torch.device
    seed: int = 0
    resumed: bool = False
    train_case_ids: Sequence[str] = field(default_factory=tuple)
    train_sites: Sequence[str] = field(default_factory=tuple)
    val_sites: Sequence[str] = field(default_factory=tuple)


class Distiller(torch.nn.Module):
    """A student and its (possibly no) teachers, computing named loss terms.

    Teachers are frozen (``requires_grad=False``) and stay in eval mode even
    when :meth:`train` is called, so their batch-norm statistics and dropout
    never change. Learned parts of a method (feature adapters) are submodules
    other than ``student`` and ``teachers``: :meth:`trainable_parameters` (what
    the optimizer gets) and :meth:`learned_state_dict` (what a checkpoint keeps
    besides the student) include them and never a teacher tensor.

    Subclasses set :attr:`name`, :attr:`loss_names`, :attr:`default_weights`,
    the teacher count bounds and :attr:`options`, and implement :meth:`forward_train`.
    Methods with a schedule or a set-up step override :meth:`start_epoch` (called
    before every epoch) and :meth:`prepare` (called once, after a resumed run's
    learned state is restored); methods that need the validation volumes in
    training (to fit ensemble weights, to draw meta batches) set
    :attr:`needs_validation_data`.
    After each :meth:`forward_train`, :attr:`stats` holds detached scalars worth
    logging (e.g. adaptive teacher weights), named as :meth:`stat_names` says.

    Args:
        student: the network being trained.
        teachers: trained networks to distil from (frozen here).
        weights: loss weight per term name (>= 0); missing names take the defaults.
        **options: method settings declared in :attr:`options`.

    Raises:
        ValueError: unknown loss term or option, a negative weight, a bad option
            value, or a teacher count outside the method's bounds.
    """

    name: ClassVar[str] = ""
    loss_names: ClassVar[tuple[str, ...]] = ()
    default_weights: ClassVar[Mapping[str, float]] = {}
    options: ClassVar[Mapping[str, Option]] = {}
    min_teachers: ClassVar[int] = 0
    max_teachers: ClassVar[int | None] = None
    needs_validation_data: ClassVar[bool] = False
    #: the method can take :class:`~training.cached_teacher.CachedTeacher` teachers (outputs only)
    accepts_cached_teachers: ClassVar[bool] = False
    #: the method can train on unlabelled samples (its label terms skip them)
    accepts_unlabelled: ClassVar[bool] = False

    def __init__(
        self,
        student: torch.nn.Module,
        teachers: Iterable[torch.nn.Module] = (),
        weights: Mapping[str, float] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        teachers = list(teachers)
        self.check_teacher_count(len(teachers))
        self.student = student
        self.teachers = torch.nn.ModuleList(teachers)
        for teacher in self.teachers:
            teacher.requires_grad_(False)
            teacher.eval()
        unknown = sorted(set(weights or {}) - set(self.loss_names))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no loss term {unknown[0]!r} (terms: {', '.join(self.loss_names)})"
            )
        for term, value in (weights or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"loss weight {term!r} must be a number >= 0, got {value!r}")
        self.weights = {**self.default_weights, **{k: float(v) for k, v in (weights or {}).items()}}
        self.settings = self.check_options(options)
        self.stats: dict[str, torch.Tensor] = {}
        self.epoch, self.epochs = 1, 1
        self.batch_case_index: torch.Tensor | None = None  # training-case index of each sample, set by the loop
        self.teacher_maps: torch.Tensor | None = None  # (B, T_cached, *patch) cached teacher maps, set by the loop
        self.batch_labelled: torch.Tensor | None = None  # (B,) bool: which samples have a label, set by the loop
        from ..cached_teacher import is_cached

        if any(is_cached(t) for t in self.teachers) and not self.accepts_cached_teachers:
            raise ValueError(f"distiller {self.name!r} needs network teachers; a cached (external) teacher "
                             "gives only probabilities (use logit_kd, or seed_kd / multi_teacher_* with weight feature 0)")

    # ------------------------------------------------------------ training-loop hooks
    def prepare(self, context: TrainingContext) -> None:
        """Set-up before the first epoch (default: nothing)."""

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called before epoch ``epoch`` (1-based) of ``epochs``; records both for schedules."""
        if not 1 <= epoch <= epochs:
            raise ValueError(f"need 1 <= epoch <= epochs, got epoch {epoch} of {epochs}")
        self.epoch, self.epochs = int(epoch), int(epochs)

    def progress(self) -> float:
        """Training progress in [0, 1]: 0 in the first epoch, 1 in the last."""
        return 0.0 if self.epochs <= 1 else (self.epoch - 1) / (self.epochs - 1)

    # ------------------------------------------------------------ class-level checks
    @classmethod
    def teacher_count_text(cls) -> str:
        """``exactly 1 teacher``, ``at least 2 teachers``, ``no teachers``."""
        low, high = cls.min_teachers, cls.max_teachers
        if high == 0:
            return "no teachers"
        if low == high:
            return f"exactly {low} teacher{'s' if low != 1 else ''}"
        if high is None:
            return f"at least {low} teacher{'s' if low != 1 else ''}"
        return f"{low} to {high} teachers"

    @classmethod
    def check_teacher_count(cls, count: int) -> None:
        """ValueError unless ``count`` teachers suit the method."""
        if cls.max_teachers == 0 and count:
            raise ValueError(f"distiller {cls.name!r} takes no teachers, got {count}")
        if count < cls.min_teachers or (cls.max_teachers is not None and count > cls.max_teachers):
            raise ValueError(f"distiller {cls.name!r} needs {cls.teacher_count_text()}, got {count}")

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """All option values (defaults filled in), each checked.

        Raises:
            ValueError: ``unknown option 'x' for distiller 'y' (known: ...)`` or
                ``option 'x' must be ...``.
        """
        out = {}
        for key in options:
            if key not in cls.options:
                known = ", ".join(sorted(cls.options)) or "none"
                raise ValueError(f"unknown option {key!r} for distiller {cls.name!r} (known: {known})")
        for key, option in cls.options.items():
            if key in options:
                try:
                    out[key] = option.check(options[key])
                except ValueError as exc:
                    raise ValueError(f"option {key!r} {exc}") from None
            else:
                out[key] = option.default
        return out

    # ------------------------------------------------------------ modes and parameters
    def train(self, mode: bool = True) -> "Distiller":
        """Set the student's (and adapters') mode; teachers always stay in eval mode."""
        super().train(mode)
        for teacher in self.teachers:
            teacher.eval()
        return self

    def named_learned_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Trainable parameters that are not the student's or a teacher's (adapters)."""
        for name, param in self.named_parameters():
            if not name.startswith(("student.", "teachers.")) and param.requires_grad:
                yield name, param

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer gets: the student's trainable parameters, then the method's learned ones.

        Teacher parameters are never included.
        """
        teacher_ids = {id(p) for p in self.teachers.parameters()}
        params = [p for p in self.student.parameters() if p.requires_grad]
        params += [p for _, p in self.named_learned_parameters()]
        if any(id(p) in teacher_ids for p in params):  # a teacher shared with the student
            raise ValueError("a teacher shares parameters with the student or an adapter")
        return params

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the method's own submodules (adapters), without student and teachers."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("student.", "teachers."))}

    def load_learned_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`learned_state_dict` (strict: same keys).

        Raises:
            ValueError: keys differ.
        """
        expected = self.learned_state_dict()
        if not expected and not state:
            return
        if set(expected) != set(state):
            missing = sorted(set(expected) - set(state))
            extra = sorted(set(state) - set(expected))
            raise ValueError(f"learned state does not match distiller {self.name!r}: missing {missing}, unexpected {extra}")
        full = {**{k: v for k, v in self.state_dict().items() if k not in expected}, **state}
        self.load_state_dict(full, strict=True)

    # ------------------------------------------------------------ the computation
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Student logits (what inference runs)."""
        return self.student(image)

    def student_input(self, image: torch.Tensor) -> torch.Tensor:
        """What the student sees of a (B, C, X, Y, Z) training-layout image (default: all of it).

        Code that runs :attr:`student` directly on training-layout images (the
        validation of the training loop) passes them through this first; a method
        whose student sees fewer channels than its teachers (``cross_modality``)
        selects them here.
        """
        return image

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

    def stat_names(self) -> list[str]:
        """Names of the scalars :meth:`forward_train` puts in :attr:`stats` (log columns)."""
        return []

    @torch.no_grad()
    def teacher_logits(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every teacher for ``image`` (no gradients); cached teachers read :attr:`teacher_maps`."""
        from ..cached_teacher import is_cached

        return [teacher.logits_from(self.teacher_maps) if is_cached(teacher) else teacher(image)
                for teacher in self.teachers]

    def labelled_part(
        self, logits: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(logits, label)`` of the batch's labelled samples (all of them when :attr:`batch_labelled`
        is unset); ``None`` when no sample of the batch has a label."""
        if self.batch_labelled is None:
            return logits, label
        keep = self.batch_labelled.to(device=logits.device, dtype=torch.bool)
        if bool(keep.all()):
            return logits, label
        if not bool(keep.any()):
            return None
        return logits[keep], label[keep]

    def describe(self) -> dict[str, Any]:
        """Method name, loss weights and option values (for provenance)."""
        return {"name": self.name, "weights": dict(self.weights), "options": plain_data(self.settings)}


def build_distiller(
    name: str,
    student: torch.nn.Module,
    teachers: Iterable[torch.nn.Module] = (),
    weights: Mapping[str, float] | None = None,
    **kwargs: Any,
) -> Distiller:
    """Build the registered distiller ``name`` (KeyError lists the known names)."""
    return DISTILLERS.get(name)(student, teachers, weights, **kwargs)
