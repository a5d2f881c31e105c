#!/usr/bin/env python
"""Segment one image with a ProstateKD bundle ``repeats + 1`` times in a fresh process; print JSON.

Run by peer_benchmark.py (one process per model, size, thread count and device, so memory
peaks never mix). Does what ``prostatekd segment`` does (``Segmenter.segment_file``, file in
-> file out, glibc mmap threshold as the command sets it) and times, besides the stages,
the network forward passes alone (a thin wrapper around ``Segmenter.network``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from peak_memory import rss_mb  # this script's folder is sys.path[0]

ROOT = Path(__file__).resolve().parents[2]


class TimedNetwork:
    """Calls the network and adds up the seconds and windows of its forward passes."""

    def __init__(self, network, cuda: bool) -> None:  # noqa: ANN001  (a torch module)
        self.network, self.cuda = network, cuda
        self.seconds, self.windows = 0.0, 0

    def __call__(self, batch):  # noqa: ANN001
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = self.network(batch)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.windows += int(batch.shape[0])
        return out


def run(args: argparse.Namespace) -> dict:
    """Load the bundle, segment ``args.input`` repeatedly; timings, memory and the mask path."""
    start = time.perf_counter()
    import monai.inferers  # noqa: F401  (MONAI imports lazily otherwise; count it here)
    import monai.transforms  # noqa: F401
    import SimpleITK  # noqa: F401
    import torch

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from ProstateKDLib.inference import Segmenter
    from ProstateKDLib.memory import use_mmap_for_large_blocks

    use_mmap_for_large_blocks()  # as the prostatekd command does
    torch.set_num_threads(args.threads)
    import_s = time.perf_counter() - start
    start = time.perf_counter()
    segmenter = Segmenter(args.bundle, device=args.device, num_threads=args.threads)
    cuda = str(segmenter.device).startswith("cuda")
    timed = TimedNetwork(segmenter.network, cuda)
    segmenter.network = timed
    load_s = time.perf_counter() - start
    baseline = rss_mb()
    runs, result = [], None
    for _ in range(args.repeats + 1):
        timed.seconds, timed.windows = 0.0, 0
        result = segmenter.segment_file(args.input, args.mask, overwrite=True)
        runs.append({**result.timings, "total": sum(result.timings.values()),
                     "network_forward": timed.seconds, "windows": timed.windows,
                     "volume_ml": result.volume_ml})
    return {
        "model": f"{segmenter.bundle.meta.name} {segmenter.bundle.meta.version}",
        "device": str(segmenter.device),
        "import_s": import_s,
        "load_s": load_s,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": rss_mb(),
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "runs": runs,
        "mask": str(args.mask),
        "errors": [],
        "warnings": list(result.warnings) if result else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="model bundle path or name")
    parser.add_argument("--input", required=True)
    parser.add_argument("--mask", required=True, help="output mask (.nii.gz)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="warm runs after the cold one")
    parser.add_argument("--device", default="cpu")
    print(json.dumps(run(parser.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
