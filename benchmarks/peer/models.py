"""The models compared: the default student, its teacher(s), and the peer TAPS; their size and cost."""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEACHER_CONFIG = ROOT / "training" / "configs" / "teacher_phantom.yaml"
PEER_KEY = "taps"


# What taps.inference.segment does (lavlab-taps 1.1.2, read from its source), for the record.
PEER_PIPELINE = (
    "LoadImaged (nibabel) -> Orientationd RAS -> Spacingd 0.8x0.8x3 mm bilinear -> NormalizeIntensityd "
    "(z-score of the non-zero voxels, no percentile clipping) -> CropForegroundd (margin 5); ONNX session "
    "created on every call; sliding window 128x128x32, overlap 0.5, gaussian blending, batch 1; gaussian "
    "blur of the logits (sigma 2.5 voxels, scipy); Invertd back to the input grid (bilinear); sigmoid > 0.55; "
    "QC (volume 15-80 cc, extent, border contact, slice gaps, holes, components): keeps the largest 3D "
    "component, may write a *_cleaned mask, renames the output *_abnormal unless exact=True; no output and "
    "BlankMaskError for an empty mask"
)


@dataclass
class ModelSpec:
    """One model of the comparison, as the table and JSON describe it."""

    key: str  # short id used in results: student, teacher, teacher2, taps
    label: str  # as printed in the table
    role: str  # student | teacher | peer
    source: str  # bundle path, or how it was built
    info: dict[str, Any] = field(default_factory=dict)  # parameters, GFLOPs, grid, licence...
    bundle: str | None = None  # bundle path for the torch worker (None for the peer)


def _bundle_info(bundle: Any) -> dict[str, Any]:
    """Parameters, GFLOPs (one forward on 320x320x24 and per window), grid and licence of a bundle."""
    from ProstateKDLib.networks import count_parameters

    from training.complexity import STANDARD_VOLUME, forward_gflops

    meta = bundle.meta
    kwargs = {"in_channels": len(meta.channels), "out_channels": meta.num_classes, **meta.network_kwargs}
    return {
        "name": f"{meta.name} {meta.version}",
        "network": f"{meta.network_name} {json.dumps(meta.network_kwargs, separators=(',', ':'))}",
        "parameters": count_parameters(bundle.build_network()),
        f"gflops_{'x'.join(map(str, STANDARD_VOLUME))}": forward_gflops(meta.network_name, kwargs, STANDARD_VOLUME),
        "gflops_per_window": forward_gflops(meta.network_name, kwargs, meta.patch_size),
        "patch_size": list(meta.patch_size),
        "grid_spacing_mm": list(meta.spacing),
        "overlap": meta.overlap,
        "license": meta.license,
    }


def student_spec(path: str | None) -> tuple[ModelSpec, Any]:
    """The student (default: the bundled ``prostatekd-student``) and its loaded bundle."""
    from ProstateKDLib.bundle import resolve_model

    bundle = resolve_model(path)
    spec = ModelSpec("student", f"student {bundle.meta.name}", "student", str(bundle.path),
                     _bundle_info(bundle), str(bundle.path))
    return spec, bundle


def random_teacher_bundle(student: Any, outdir: Path, config: Path = TEACHER_CONFIG) -> Any:
    """A bundle with the teacher architecture of ``config`` (model section), random weights (seed 0).

    It keeps the student's preprocessing and sliding-window settings: a student is distilled
    from teachers on its own grid (distill refuses others), so this is the cost the teacher
    would have on the student's job. Latency and memory do not depend on the weights.
    """
    import torch
    import yaml

    from ProstateKDLib.bundle import save_bundle
    from ProstateKDLib.networks import build_network

    model = yaml.safe_load(config.read_text())["model"]
    data = copy.deepcopy(json.loads(student.read_file("model.json")))

    data.update(name="teacher-untrained", version="0.0.0",
                description=f"teacher architecture of {config.name} with random weights (timing only)",
                network={"name": model["network"], "kwargs": dict(model.get("kwargs") or {})})
    data["provenance"] = {"training_data": "none (random weights)", "method": "none", "teachers": [],
                          "validation_dice": None, "date": date.today().isoformat()}
    torch.manual_seed(0)
    kwargs = {"in_channels": int(model.get("in_channels", 1)), "out_channels": int(model.get("num_classes", 2)),
              **data["network"]["kwargs"]}
    network = build_network(model["network"], kwargs)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    return save_bundle(outdir, data, network.state_dict(), overwrite=True)


def teacher_specs(paths: list[str], student: Any, workdir: Path) -> list[ModelSpec]:
    """Teachers: ``--teacher`` bundles, else those the student's provenance names (if installed),
    else the architecture of ``teacher_phantom.yaml`` with random weights."""
    from ProstateKDLib.bundle import resolve_model
    from ProstateKDLib.errors import BundleError

    bundles, how = [], "given with --teacher"
    for path in paths:
        bundles.append(resolve_model(path))
    if not bundles:
        how = "named in the student's provenance"
        for teacher in student.meta.provenance.get("teachers") or []:
            name = teacher.get("name") if isinstance(teacher, dict) else teacher
            try:
                bundles.append(resolve_model(name))
            except (BundleError, TypeError):
                continue
    specs = []
    for index, bundle in enumerate(bundles):
        key = "teacher" if index == 0 else f"teacher{index + 1}"
        specs.append(ModelSpec(key, f"teacher {bundle.meta.name}", "teacher", f"{bundle.path} ({how})",
                               _bundle_info(bundle), str(bundle.path)))
    if specs:
        return specs
    bundle = random_teacher_bundle(student, workdir / "teacher-untrained")
    info = _bundle_info(bundle)
    info["untrained"] = True
    return [ModelSpec("teacher", "teacher (untrained weights, timing only)", "teacher",
                      f"architecture of {TEACHER_CONFIG.relative_to(ROOT)} (model section), random weights, "
                      "student's grid and sliding window", info, str(bundle.path))]


def peer_spec(python: Path) -> ModelSpec:
    """TAPS as its own environment describes it (``taps_runner.py info``)."""
    runner = Path(__file__).with_name("taps_runner.py")
    done = subprocess.run([str(python), str(runner), "info"], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"TAPS info failed:\n{done.stderr[-3000:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    info["overlap"] = 0.5
    info["pipeline"] = PEER_PIPELINE
    return ModelSpec(PEER_KEY, "peer TAPS", "peer", f"{info['package']} in {python.parent.parent}", info)
