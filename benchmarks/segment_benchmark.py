#!/usr/bin/env python
"""Whole-command time and peak memory of ``prostatekd segment``, side by side, plus its stages.

The headline is what a user waits for: the whole ``prostatekd segment`` command in a
fresh process (Python start-up, imports, model load, read, work, write), its wall time
and the peak resident memory of that process (``os.wait4``), as medians of
``--repeats`` runs. In the same run, round-robin so machine load hits all alike:

* ``python -c "import torch"``: the yardstick of machine speed (targets are ratios to it);
* the student with each backend (``--backend onnx``, ``--backend torch``);
* the teacher (default backend);
* the peer TAPS (``--peer``, its own venv from ``benchmarks/setup_peer.sh``): its own
  ``taps segment IN OUT --device cpu --exact`` command.

Then the in-process breakdown per student backend (a fresh worker process each, which
loads the model once and segments ``repeats + 1`` times: read / preprocess / network /
postprocess / write, cold first run and warm medians; imports and model load timed).

Inputs: the bundled sample (``Resources/Samples/PhantomCase01.nii.gz``, 320x320x24 at
0.6x0.6x3.6 mm, phantom) and, where ``../shared/data`` is beside the checkout, the
real ProstateX-0001 T2 series (384x384x19, 0.5x0.5x3 mm), each copied to NIfTI first so
every tool reads the same file. Writes ``segment_benchmark.json`` and ``.md``::

    python benchmarks/segment_benchmark.py --threads 2 --repeats 5 --peer \\
        --out benchmarks/reports/<date>/segment_benchmark.json

``--smoke`` (for the test suite): a small phantom, one repeat, only ``--model``.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("read", "preprocess", "network", "postprocess", "write")
SAMPLE = ROOT / "Resources" / "Samples" / "PhantomCase01.nii.gz"
PROSTATEX_T2 = ROOT.parent / "shared" / "data" / "dicom" / "ProstateX-0001" / "07-08-2011" / "6.000000-t2tsetra-76610"
PEER_PYTHON = ROOT / "benchmarks" / ".venv-peer" / "bin" / "python"
YARDSTICK = "import torch"
TAPS = "TAPS (taps segment)"
HEADLINE = "student (onnx)"
#: issue 17's targets for the default student (2 CPU cores): whole command / yardstick, peak RSS MB,
#: in-process seconds (warm total), TAPS whole command / student whole command.
TARGETS = {"x_yardstick_max": 0.8, "peak_rss_mb_max": 300.0, "in_process_s_max": 0.6, "taps_over_student_min": 40.0}


def worker(args: argparse.Namespace) -> None:
    """Run inside a fresh process: segment ``args.input`` ``args.repeats + 1`` times, print JSON."""
    import resource

    start = time.perf_counter()
    from ProstateKDLib.memory import skip_optional_imports, use_mmap_for_large_blocks

    use_mmap_for_large_blocks()  # as the prostatekd command does
    if args.backend == "torch":
        with skip_optional_imports():  # as the prostatekd command does
            import monai  # noqa: F401
    from ProstateKDLib.inference import Segmenter

    import_seconds = time.perf_counter() - start
    start = time.perf_counter()
    segmenter = Segmenter(args.model, device=args.device, num_threads=args.threads, backend=args.backend)
    load_seconds = time.perf_counter() - start
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runs = []
    for index in range(args.repeats + 1):
        output = Path(args.workdir) / f"mask_{args.backend}_{index}.nii.gz"
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
        "backend": segmenter.backend,
        "inference": result.mode,
        "torch_imported": "torch" in sys.modules,
        "monai_imported": "monai" in sys.modules,
    }))


def make_inputs(workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """NIfTI copies of the benchmark inputs: name, path, size, spacing, what it is."""
    import SimpleITK as sitk

    from ProstateKDLib.image_io import read_volume

    if args.smoke:
        from ProstateKDLib.phantom import make_phantom

        image, _ = make_phantom(seed=7, site="RUNMC", size=(64, 64, 12))
        image.SetSpacing((2.4, 2.4, 7.2))
        sources = [("phantom 64x64x12", image, "synthetic phantom")]
    else:
        sources = [("sample", read_volume(SAMPLE), "bundled sample (phantom)")]
        if PROSTATEX_T2.is_dir() and not args.sample_only:
            sources.append(("ProstateX-0001 T2", read_volume(PROSTATEX_T2), "real ProstateX T2 (DICOM, TCIA)"))
    inputs = []
    for index, (name, image, kind) in enumerate(sources):
        path = workdir / f"input_{index}.nii.gz"
        sitk.WriteImage(image, str(path), useCompression=True)
        inputs.append({"name": name, "path": path, "kind": kind, "size": list(image.GetSize()),
                       "spacing_mm": [round(s, 4) for s in image.GetSpacing()]})
    return inputs


def commands(args: argparse.Namespace, input_path: Path, workdir: Path) -> dict[str, list[str]]:
    """The whole commands to time, by label."""
    def segment(*extra: str) -> list[str]:
        return [sys.executable, "-m", "ProstateKDLib.cli", "segment", str(input_path), str(workdir / "cli_mask.nii.gz"),
                "--overwrite", "--threads", str(args.threads), "--device", args.device, *extra]

    model = ["--model", args.model] if args.model else []
    found = {f'python -c "{YARDSTICK}"': [sys.executable, "-c", YARDSTICK]}
    if args.smoke:
        found["model (auto backend)"] = segment(*model)
        return found
    for backend in args.backends:
        found[f"student ({backend})"] = segment(*model, "--backend", backend)
    if args.teacher:
        found["teacher (auto backend)"] = segment("--model", args.teacher)
    if args.peer:
        found[TAPS] = [str(PEER_PYTHON.with_name("taps")), "segment", str(input_path),
                       str(workdir / "taps_mask.nii.gz"), "--device", args.device, "--exact"]
    return found


def time_command(command: list[str], threads: int) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of one command in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    stderr = process.stderr.read() if process.stderr else b""
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not the largest of all children
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(command)}\n{stderr.decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024


def run_worker(args: argparse.Namespace, backend: str, input_path: Path, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", "--input", str(input_path), "--workdir", str(workdir),
               "--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device,
               "--backend", backend] + (["--model", args.model] if args.model else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    cold, warm = raw["runs"][0], raw["runs"][1:] or raw["runs"][:1]
    return {
        **{k: v for k, v in raw.items() if k != "runs"},
        "repeats": len(warm),
        "warm_median_s": {key: statistics.median(run[key] for run in warm) for key in (*STAGES, "total")},
        "cold_first_run_s": {key: cold[key] for key in (*STAGES, "total")},
        "volume_ml": cold["volume_ml"],
    }


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every input: whole commands round-robin, then the in-process stages per backend."""
    results = []
    for input_index, item in enumerate(make_inputs(workdir, args)):
        cmds = commands(args, item["path"], workdir)
        if args.peer_inputs is not None and input_index >= args.peer_inputs:
            cmds.pop(TAPS, None)  # TAPS on the first inputs only (a minute or two a run)
        samples: dict[str, list[tuple[float, float]]] = {label: [] for label in cmds}
        for round_index in range(args.repeats):
            for label, command in cmds.items():
                if label == TAPS and round_index >= (args.peer_repeats or args.repeats):
                    continue  # TAPS takes a minute a run: its first rounds only, still interleaved
                samples[label].append(time_command(command, args.threads))
                print(f"{item['name']}: {label}: {samples[label][-1][0]:.2f} s", file=sys.stderr, flush=True)
        yard = statistics.median(s for s, _ in samples[f'python -c "{YARDSTICK}"'])
        whole = {}
        for label, values in samples.items():
            seconds = statistics.median(s for s, _ in values)
            whole[label] = {"median_s": seconds, "runs_s": [round(s, 3) for s, _ in values],
                            "peak_rss_mb": statistics.median(m for _, m in values),
                            "x_yardstick": seconds / yard}
        taps = whole.get(TAPS)
        for label, entry in whole.items():
            entry["taps_over_this"] = taps["median_s"] / entry["median_s"] if taps else None
        stages = {b: run_worker(args, b, item["path"], workdir) for b in (["auto"] if args.smoke else args.backends)}
        results.append({**{k: v for k, v in item.items() if k != "path"}, "whole_command": whole, "in_process": stages,
                        "targets": targets(whole, stages)})
    import onnxruntime

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "load_average_at_end": list(os.getloadavg()),
        "threads": args.threads,
        "device": args.device,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "gpu": args.gpu_note,
        "repeats": args.repeats,
        "peer_repeats": (args.peer_repeats or args.repeats) if args.peer else None,
        "command": " ".join(["python", "benchmarks/segment_benchmark.py", *sys.argv[1:]]),
        "inputs": results,
    }


