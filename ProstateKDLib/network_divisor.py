"""The spatial size a network's input must be a multiple of, from its ``model.json`` entry.

Read from the network's name and keyword arguments alone (no torch), so a
whole-volume pass can pad the volume before any network is built.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Mapping, Sequence

from .networks import build_dynunet, build_segresnet, build_unet


def _per_axis(stride: Any) -> tuple[int, int, int]:
    if isinstance(stride, (list, tuple)):
        if len(stride) != 3:
            raise ValueError(f"a 3D stride needs three values, got {stride!r}")
        return tuple(int(s) for s in stride)  # type: ignore[return-value]
    return (int(stride),) * 3


def _product(strides: Sequence[Any]) -> tuple[int, int, int]:
    per_axis = [_per_axis(s) for s in strides]
    return tuple(math.prod(s[axis] for s in per_axis) for axis in range(3))  # type: ignore[return-value]


def _default(function: Any, name: str) -> Any:
    return inspect.signature(function).parameters[name].default


def network_divisor(name: str, kwargs: Mapping[str, Any]) -> tuple[int, int, int]:
    """Per-axis divisor of the input size for the registered network ``name``.

    ``unet`` and ``dynunet``: the product of the strides; ``segresnet``:
    2 to the number of down-sampling stages. Other names: 1 (no padding known).
    """
    if name == "unet":
        return _product(kwargs.get("strides", _default(build_unet, "strides")))
    if name == "dynunet":
        return _product(kwargs.get("strides", _default(build_dynunet, "strides")))
    if name == "segresnet":
        stages = len(kwargs.get("blocks_down", _default(build_segresnet, "blocks_down"))) - 1
        return (2**stages,) * 3
    return (1, 1, 1)
