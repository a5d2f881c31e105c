#!/usr/bin/env python
"""Run the peer TAPS (PyPI ``lavlab-taps``) for peer_benchmark.py, inside the peer's own venv.

Imports only the standard library, torch and ``taps``: nothing from ProstateKD. Two commands,
each printing one JSON object as the last line of stdout:

* ``info``: version, licence, parameters and forward GFLOPs of the network TAPS builds
  (``taps.inference.build_model``), the settings it runs with, onnxruntime providers;
* ``run``: ``taps.segment`` (its public Python API, file in -> file out) called
  ``repeats + 1`` times on one image. The ONNX predictor is wrapped to time each
  ``InferenceSession.run`` (the network-only time) and the session creation, and to set
  onnxruntime's intra-op thread count; TAPS itself is not changed.

    benchmarks/.venv-peer/bin/python benchmarks/peer/taps_runner.py run --input image.nii.gz \
        --mask mask.nii.gz --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from peak_memory import rss_mb  # this script's folder is sys.path[0]

TYPICAL_VOLUME = (320, 320, 24)


def info() -> dict:
    """What TAPS is: version, licence, network size and cost, settings, onnxruntime."""
    import importlib.metadata as md

    import onnxruntime as ort
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import taps
    import taps.inference as ti

    meta = md.metadata("lavlab-taps")
    network = ti.build_model(torch.device("cpu"))
    parameters = sum(p.numel() for p in network.parameters())

    def gflops(shape: tuple[int, int, int]) -> float:
        with torch.device("meta"):
            model = ti.build_model(torch.device("meta")).eval()
            x = torch.empty(1, 1, *shape)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        return counter.get_total_flops() / 1e9

    onnx = ti.resolve_checkpoint(None)
    return {
        "name": "TAPS",
        "package": f"lavlab-taps {taps.__version__}",
        "license": meta.get("License-Expression") or meta.get("License") or "unknown",
        "home": meta.get_all("Project-URL"),
        "network": "MONAI SegResNetDS(init_filters=32, norm=group 8, act=mish, dsdepth=4), ONNX",
        "parameters": parameters,
        "onnx_mb": round(onnx.stat().st_size / 1e6, 1),
        "gflops_320x320x24": gflops(TYPICAL_VOLUME),
        "gflops_per_window": gflops(tuple(ti.ROI_SIZE)),
        "patch_size": list(ti.ROI_SIZE),
        "grid_spacing_mm": list(ti.VOXEL_SPACING),
        "threshold": ti.DEFAULT_PROBABILITY_THRESHOLD,
        "logit_blur_sigma": ti.DEFAULT_SIGMA,
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }


class _Stats:
    """Per-call counters filled by the wrapped predictor."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.network = 0.0
        self.session = 0.0
        self.windows = 0
        self.first_window_at: float | None = None
        self.providers: list[str] = []


def install_timed_predictor(threads: int, stats: _Stats) -> None:
    """Replace ``taps.inference.ONNXPredictor`` by a subclass that times it and sets threads."""
    import onnxruntime as ort

    import taps.inference as ti

    make_options = ort.SessionOptions

    def options() -> ort.SessionOptions:
        opts = make_options()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return opts

    class TimedPredictor(ti.ONNXPredictor):
        def __init__(self, model_path, device):  # noqa: ANN001  (TAPS's signature)
            start = time.perf_counter()
            ti.ort.SessionOptions = options
            try:
                super().__init__(model_path, device)
            finally:
                ti.ort.SessionOptions = make_options
            stats.session += time.perf_counter() - start
            stats.providers = list(self.session.get_providers())

        def __call__(self, x):  # noqa: ANN001
            start = time.perf_counter()
            if stats.first_window_at is None:
                stats.first_window_at = start
            out = super().__call__(x)
            stats.network += time.perf_counter() - start
            stats.windows += int(x.shape[0])
            return out

    ti.ONNXPredictor = TimedPredictor


def run(args: argparse.Namespace) -> dict:
    """Segment ``args.input`` ``args.repeats + 1`` times through ``taps.segment``."""
    start = time.perf_counter()
    import torch

    import taps.inference as ti

    torch.set_num_threads(args.threads)
    import_s = time.perf_counter() - start
    stats = _Stats()
    install_timed_predictor(args.threads, stats)
    baseline = rss_mb()
    runs, errors, written = [], [], None
    for _ in range(args.repeats + 1):
        stats.reset()
        start = time.perf_counter()
        try:
            written = str(ti.segment(args.input, args.mask, None, args.device, exact=True))
            error = None
        except ti.BlankMaskError as exc:  # TAPS writes nothing for a blank mask
            error = f"blank mask: {exc}"
        total = time.perf_counter() - start
        pre = (stats.first_window_at - start - stats.session) if stats.first_window_at else None
        runs.append({"total": total, "network_forward": stats.network, "model_load": stats.session,
                     "preprocess": pre, "windows": stats.windows})
        if error:
            errors.append(error)
    return {
        "model": "TAPS",
        "device": args.device,
        "providers": stats.providers,
        "import_s": import_s,
        "load_s": 0.0,  # taps.segment creates its ONNX session on every call (runs[i].model_load)
        "baseline_rss_mb": baseline,
        "peak_rss_mb": rss_mb(),
        "gpu_peak_mb": None,  # onnxruntime's CUDA memory is not visible from here
        "runs": runs,
        "mask": written if written and Path(written).is_file() else None,
        "errors": sorted(set(errors)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="describe TAPS (JSON)")
    run_parser = sub.add_parser("run", help="segment one image repeatedly (JSON)")
    run_parser.add_argument("--input", required=True)
    run_parser.add_argument("--mask", required=True, help="output mask (.nii.gz)")
    run_parser.add_argument("--threads", type=int, default=2)
    run_parser.add_argument("--repeats", type=int, default=5, help="warm runs after the cold one")
    run_parser.add_argument("--device", default="cpu", help="cpu or cuda (CUDAExecutionProvider)")
    args = parser.parse_args(argv)
    result = info() if args.command == "info" else run(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
