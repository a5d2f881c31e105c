#!/usr/bin/env python
"""End-to-end time and peak memory of ``prostatekd segment``, split by stage.

Measures, on a synthetic (phantom) volume of a given size and spacing
(default 320x320x24 at 0.6x0.6x3.6 mm, a typical prostate T2):

* in-process stages per run: read / preprocess / network / postprocess / write
  (first run = cold, then the median of the warm runs);
* the peak resident memory of the worker process (and its baseline after imports);
* the wall time of the whole ``prostatekd segment`` command in a fresh process
  (Python start-up and imports included).

Each measurement runs in a fresh worker process so memory peaks do not mix.
Prints a table and writes JSON (``--out``). Not a unit test: the suite only
runs ``--smoke`` to keep the script working.

    python benchmarks/segment_benchmark.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("read", "preprocess", "network", "postprocess", "write")


def worker(args: argparse.Namespace) -> None:
    """Run inside a fresh process: segment ``args.input`` ``args.repeats`` times, print JSON."""
    import resource

    start = time.perf_counter()
    from ProstateKDLib.memory import skip_optional_imports, use_mmap_for_large_blocks

    use_mmap_for_large_blocks()  # as the prostatekd command does
    with skip_optional_imports():  # as the prostatekd command does
        import monai.inferers  # noqa: F401  (MONAI imports lazily otherwise; count it here)
        import monai.transforms  # noqa: F401
    import SimpleITK  # noqa: F401
    import torch

    from ProstateKDLib.inference import Segmenter

    torch.set_num_threads(args.threads)
    import_seconds = time.perf_counter() - start
    start = time.perf_counter()
    segmenter = Segmenter(args.model, device=args.device, num_threads=args.threads)
    load_seconds = time.perf_counter() - start
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runs = []
    for index in range(args.repeats + 1):
        output = Path(args.workdir) / f"mask_{index}.nii.gz"
        result = segmenter.segment_file(args.input, output, overwrite=True)
        runs.append({**result.timings, "total": sum(result.timings.values()), "volume_ml": result.volume_ml})
    print(json.dumps({
        "import_s": import_seconds,
        "model_load_s": load_seconds,
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": runs,
        "model": f"{segmenter.bundle.meta.name} {segmenter.bundle.meta.version}",
        "device": str(segmenter.device),
    }))


def make_input(workdir: Path, size: list[int], spacing: list[float]) -> Path:
    """Write a phantom volume with the requested size and spacing."""
    import SimpleITK as sitk

    from ProstateKDLib.phantom import make_phantom

    image, _ = make_phantom(seed=7, site="RUNMC", size=tuple(size))
    # make_phantom keeps the site's field of view; set the spacing asked for
    image.SetSpacing(tuple(spacing))
    path = workdir / "input.nii.gz"
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def run_worker(args: argparse.Namespace, input_path: Path, workdir: Path) -> dict:
    command = [
        sys.executable, __file__, "--worker", "--input", str(input_path), "--workdir", str(workdir),
        "--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device,
    ] + (["--model", args.model] if args.model else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_cli(args: argparse.Namespace, input_path: Path, workdir: Path) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of one whole ``prostatekd segment`` command in a fresh process."""
    command = [sys.executable, "-m", "ProstateKDLib.cli", "segment", str(input_path),
               str(workdir / "cli_mask.nii.gz"), "--overwrite", "--threads", str(args.threads),
               "--device", args.device] + (["--model", args.model] if args.model else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    stderr = process.stderr.read() if process.stderr else b""
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not the largest of all children
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"prostatekd segment failed:\n{stderr.decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024


def summarize(raw: dict, cli: tuple[float, float], args: argparse.Namespace) -> dict:
    cold, warm = raw["runs"][0], raw["runs"][1:] or raw["runs"][:1]
    median = {key: statistics.median(run[key] for run in warm) for key in (*STAGES, "total")}
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "model": raw["model"],
        "device": raw["device"],
        "threads": args.threads,
        "input_size": args.size,
        "input_spacing_mm": args.spacing,
        "input": "synthetic phantom (RUNMC profile)",
        "repeats": len(warm),
        "warm_median_s": median,
        "cold_first_run_s": {key: cold[key] for key in (*STAGES, "total")},
        "import_s": raw["import_s"],
        "model_load_s": raw["model_load_s"],
        "cli_wall_s": cli[0],
        "cli_peak_rss_mb": cli[1],
        "peak_rss_mb": raw["peak_rss_mb"],
        "baseline_rss_mb_after_imports_and_model": raw["baseline_rss_mb"],
        "volume_ml": cold["volume_ml"],
    }


def print_table(result: dict) -> None:
    rows = [("stage", "warm median s", "cold first run s")]
    rows += [(s, f"{result['warm_median_s'][s]:.3f}", f"{result['cold_first_run_s'][s]:.3f}") for s in STAGES]
    rows.append(("total (in process)", f"{result['warm_median_s']['total']:.3f}",
                 f"{result['cold_first_run_s']['total']:.3f}"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"model {result['model']} on {result['device']}, {result['threads']} threads, "
          f"input {'x'.join(map(str, result['input_size']))} at "
          f"{'x'.join(f'{s:g}' for s in result['input_spacing_mm'])} mm (phantom)")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))
    print(f"imports {result['import_s']:.2f} s, model load {result['model_load_s']:.2f} s, "
          f"whole CLI command {result['cli_wall_s']:.2f} s")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB over {result['repeats'] + 1} runs "
          f"(after imports and model load {result['baseline_rss_mb_after_imports_and_model']:.0f} MB); "
          f"whole CLI command {result['cli_peak_rss_mb']:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundle name or path (default: bundled student)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="warm runs after the cold one")
    parser.add_argument("--size", type=int, nargs=3, default=[320, 320, 24])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.6, 0.6, 3.6])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "segment_benchmark.json")
    parser.add_argument("--smoke", action="store_true", help="tiny volume, one repeat (for the test suite)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.smoke:
        args.size, args.spacing, args.repeats = [64, 64, 12], [2.4, 2.4, 7.2], 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        input_path = make_input(workdir, args.size, args.spacing)
        raw = run_worker(args, input_path, workdir)
        cli = time_cli(args, input_path, workdir)
    result = summarize(raw, cli, args)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