def targets(whole: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any] | None:
    """The headline student's figures against :data:`TARGETS` (None when it was not timed)."""
    student = whole.get(HEADLINE)
    if student is None:
        return None
    in_process = stages.get("onnx", {}).get("warm_median_s", {}).get("total")
    taps = student.get("taps_over_this")
    return {
        "x_yardstick": {"value": round(student["x_yardstick"], 3), "target": f"<= {TARGETS['x_yardstick_max']}",
                        "met": student["x_yardstick"] <= TARGETS["x_yardstick_max"]},
        "peak_rss_mb": {"value": round(student["peak_rss_mb"]), "target": f"<= {TARGETS['peak_rss_mb_max']:g}",
                        "met": student["peak_rss_mb"] <= TARGETS["peak_rss_mb_max"]},
        "in_process_s": {"value": None if in_process is None else round(in_process, 3),
                         "target": f"<= {TARGETS['in_process_s_max']}",
                         "met": None if in_process is None else in_process <= TARGETS["in_process_s_max"]},
        "taps_over_student": {"value": None if taps is None else round(taps, 1),
                              "target": f">= {TARGETS['taps_over_student_min']:g}",
                              "met": None if taps is None else taps >= TARGETS["taps_over_student_min"]},
    }


def markdown(result: dict[str, Any]) -> str:
    """Tables: whole commands (headline), then the in-process stages."""
    lines = [f"# prostatekd segment: whole command and stages ({result['date']})", "",
             f"{result['machine']}; {result['threads']} threads, device {result['device']}; medians of "
             f"{result['repeats']} runs (TAPS: {result.get('peer_repeats') or '-'}), round-robin; load average at the end "
             f"{', '.join(f'{x:.1f}' for x in result['load_average_at_end'])}. GPU: {result.get('gpu') or '-'} "
             f"(onnxruntime providers: {', '.join(result.get('onnxruntime_providers', []))}). "
             f"Command: `{result['command']}`", ""]
    for item in result["inputs"]:
        lines += [f"## {item['name']}: {'x'.join(map(str, item['size']))} at "
                  f"{'x'.join(f'{s:g}' for s in item['spacing_mm'])} mm ({item['kind']})", "",
                  f"| whole command | median s | x `{YARDSTICK}` | peak RSS MB | TAPS time / this |",
                  "|---|---|---|---|---|"]
        for label, e in item["whole_command"].items():
            ratio = f"{e['taps_over_this']:.1f}x" if e["taps_over_this"] else "-"
            lines.append(f"| {label} | {e['median_s']:.2f} | {e['x_yardstick']:.2f} | {e['peak_rss_mb']:.0f} | {ratio} |")
        lines += ["", "| in process (" + ", ".join(f"{b}: {s['backend']}, {s['inference']}" for b, s in
                                                   item["in_process"].items()) + ") | "
                  + " | ".join(item["in_process"]) + " |", "|---|" + "---|" * len(item["in_process"])]
        for stage in (*STAGES, "total"):
            lines.append(f"| {stage} (warm median s) | "
                         + " | ".join(f"{s['warm_median_s'][stage]:.3f}" for s in item["in_process"].values()) + " |")
        for key, label in (("import_s", "imports s"), ("model_load_s", "model load s"), ("peak_rss_mb", "peak RSS MB")):
            lines.append(f"| {label} | " + " | ".join(f"{s[key]:.2f}" for s in item["in_process"].values()) + " |")
        if item.get("targets"):
            lines += ["", f"| {HEADLINE} vs issue 17's targets | measured | target | met |", "|---|---|---|---|"]
            for key, t in item["targets"].items():
                met = "-" if t["met"] is None else ("yes" if t["met"] else "no")
                lines.append(f"| {key} | {'-' if t['value'] is None else t['value']} | {t['target']} | {met} |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Whole-command medians per input (log scale), with the yardstick and the run-to-run range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = result["inputs"]
    fig, axes = plt.subplots(1, len(inputs), figsize=(5.2 * len(inputs), 3.2), dpi=120, squeeze=False)
    for ax, item in zip(axes[0], inputs):
        labels = list(item["whole_command"])
        medians = [item["whole_command"][k]["median_s"] for k in labels]
        lows = [m - min(item["whole_command"][k]["runs_s"]) for k, m in zip(labels, medians)]
        highs = [max(item["whole_command"][k]["runs_s"]) - m for k, m in zip(labels, medians)]
        colours = ["0.6" if YARDSTICK in k else ("C3" if k == TAPS else "C0") for k in labels]
        ax.barh(range(len(labels)), medians, xerr=[lows, highs], color=colours)
        for y, (label, m) in enumerate(zip(labels, medians)):
            rss = item["whole_command"][label]["peak_rss_mb"]
            ax.text(max(item["whole_command"][label]["runs_s"]) * 1.12, y, f"{m:.2f} s, {rss:.0f} MB", va="center",
                    fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(right=max(medians) * 8)
        ax.set_xlabel("whole command, median s (log)", fontsize=8)
        ax.set_title(f"{item['name']} ({'x'.join(map(str, item['size']))})", fontsize=8)
    fig.suptitle(f"prostatekd segment vs peers, {result['threads']} threads, {result['machine']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="student bundle name or path (default: bundled student)")
    parser.add_argument("--teacher", default="prostatekd-teacher", help="teacher bundle ('' to skip)")
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch"], help="student backends to time")
    parser.add_argument("--peer", action="store_true", help="also time TAPS (benchmarks/setup_peer.sh)")
    parser.add_argument("--peer-inputs", type=int, default=None, help="time TAPS on the first N inputs only")
    parser.add_argument("--peer-repeats", type=int, default=None,
                        help="TAPS runs per input (default: --repeats), in the first rounds of the round-robin")
    parser.add_argument("--sample-only", action="store_true", help="only the bundled sample")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (medians), warm runs in process")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "segment_benchmark.json")
    parser.add_argument("--smoke", action="store_true", help="tiny volume, one repeat (for the test suite)")
    parser.add_argument("--gpu-note", default="none", help="what GPU the machine has (recorded in the report)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--replot", type=Path, default=None, help="only redraw the PNG of this JSON")
    args = parser.parse_args(argv)
    if args.replot is not None:
        plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return 0
    if args.worker:
        worker(args)
        return 0
    if args.smoke:
        args.repeats, args.peer = 1, False
    if args.peer and not PEER_PYTHON.is_file():
        raise SystemExit(f"--peer needs the peer environment {PEER_PYTHON}: run benchmarks/setup_peer.sh")
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args, Path(tmp))
    text = markdown(result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")
    if not args.smoke:
        plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
