"""Feature (hint) distillation: intermediate student features mimic the teacher's.

Features are read with forward hooks on named submodules, so the networks are
used unchanged::

    s_layers = default_feature_layers("unet", student)
    t_layers = default_feature_layers("dynunet", teacher)
    s_layers, t_layers = pair_feature_layers(s_layers, t_layers)
    loss_fn = FeatureDistillationLoss.from_models(student, teacher, s_layers, t_layers, example)
    with FeatureHooks(student, s_layers) as s_hooks, FeatureHooks(teacher, t_layers, detach=True) as t_hooks:
        logits = student(image)
        with torch.no_grad():
            teacher(image)
        loss = loss_fn(s_hooks.outputs(), t_hooks.outputs())

``loss_fn`` holds learned adapters (1x1x1 convolutions): add its parameters to
the optimizer and move it to the device with the student.

Default layers per network family (:func:`default_feature_layers`), listed from
the deepest to the shallowest:

- ``unet`` (MONAI ``UNet``, recursive ``model.1.submodule`` nesting): the
  bottleneck (innermost ``SkipConnection`` submodule, e.g.
  ``model.1.submodule.1.submodule.1.submodule`` for 4 levels), then the up-path
  blocks ``model(.1.submodule)*k.2`` for k = depth-2 … 1 (e.g.
  ``model.1.submodule.1.submodule.2``, ``model.1.submodule.2``). ``model.2``,
  the final up-convolution to the class channels, is the output head and is left out.
- ``dynunet`` (MONAI ``DynUNet``): ``bottleneck``, then ``upsamples.0`` …
  ``upsamples.{n-1}`` (the last one is at full resolution; ``output_block`` is
  the head).
- ``segresnet`` (MONAI ``SegResNet``): ``down_layers.{n-1}`` (the deepest
  encoder stage), then ``up_layers.0`` … ``up_layers.{n-1}``.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .tensor_checks import as_float, check_reduction

__all__ = [
    "FeatureHooks",
    "FeatureAdapter",
    "FeatureDistillationLoss",
    "feature_channels",
    "default_feature_layers",
    "pair_feature_layers",
    "resolve_modules",
]

NORMALIZATIONS = ("none", "l2", "attention")


def resolve_modules(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """Map each name to ``dict(model.named_modules())[name]``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or a name is not a string.
        ValueError: a name is not a submodule of ``model`` (the message lists close
            matches and some available names), or ``names`` is empty / has duplicates.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of module names, not a single string {names!r}")
    names = list(names)
    if not names:
        raise ValueError("names must name at least one module")
    if any(not isinstance(n, str) for n in names):
        raise TypeError(f"module names must be strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"module names must be unique, got {names!r}")
    modules = dict(model.named_modules())
    found: dict[str, nn.Module] = {}
    for name in names:
        if name not in modules:
            available = [n for n in modules if n]
            close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
            shown = ", ".join(available[:25]) + (f", ... ({len(available)} in all)" if len(available) > 25 else "")
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(
                f"{type(model).__name__} has no submodule named {name!r}{hint}; available: {shown}"
            )
        found[name] = modules[name]
    return found


class FeatureHooks:
    """Forward hooks that keep the outputs of named submodules of a network.

    Hooks are registered at construction and removed by :meth:`remove` or on
    leaving a ``with`` block. After each forward pass ``hooks[name]`` (or
    :meth:`outputs`, in the order of ``names``) holds the latest output of each
    module; a module called several times in one pass keeps its last output.
    A module whose output is a tuple/list contributes its first element.

    Note: the stored tensor is the module's output itself; a later in-place
    operation on it (e.g. ``ReLU(inplace=True)`` applied by the parent) would
    change it. Hook block outputs (as the defaults do), not bare convolutions
    followed by in-place activations.

    Args:
        model: the network (not modified).
        names: submodule names as in ``model.named_modules()``.
        detach: store detached outputs (for teachers).

    Raises:
        ValueError: a name is not a submodule of ``model`` (see :func:`resolve_modules`).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], detach: bool = False) -> None:
        modules = resolve_modules(model, names)
        self.names: list[str] = list(modules)
        self.detach = bool(detach)
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"module {name!r} returned {type(output).__name__}, not a tensor")
            self.features[name] = output.detach() if self.detach else output

        return hook

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise KeyError(f"{name!r} is not hooked (hooked: {', '.join(self.names)})")
        if name not in self.features:
            raise RuntimeError(f"module {name!r} has not run since the hooks were registered or cleared")
        return self.features[name]

    def outputs(self) -> list[torch.Tensor]:
        """The captured features in the order of ``names``.

        Raises:
            RuntimeError: a module has not run yet (no forward pass since :meth:`clear`).
        """
        return [self[name] for name in self.names]

    def clear(self) -> None:
        """Forget the captured features (frees their memory)."""
        self.features.clear()

    def remove(self) -> None:
        """Remove the hooks from the network and forget the features."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def __enter__(self) -> "FeatureHooks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def feature_channels(model: nn.Module, names: Sequence[str], example_input: torch.Tensor) -> list[int]:
    """Channel counts of the named submodules' outputs, from one forward pass.

    The pass runs in eval mode under ``torch.no_grad()`` (batch-norm statistics are
    not updated); the model's training flag is restored afterwards.

    Raises:
        ValueError: a name is not a submodule of ``model``.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FeatureHooks(model, names, detach=True) as hooks:
            model(example_input)
            features = hooks.outputs()
    finally:
        model.train(was_training)
    for name, feature in zip(names, features):
        if feature.ndim < 3:
            raise ValueError(f"module {name!r} output has shape {tuple(feature.shape)}, not (B, C, *spatial)")
    return [int(f.shape[1]) for f in features]


def _check_channels(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class FeatureAdapter(nn.Module):
    """Learned 1x1(x1) convolution mapping student channels to teacher channels.

    Args:
        student_channels: channels of the student feature map.
        teacher_channels: channels of the teacher feature map.
        spatial_dims: 3 (default), 2 or 1.
        bias: learn a bias.

    Raises:
        ValueError: a channel count is not a positive int, or ``spatial_dims`` not 1-3.
    """

    def __init__(self, student_channels: int, teacher_channels: int, spatial_dims: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.student_channels = _check_channels("student_channels", student_channels)
        self.teacher_channels = _check_channels("teacher_channels", teacher_channels)
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.conv = conv(student_channels, teacher_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, student_channels, *spatial) -> (B, teacher_channels, *spatial)."""
        if x.ndim != self.conv.weight.ndim or x.shape[1] != self.student_channels:
            raise ValueError(
                f"adapter expects (B, {self.student_channels}, *spatial) with "
                f"{self.conv.weight.ndim - 2} spatial dims, got {tuple(x.shape)}"
            )
        return self.conv(x)


def _resample(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Linear/bilinear/trilinear resampling of (B, C, *spatial) to ``size``."""
    if tuple(x.shape[2:]) == size:
        return x
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _attention(x: torch.Tensor) -> torch.Tensor:
    """Spatial attention map: mean over channels of the squared activations, (B, 1, *spatial)."""
    return as_float(x).pow(2).mean(dim=1, keepdim=True)


class FeatureDistillationLoss(nn.Module):
    """Mean squared error between (adapted, resampled) student and teacher features.

    For every layer pair ``l``: the student feature is mapped to the teacher's
    channels by a :class:`FeatureAdapter`, resampled (linear interpolation) to the
    teacher's spatial size when they differ, optionally normalised, and compared
    with the detached teacher feature by MSE. The adapter and the resampling commute
    (a 1x1 convolution and interpolation weights summing to 1), so the adapter is
    applied at the smaller of the two resolutions.

    Args:
        student_channels: channels of each student feature map.
        teacher_channels: channels of each teacher feature map (same length).
        normalize: ``"none"``: raw features; ``"l2"``: every voxel's feature vector
            L2-normalised over channels (compares directions, not magnitudes);
            ``"attention"``: attention transfer (Zagoruyko & Komodakis 2017):
            compare the L2-normalised spatial maps ``mean_c F_c²``; no adapters are
            needed or built, so the channel counts may differ freely.
        layer_weights: weight per layer (default 1 each).
        reduction: over the layers: ``"mean"`` (weighted mean), ``"sum"`` (weighted
            sum) or ``"none"`` (per-layer weighted losses, shape (L,)).
        spatial_dims: 3 (default), 2 or 1.

    Raises:
        ValueError: lengths differ or are 0, bad channel counts, unknown
            ``normalize``/``reduction``, negative or all-zero ``layer_weights``.
    """

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        normalize: str = "none",
        layer_weights: Sequence[float] | None = None,
        reduction: str = "mean",
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        student_channels = [_check_channels("student_channels[]", c) for c in student_channels]
        teacher_channels = [_check_channels("teacher_channels[]", c) for c in teacher_channels]
        if not student_channels or len(student_channels) != len(teacher_channels):
            raise ValueError(
                f"need one teacher channel count per student layer (>= 1 layer), got "
                f"{len(student_channels)} student and {len(teacher_channels)} teacher layers"
            )
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        n_layers = len(student_channels)
        if layer_weights is None:
            layer_weights = [1.0] * n_layers
        layer_weights = [float(w) for w in layer_weights]
        if len(layer_weights) != n_layers:
            raise ValueError(f"layer_weights needs {n_layers} values, got {len(layer_weights)}")
        if any(not (w >= 0.0) for w in layer_weights) or sum(layer_weights) <= 0.0:
            raise ValueError(f"layer_weights must be >= 0 and not all 0, got {layer_weights}")
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.normalize = normalize
        self.reduction = check_reduction(reduction)
        self.spatial_dims = spatial_dims
        self.register_buffer("layer_weights", torch.tensor(layer_weights, dtype=torch.float32), persistent=False)
        if normalize == "attention":
            self.adapters = nn.ModuleList([nn.Identity() for _ in student_channels])
        else:
            self.adapters = nn.ModuleList(
                [FeatureAdapter(s, t, spatial_dims) for s, t in zip(student_channels, teacher_channels)]
            )

    @classmethod
    def from_models(
        cls,
        student: nn.Module,
        teacher: nn.Module,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        example_input: torch.Tensor,
        **kwargs: Any,
    ) -> "FeatureDistillationLoss":
        """Build the loss with channel counts found by :func:`feature_channels`.

        ``example_input`` (on the models' device) can be small, e.g. one patch.
        """
        if len(student_layers) != len(teacher_layers):
            raise ValueError(
                f"need as many teacher layers as student layers, got {len(student_layers)} and {len(teacher_layers)}"
            )
        return cls(
            feature_channels(student, student_layers, example_input),
            feature_channels(teacher, teacher_layers, example_input),
            **kwargs,
        )

    def forward(
        self,
        student_features: Sequence[torch.Tensor],
        teacher_features: Sequence[torch.Tensor],
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Feature loss of paired student/teacher feature maps.

        Args:
            student_features: L tensors (B, C_s,l, *spatial_s,l).
            teacher_features: L tensors (B, C_t,l, *spatial_t,l), detached here.
            weights: optional per-sample weights, shape (B,); the per-sample MSEs are
                multiplied by them and averaged over the batch.

        Raises:
            ValueError: wrong number of features, batch sizes, spatial dims or channels,
                or a ``weights`` shape other than (B,).
        """
        n_layers = len(self.adapters)
        if len(student_features) != n_layers or len(teacher_features) != n_layers:
            raise ValueError(
                f"expected {n_layers} student and teacher features, got "
                f"{len(student_features)} and {len(teacher_features)}"
            )
        losses = []
        for index, (adapter, s, t) in enumerate(zip(self.adapters, student_features, teacher_features)):
            self._check_pair(index, s, t)
            t = t.detach()
            size = tuple(t.shape[2:])
            if self.normalize == "attention":
                s_map = _resample(_attention(s), size).flatten(1)
                t_map = _attention(t).flatten(1)
                diff = F.normalize(s_map, dim=1) - F.normalize(t_map, dim=1)
            else:
                if s.shape[2:].numel() <= t.shape[2:].numel():
                    s = _resample(adapter(s), size)
                else:
                    s = adapter(_resample(s, size))
                s, t = as_float(s), as_float(t)
                if self.normalize == "l2":
                    s, t = F.normalize(s, dim=1), F.normalize(t, dim=1)
                diff = s - t
            per_sample = diff.pow(2).flatten(1).mean(1)  # (B,)
            if weights is not None:
                per_sample = per_sample * self._check_weights(weights, per_sample)
            losses.append(per_sample.mean())
        per_layer = torch.stack(losses) * self.layer_weights.to(losses[0].device)
        if self.reduction == "mean":
            return per_layer.sum() / self.layer_weights.sum().to(per_layer.device)
        if self.reduction == "sum":
            return per_layer.sum()
        return per_layer

    def _check_pair(self, index: int, s: torch.Tensor, t: torch.Tensor) -> None:
        for kind, x in (("student", s), ("teacher", t)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{kind} feature {index} must be a tensor, got {type(x).__name__}")
            if x.ndim != 2 + self.spatial_dims:
                raise ValueError(
                    f"{kind} feature {index} must have shape (B, C, *spatial) with {self.spatial_dims} "
                    f"spatial dims, got {tuple(x.shape)}"
                )
        if s.shape[0] != t.shape[0]:
            raise ValueError(
                f"feature {index}: batch sizes differ, student {tuple(s.shape)} vs teacher {tuple(t.shape)}"
            )
        if self.normalize != "attention" and (
            s.shape[1] != self.student_channels[index] or t.shape[1] != self.teacher_channels[index]
        ):
            raise ValueError(
                f"feature {index}: expected {self.student_channels[index]} student and "
                f"{self.teacher_channels[index]} teacher channels, got {tuple(s.shape)} and {tuple(t.shape)}"
            )

    @staticmethod
    def _check_weights(weights: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != tuple(per_sample.shape):
            shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
            raise ValueError(
                f"weights must be a tensor of shape {tuple(per_sample.shape)} (one per sample), got {shape}"
            )
        return weights.to(per_sample.device, per_sample.dtype)


# ------------------------------------------------------------------ default layers
def _unet_layers(network: nn.Module) -> tuple[str, list[str]]:
    modules = dict(network.named_modules())
    if "model" not in modules:
        raise ValueError(f"network {type(network).__name__} does not look like a MONAI UNet (no 'model' submodule)")
    levels = ["model"]  # prefixes of the nested encoder/decoder levels
    while f"{levels[-1]}.1.submodule" in modules and type(modules[f"{levels[-1]}.1"]).__name__ == "SkipConnection":
        levels.append(f"{levels[-1]}.1.submodule")
    if len(levels) < 2:
        raise ValueError(f"network {type(network).__name__} does not look like a MONAI UNet (no skip connection)")
    bottleneck = levels[-1]
    decoders = [f"{prefix}.2" for prefix in reversed(levels[1:-1]) if f"{prefix}.2" in modules]
    return bottleneck, decoders


def _dynunet_layers(network: nn.Module) -> tuple[str, list[str]]:
    modules = dict(network.named_modules())
    if "bottleneck" not in modules or "upsamples" not in modules:
        raise ValueError(f"network {type(network).__name__} does not look like a MONAI DynUNet")
    return "bottleneck", [f"upsamples.{i}" for i in range(len(modules["upsamples"]))]  # type: ignore[arg-type]


def _segresnet_layers(network: nn.Module) -> tuple[str, list[str]]:
    modules = dict(network.named_modules())
    if "down_layers" not in modules or "up_layers" not in modules:
        raise ValueError(f"network {type(network).__name__} does not look like a MONAI SegResNet")
    n_down = len(modules["down_layers"])  # type: ignore[arg-type]
    n_up = len(modules["up_layers"])  # type: ignore[arg-type]
    return f"down_layers.{n_down - 1}", [f"up_layers.{i}" for i in range(n_up)]


_DEFAULT_LAYERS = {"unet": _unet_layers, "dynunet": _dynunet_layers, "segresnet": _segresnet_layers}


def default_feature_layers(network_name: str, network: nn.Module, which: str = "all") -> list[str]:
    """Default feature layers of a registered network family, deepest first.

    See the module docstring for the layers of ``unet``, ``dynunet`` and
    ``segresnet``.

    Args:
        network_name: the registry name (``"unet"``, ``"dynunet"``, ``"segresnet"``).
        network: the built network (its structure gives the depth).
        which: ``"all"``: bottleneck then decoder stages (deep to shallow);
            ``"bottleneck"``: the bottleneck only; ``"decoder"``: decoder stages only.

    Raises:
        ValueError: unknown ``network_name`` or ``which``, or ``network`` does not
            have the structure of that family.
    """
    if network_name not in _DEFAULT_LAYERS:
        raise ValueError(
            f"no default feature layers for network {network_name!r} (known: {', '.join(sorted(_DEFAULT_LAYERS))}); "
            "name the layers explicitly"
        )
    if which not in ("all", "bottleneck", "decoder"):
        raise ValueError(f'which must be "all", "bottleneck" or "decoder", got {which!r}')
    bottleneck, decoders = _DEFAULT_LAYERS[network_name](network)
    if which == "bottleneck":
        return [bottleneck]
    if which == "decoder":
        return decoders
    return [bottleneck, *decoders]


def pair_feature_layers(student_layers: Sequence[str], teacher_layers: Sequence[str]) -> tuple[list[str], list[str]]:
    """Pair two ``default_feature_layers(..., which="all")`` lists of different depth.

    The bottlenecks are paired, then the decoder stages from the shallow end
    (shallowest with shallowest); extra deep decoder stages of the deeper network
    are dropped. Equal-length lists are returned unchanged.

    Raises:
        ValueError: a list is empty.
    """
    student_layers, teacher_layers = list(student_layers), list(teacher_layers)
    if not student_layers or not teacher_layers:
        raise ValueError("both layer lists must name at least one layer (the bottleneck)")
    n_dec = min(len(student_layers), len(teacher_layers)) - 1
    student_dec = student_layers[len(student_layers) - n_dec :] if n_dec else []
    teacher_dec = teacher_layers[len(teacher_layers) - n_dec :] if n_dec else []
    return [student_layers[0], *student_dec], [teacher_layers[0], *teacher_dec]
