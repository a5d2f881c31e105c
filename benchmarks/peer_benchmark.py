#!/usr/bin/env python
"""ProstateKD's default student vs its teacher(s) vs the peer TAPS, side by side in one run.

On the same synthetic phantom volumes (sizes ``small`` 160x160x16, ``typical`` 320x320x24,
``large`` 512x512x40, all at 0.6x0.6x3.6 mm by default) and thread counts (1, 2), every
model runs in a fresh process per (model, size, threads, device) cell and reports:
parameters, GFLOPs (one forward pass on 320x320x24, and as run by its sliding window),
end-to-end time file -> mask (cold first call incl. model load, then the median of the warm
runs), network-only time (sum of the forward passes; for TAPS its onnxruntime session runs),
peak resident memory of the process, and Dice of the mask against TAPS's mask and against
the phantom's label. Ratios student vs TAPS and student vs teacher come from the same run.

TAPS (PyPI ``lavlab-taps``) runs in its own environment (``benchmarks/setup_peer.sh``)
through its Python API. With a CUDA GPU the student and teacher(s) (and TAPS where
onnxruntime offers CUDAExecutionProvider) are measured on it too.

    benchmarks/run_peer_benchmark.sh                   # set up the peer venv if missing, then run
    python benchmarks/peer_benchmark.py --sizes typical --threads 2 --repeats 5
    python benchmarks/peer_benchmark.py --no-peer --sizes 64x64x8 --threads 1 --repeats 1

Writes ``peer_benchmark.json``, ``peer_benchmark.md``, ``peer_time_vs_size.png`` and
``peer_dice_vs_time.png`` in ``--out-dir`` (default ``benchmarks/results``). Not a unit test.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (HERE, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from peer import plots, report  # noqa: E402
from peer.inputs import DEFAULT_SPACING, InputSpec, make_input, parse_size  # noqa: E402
from peer.measure import Cell, dice, mask_volume_ml, run_cell, summarize  # noqa: E402
from peer.models import ModelSpec, peer_spec, student_spec, teacher_specs  # noqa: E402

DEFAULT_PEER_PYTHON = HERE / ".venv-peer" / "bin" / "python"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default=None, help="student bundle (default: bundled prostatekd-student)")
    parser.add_argument("--teacher", action="append", default=[], metavar="PATH",
                        help="teacher bundle (repeatable; default: the student's provenance, else the "
                             "teacher_phantom.yaml architecture with random weights)")
    parser.add_argument("--sizes", nargs="+", default=["small", "typical", "large"],
                        help="small, typical, large or XxYxZ")
    parser.add_argument("--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING), help="mm (x, y, z)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5,
                        help="warm runs after the cold one in the headline cell (typical size, 2 threads)")
    parser.add_argument("--sweep-repeats", type=int, default=1,
                        help="warm runs in the other cells (0: the cold run only)")
    parser.add_argument("--skip", action="append", default=[], metavar="MODEL:SIZE:THREADS[:DEVICE]",
                        help="skip matching cells, shell wildcards allowed (e.g. taps:large:1)")
    parser.add_argument("--cold-only", action="append", default=[], metavar="MODEL:SIZE:THREADS[:DEVICE]",
                        help="matching cells run the cold run only (e.g. 'taps:large:*')")
    parser.add_argument("--no-peer", action="store_true", help="leave TAPS out")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON)
    parser.add_argument("--no-gpu", action="store_true", help="CPU only even where CUDA is available")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs and masks here")
    parser.add_argument("--cell-timeout", type=float, default=1800.0, help="seconds per worker process")
    parser.add_argument("--note", default="", help="conditions to record (e.g. 'shared with a training run')")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.sweep_repeats < 0 or min(args.threads) < 1:
        parser.error("--repeats must be >= 1, --sweep-repeats >= 0 and --threads >= 1")
    return args


def machine(note: str) -> dict[str, Any]:
    """Where and under what load the run happened."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "description": f"{cpu}, {os.cpu_count()} CPU cores" + (f", GPU {gpu}" if gpu else ", no GPU"),
        "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "note": note or "no note",
    }


def cuda_devices(args: argparse.Namespace, peer: ModelSpec | None) -> tuple[bool, bool]:
    """(torch CUDA available for student/teacher, CUDAExecutionProvider available for TAPS)."""
    import torch

    torch_cuda = torch.cuda.is_available() and not args.no_gpu
    peer_cuda = bool(peer and "CUDAExecutionProvider" in peer.info.get("providers", [])) and not args.no_gpu
    return torch_cuda, peer_cuda


def matches(name: str, patterns: list[str]) -> bool:
    """``name`` (model:size:threads:device) matches one of ``patterns`` (device optional)."""
    return any(fnmatch.fnmatch(name, p if p.count(":") == 3 else p + ":*") for p in patterns)


def plan(args: argparse.Namespace, models: list[ModelSpec], inputs: list[InputSpec],
         headline: tuple[str, int, str], torch_cuda: bool, peer_cuda: bool) -> tuple[list[Cell], list[str]]:
    """Cells to measure (CPU grid, then GPU) and the names of those skipped."""
    cells, skipped = [], []

    def add(model: ModelSpec, size: str, threads: int, device: str) -> None:
        repeats = args.repeats if (size, threads) == headline[:2] else args.sweep_repeats
        name = f"{model.key}:{size}:{threads}:{device}"
        if matches(name, args.cold_only):
            repeats = 0
        if matches(name, args.skip):
            skipped.append(name)
        else:
            cells.append(Cell(model, size, threads, device, repeats))

    for spec in inputs:
        for threads in args.threads:
            for model in models:
                add(model, spec.name, threads, "cpu")
    gpu_threads = headline[1]
    for spec in inputs:
        for model in models:
            if (torch_cuda and model.role != "peer") or (peer_cuda and model.role == "peer"):
                add(model, spec.name, gpu_threads, "cuda")
    return cells, skipped


def add_dice(rows: list[dict[str, Any]], inputs: dict[str, dict[str, Any]], headline_threads: int) -> None:
    """Mask volume, Dice against TAPS's mask (same size and device) and against the phantom label."""
    peers = {}
    for row in sorted((r for r in rows if r["role"] == "peer" and r.get("mask")),
                      key=lambda r: r["threads"] != headline_threads):
        peers.setdefault((row["size"], row["device"]), row)
    peers_any = {}
    for (size, _), row in peers.items():
        peers_any.setdefault(size, row)
    for row in rows:
        row["mask_volume_ml"] = mask_volume_ml(row.get("mask"))
        row["dice_vs_phantom_label"] = dice(row.get("mask"), inputs[row["size"]]["label"])
        peer = peers.get((row["size"], row["device"])) or peers_any.get(row["size"])
        row["dice_vs_peer"] = None if row["role"] == "peer" or not peer else dice(row.get("mask"), peer["mask"])


def not_measured(args: argparse.Namespace, torch_cuda: bool, peer: ModelSpec | None, peer_cuda: bool,
                 skipped: list[str]) -> list[str]:
    """What this run could not measure, and why."""
    out = []
    if args.no_peer or peer is None:
        out.append("TAPS: left out (--no-peer or no peer environment)")
    if not torch_cuda:
        out.append("GPU: no CUDA device (or --no-gpu); the GPU code path is untested here")
    elif peer and not peer_cuda:
        out.append("TAPS on GPU: onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    if peer:
        out.append("TAPS GPU memory: onnxruntime's CUDA allocations are not visible (gpu_peak_mb n/a)")
        out.append("TAPS stage split: only the ONNX session runs (network), session creation (model load, "
                   "every call) and time to the first window (preprocess) are timed; the rest is lumped")
    out += [f"skipped cell {name}" for name in skipped]
    return out


def write_outputs(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """JSON, Markdown and the two plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{result['date'][:10]}, {result['machine']['description']}"
    files = {
        "json": out_dir / "peer_benchmark.json",
        "markdown": out_dir / "peer_benchmark.md",
        "time_vs_size": out_dir / "peer_time_vs_size.png",
        "dice_vs_time": out_dir / "peer_dice_vs_time.png",
    }
    result["outputs"] = {k: str(v.relative_to(ROOT) if v.is_relative_to(ROOT) else v) for k, v in files.items()}
    plots.time_vs_size(result["results"], files["time_vs_size"], f"Time vs input size ({title})")
    plots.dice_vs_time(result["results"], files["dice_vs_time"], f"Dice vs time (synthetic phantoms; {title})")
    files["markdown"].write_text(report.markdown(result))
    files["json"].write_text(json.dumps(result, indent=2) + "\n")
    return {k: str(v) for k, v in files.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    inputs_spec = [parse_size(s, args.spacing) for s in args.sizes]
    headline_size = "typical" if "typical" in args.sizes else inputs_spec[0].name
    headline = (headline_size, 2 if 2 in args.threads else args.threads[-1], "cpu")
    with tempfile.TemporaryDirectory(prefix="peer-benchmark-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        student, student_bundle = student_spec(args.student)
        models = [student, *teacher_specs(args.teacher, student_bundle, workdir)]
        peer = None
        if not args.no_peer:
            if not args.peer_python.is_file():
                raise SystemExit(f"no peer environment at {args.peer_python}: run benchmarks/setup_peer.sh "
                                 "(or pass --no-peer)")
            peer = peer_spec(args.peer_python)
            models.append(peer)
        torch_cuda, peer_cuda = cuda_devices(args, peer)
        cells, skipped = plan(args, models, inputs_spec, headline, torch_cuda, peer_cuda)
        inputs = {spec.name: make_input(spec, workdir / spec.name) for spec in inputs_spec}
        result: dict[str, Any] = {
            "benchmark": "peer_benchmark",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(args.note),
            "command": " ".join(["benchmarks/peer_benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
            "settings": {"sizes": args.sizes, "spacing_mm": args.spacing, "threads": args.threads,
                         "repeats_headline": args.repeats, "repeats_other": args.sweep_repeats,
                         "headline": {"size": headline[0], "threads": headline[1], "device": headline[2]}},
            "inputs": inputs,
            "models": {m.key: {"label": m.label, "role": m.role, "source": m.source, **m.info} for m in models},
            "results": [],
        }
        print(f"{len(cells)} cells ({len(skipped)} skipped); headline: {headline[0]}, {headline[1]} threads",
              flush=True)
        for index, cell in enumerate(cells, 1):
            raw = run_cell(cell, Path(inputs[cell.size]["image"]), workdir, args.peer_python if peer else None,
                           args.cell_timeout)
            row = summarize(cell, raw, inputs[cell.size])
            result["results"].append(row)
            status = (f"{row['time_s']:.2f} s ({row['time_basis']}), network {row.get('network_cold_s') or 0:.2f} s "
                      f"cold, peak {row['peak_rss_mb']:.0f} MB") if row.get("time_s") is not None else \
                "; ".join(row["errors"])
            print(f"[{index}/{len(cells)}] {cell.model.key} {cell.size} {cell.threads} thr {cell.device}: {status}",
                  flush=True)
        add_dice(result["results"], inputs, headline[1])
        for row in result["results"]:  # masks and inputs lived in the work folder
            row["mask"] = Path(row["mask"]).name if row.get("mask") else None
        for info in inputs.values():
            info["image"], info["label"] = Path(info["image"]).name, Path(info["label"]).name
        result["ratios"] = report.ratios(result["results"], headline)
        result["not_measured"] = not_measured(args, torch_cuda, peer, peer_cuda, skipped)
        result["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        result["run_seconds"] = round(time.perf_counter() - started, 1)
        print()
        report.print_table(result["results"])
        print()
        for line in report.ratio_lines(result):
            print(line)
        files = write_outputs(result, args.out_dir)
    for line in result["not_measured"]:
        print(f"not measured: {line}")
    print(f"wrote {', '.join(files.values())} ({result['run_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
