"""Run a network over a volume with numpy: one whole-volume pass, or a sliding window.

The network is any callable from a float32 array (B, C, x, y, z) to logits
(B, K, x, y, z), so the same code drives onnxruntime and torch.

* :func:`whole_volume_logits` pads the volume (edge values, centred) to at least the
  patch size and to the network's divisibility, runs one pass and crops back.
* :func:`sliding_window_logits` is MONAI's ``SlidingWindowInferer`` (same window
  positions, gaussian importance map with sigma 0.125 of the window, replicate
  padding of a volume smaller than the window), checked against it in
  ``Testing/test_window_inference.py``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Network = Callable[[np.ndarray], np.ndarray]
Step = Callable[[int, int], None]  # (done, total) after each network call
GAUSSIAN_SIGMA_SCALE = 0.125


def pad_to(array: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Edge-pad the last three axes, centred (MONAI's split: half before), to ``shape``.

    Returns the padded array and the slices that crop it back.
    """
    pads, crop = [(0, 0)] * (array.ndim - 3), [slice(None)] * (array.ndim - 3)
    for size, target in zip(array.shape[-3:], shape):
        diff = max(int(target) - size, 0)
        pads.append((diff // 2, diff - diff // 2))
        crop.append(slice(diff // 2, diff // 2 + size))
    if not any(p for pair in pads for p in pair):
        return array, tuple(crop)
    return np.pad(array, pads, mode="edge"), tuple(crop)


def whole_volume_shape(shape: Sequence[int], patch_size: Sequence[int], divisor: Sequence[int]) -> tuple[int, ...]:
    """The padded shape of a whole-volume pass: at least the patch, a multiple of ``divisor``."""
    return tuple(int(math.ceil(max(s, p) / d) * d) for s, p, d in zip(shape, patch_size, divisor))


def whole_volume_logits(
    image: np.ndarray, network: Network, patch_size: Sequence[int], divisor: Sequence[int]
) -> np.ndarray:
    """Logits (K, x, y, z) of one network pass over the whole (C, x, y, z) volume."""
    padded, crop = pad_to(image, whole_volume_shape(image.shape[1:], patch_size, divisor))
    logits = network(np.ascontiguousarray(padded[None], dtype=np.float32))[0]
    return np.ascontiguousarray(logits[crop])


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices along one axis, as MONAI's ``dense_patch_slices``."""
    if window >= size:
        return [0]
    interval = max(int(window * (1 - overlap)), 1)
    count = next(d for d in range(size) if d * interval + window >= size) + 1
    return [i * interval - max(i * interval + window - size, 0) for i in range(count)]


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows a sliding window visits over a volume of ``shape``."""
    return math.prod(len(window_starts(max(s, w), w, overlap)) for s, w in zip(shape, roi))


def importance_map(patch_size: Sequence[int], mode: str = "gaussian") -> np.ndarray:
    """MONAI's window weights: a separable gaussian (sigma 0.125 x window, peak 1, floor 1e-3) or ones."""
    if mode == "constant":
        return np.ones(tuple(patch_size), dtype=np.float32)
    if mode != "gaussian":
        raise ValueError(f"blend mode must be 'gaussian' or 'constant', got {mode!r}")
    weights = np.ones((), dtype=np.float32)
    for size in patch_size:
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        sigma = np.float32(size * GAUSSIAN_SIGMA_SCALE)
        weights = np.multiply.outer(weights, np.exp(x**2 / (-2 * sigma**2)).astype(np.float32))
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def sliding_window_logits(
    image: np.ndarray,
    network: Network,
    patch_size: Sequence[int],
    overlap: float,
    blend_mode: str = "gaussian",
    batch_size: int = 1,
    step: Step | None = None,
) -> np.ndarray:
    """Blended logits (K, x, y, z) of overlapping windows over a (C, x, y, z) volume."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    padded, crop = pad_to(image, [max(s, p) for s, p in zip(image.shape[1:], patch_size)])
    shape = padded.shape[1:]
    starts = [window_starts(s, p, overlap) for s, p in zip(shape, patch_size)]
    corners = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    weights = importance_map(patch_size, blend_mode)
    total: np.ndarray | None = None
    count = np.zeros(shape, dtype=np.float32)
    calls = math.ceil(len(corners) / batch_size)
    for call in range(calls):
        group = corners[call * batch_size:(call + 1) * batch_size]
        slices = [tuple(slice(s, s + p) for s, p in zip(corner, patch_size)) for corner in group]
        batch = np.stack([padded[(slice(None),) + s] for s in slices]).astype(np.float32, copy=False)
        logits = network(np.ascontiguousarray(batch))
        if total is None:
            total = np.zeros((logits.shape[1], *shape), dtype=np.float32)
        for out, s in zip(logits, slices):
            total[(slice(None),) + s] += out * weights
            count[s] += weights
        if step is not None:
            step(call + 1, calls)
    assert total is not None
    total /= count
    return np.ascontiguousarray(total[(slice(None),) + crop[1:]])


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax (float32)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted
