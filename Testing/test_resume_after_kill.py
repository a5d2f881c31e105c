"""Every training command resumes exactly after a SIGKILL in the middle of epoch 2.

For each command a real ``python -m training.cli`` subprocess is killed (SIGKILL, sent by
the process to itself at the second optimizer step of epoch 2, i.e. after one step whose
update no checkpoint holds), then ``--resume`` completes the folder; its final weights
(checkpoints and exported bundles) and ``log.csv`` (without the timing column) equal an
uninterrupted run's. Tiny phantoms and a tiny UNet: 2 optimizer steps per epoch, 2 epochs.
"""

from __future__ import annotations

import copy
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import MODEL_JSON, ROOT, make_bundle

STEPS_PER_EPOCH = 2  # 4 training cases (6 minus 2 validation), 1 patch each, batch 2
KILL_AT_STEP = STEPS_PER_EPOCH + 1  # the second step of epoch 2
GRID = {"spacing": [4.0, 4.0, 6.0], "patch_size": [16, 16, 8]}
# run as a subprocess: SIGKILL itself when the engine asks for the learning rate of step KILL_AT_STEP
KILLER = f"""
import os, signal, sys
import training.engine as engine
schedule = engine.learning_rate
def learning_rate(base, kind, step, *args, **kwargs):
    if step == {KILL_AT_STEP}:
        os.kill(os.getpid(), signal.SIGKILL)
    return schedule(base, kind, step, *args, **kwargs)
engine.learning_rate = learning_rate
from training.cli import main
sys.exit(main(sys.argv[1:]))
"""
COMMANDS = ("train", "distill", "train-teacher", "adapt", "coteach", "self-distill", "distill-data-free")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Labelled phantoms (3 sites x 2), unlabelled images (labels deleted), a teacher bundle, configs."""
    from ProstateKDLib.phantom import write_phantom_dataset

    base = tmp_path_factory.mktemp("kill-resume")
    write_phantom_dataset(base / "data", cases_per_site=2, sites=["RUNMC", "BMC", "HK"], size=(40, 40, 10))
    write_phantom_dataset(base / "unlabelled", cases_per_site=2, sites=["UCL"], size=(40, 40, 10), seed=7)
    for label in (base / "unlabelled" / "UCL").glob("*_segmentation.nii.gz"):
        label.unlink()
    model = copy.deepcopy(MODEL_JSON)
    model["input"].update(GRID)
    make_bundle(base / "teacher", model, seed=3)
    config = yaml.safe_load((ROOT / "training" / "configs" / "smoke.yaml").read_text())
    config["data"]["root"] = str(base / "data")
    config["preprocessing"].update(GRID)
    config["train"].update(num_threads=1, lr_schedule="poly")
    (base / "student.yaml").write_text(yaml.safe_dump(config))
    config["distiller"] = {"name": "logit_kd", "weights": {"dice": 1.0, "ce": 1.0, "kl": 1.0}}
    (base / "kd.yaml").write_text(yaml.safe_dump(config))
    return {"base": base, "data": base / "data", "unlabelled": base / "unlabelled", "teacher": base / "teacher",
            "student": base / "student.yaml", "kd": base / "kd.yaml"}


def arguments(command: str, inputs: dict[str, Path], out: Path) -> list[str]:
    """The command line (after ``training.cli``) that trains ``command`` into ``out``."""
    quiet = ["--quiet"]
    if command == "train":
        return ["train", str(inputs["student"]), "--run-dir", str(out), *quiet]
    if command == "distill":
        return ["distill", str(inputs["kd"]), "--run-dir", str(out), "--teachers", str(inputs["teacher"]), *quiet]
    if command == "train-teacher":
        return ["train-teacher", str(inputs["student"]), "--run-dir", str(out), "--subsets", "all", *quiet]
    if command == "self-distill":
        return ["self-distill", str(inputs["student"]), "--out", str(out), "--generations", "2", *quiet]
    if command == "adapt":
        return ["adapt", str(inputs["teacher"]), str(inputs["data"]), "--target-site", "HK", "--out", str(out),
                "--epochs", "2", "--patches-per-volume", "1", "--rampup-epochs", "1", "--device", "cpu",
                "--threads", "1", "--no-evaluate", *quiet]
    if command == "coteach":
        return ["coteach", str(inputs["student"]), "--unlabelled", str(inputs["unlabelled"]), "--out", str(out),
                "--large-channels", "4", "8", "16", "--rampup-epochs", "1", "--confidence", "0.6", "--threads", "1",
                *quiet]
    assert command == "distill-data-free"
    return ["distill-data-free", str(inputs["teacher"]), "--out", str(out), "--epochs", "2",
            "--batches-per-epoch", str(STEPS_PER_EPOCH), "--synthesis-steps", "2", "--threads", "1", *quiet]


def fingerprint(folder: Path) -> dict[str, object]:
    """Every log.csv without 'seconds', every network tensor of every checkpoint and bundle under ``folder``."""
    from safetensors.torch import load_file

    from training.checkpoint import load_checkpoint

    found: dict[str, object] = {}
    for path in sorted(folder.rglob("log.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
        found[str(path.relative_to(folder))] = rows
    for path in sorted(folder.rglob("checkpoint_last.pt")):
        checkpoint = load_checkpoint(path)
        for key in ("model", "teacher", "large_model", "distiller"):
            for name, tensor in (checkpoint.get(key) or {}).items():
                found[f"{path.relative_to(folder)}:{key}.{name}"] = tensor
        found[f"{path.relative_to(folder)}:epoch"] = checkpoint["epoch"]
    for path in sorted(folder.rglob("model.safetensors")):
        for name, tensor in load_file(str(path)).items():
            found[f"{path.relative_to(folder)}:{name}"] = tensor
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_resume_after_sigkill_mid_epoch_2_equals_uninterrupted(command, inputs, tmp_path):
    from training.cli import main

    threads = torch.get_num_threads()
    try:
        whole, killed = tmp_path / "whole", tmp_path / "killed"
        assert main(arguments(command, inputs, whole)) == 0
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        env = {k: v for k, v in env.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        proc = subprocess.run([sys.executable, "-c", KILLER, *arguments(command, inputs, killed)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        logs = list(killed.rglob("log.csv"))
        assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 2  # header + epoch 1: killed in epoch 2
        assert main([*arguments(command, inputs, killed), "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)
    expected, got = fingerprint(whole), fingerprint(killed)
    assert sorted(got) == sorted(expected) and any(k.endswith(".safetensors") or ":model." in k for k in got)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, got[key]), key
        else:
            assert got[key] == value, key
