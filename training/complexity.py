"""Model cost: parameters, forward FLOPs on a standard volume, and CPU latency through the inference path."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Sequence

import torch

STANDARD_VOLUME = (320, 320, 24)  # voxels (x, y, z) of a typical prostate T2 (DESIGN.md benchmarks)


def _total_stride(network: torch.nn.Module) -> tuple[int, int, int]:
    """Product of the down-sampling strides of a MONAI UNet / DynUNet / SegResNet (1 if unknown)."""
    strides = getattr(network, "strides", None)
    if strides is None and hasattr(network, "blocks_down"):
        n = len(network.blocks_down)  # SegResNet: stride 2 between stages
        return (2 ** (n - 1),) * 3  # type: ignore[return-value]
    total = [1, 1, 1]
    for stride in strides or []:
        per_axis = list(stride) if isinstance(stride, (list, tuple)) else [stride] * 3
        total = [t * int(s) for t, s in zip(total, per_axis)]
    return tuple(total)  # type: ignore[return-value]


def forward_gflops(network_name: str, kwargs: dict[str, Any], shape: Sequence[int] = STANDARD_VOLUME) -> float:
    """GFLOPs of one forward pass on a (1, C, *shape) tensor, counted on the ``meta`` device.

    ``torch.utils.flop_counter.FlopCounterMode`` counts convolutions and matrix
    products as 2 FLOPs per multiply-accumulate; nothing is computed. The shape is
    padded up to a multiple of the network's total stride (as sliding-window
    inference would pad).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from ProstateKDLib.networks import build_network

    with torch.device("meta"):
        network = build_network(network_name, kwargs).eval()
        stride = _total_stride(network)
        padded = [int(math.ceil(s / k) * k) for s, k in zip(shape, stride)]
        x = torch.empty(1, int(kwargs.get("in_channels", 1)), *padded)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(x)
    return counter.get_total_flops() / 1e9


def bundle_gflops(bundle: Any, shape: Sequence[int] = STANDARD_VOLUME) -> float:
    """:func:`forward_gflops` of a model bundle's network."""
    meta = bundle.meta
    kwargs = {"in_channels": len(meta.channels), "out_channels": meta.num_classes, **meta.network_kwargs}
    return forward_gflops(meta.network_name, kwargs, shape)


def measure_latency(bundles: Sequence[Any], image: Any, rounds: int = 3, threads: int = 2) -> list[float]:
    """Median seconds of ``Segmenter.segment(image)`` per bundle, measured side by side on the CPU.

    Every model segments once to warm up; then ``rounds`` rounds run the models
    in turn (interleaved, so load changes on the machine hit all of them alike).
    The time covers preprocessing, sliding-window inference, mapping back to the
    input grid and postprocessing (not file reading or writing).
    """
    from ProstateKDLib.inference import Segmenter

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    segmenters = [Segmenter(b, device="cpu", num_threads=threads) for b in bundles]
    for segmenter in segmenters:
        segmenter.segment(image)
    times: list[list[float]] = [[] for _ in segmenters]
    for _ in range(rounds):
        for i, segmenter in enumerate(segmenters):
            start = time.perf_counter()
            segmenter.segment(image)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]
