"""State under torchrun: every rank ends with the same student, adapters and amal λ; batch norm is synced or refused."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import MODEL_JSON, ROOT, make_bundle, unet
from ProstateKDLib.errors import ConfigError

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
# each rank trains, then saves what it holds: the student, the distiller's learned state (adapters, λ)
PER_RANK = """
import os, sys, torch
import training.train as train
built = []
build = train._build
def capture(*args):
    built.append(build(*args))
    return built[-1]
train._build = capture
from training.cli import main
code = main(sys.argv[2:])
d = built[-1]
torch.save({"student": d.student.state_dict(), "learned": d.learned_state_dict()},
           os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
sys.exit(code)
"""


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")
@pytest.mark.parametrize("distiller", ["seed_kd", "amal"])
def test_two_cpu_ranks_hold_the_same_student_adapters_and_lambda(distiller, phantom_folder, tmp_path):
    root = phantom_folder(4, ["BMC", "RUNMC"], seed=3)
    teacher = copy.deepcopy(MODEL_JSON)
    teacher["input"].update(spacing=[4.0, 4.0, 6.0], patch_size=[16, 16, 8])
    make_bundle(tmp_path / "teacher", teacher, seed=5)
    config = yaml.safe_load((ROOT / "training" / "configs" / "smoke.yaml").read_text())
    config["data"]["root"] = str(root)
    config["preprocessing"]["patch_size"] = [16, 16, 8]
    config["train"].update(epochs=2, num_threads=1)
    config["distiller"] = {"name": distiller}
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    port = str(31500 + os.getpid() % 1000 + len(distiller))
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_port", port, "--no-python", sys.executable, "-c",
           PER_RANK, str(tmp_path), "distill", str(tmp_path / "kd.yaml"), "--run-dir", str(tmp_path / "run"),
           "--teachers", str(tmp_path / "teacher"), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    saved = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert saved["epoch"] == 2 and saved["world_size"] == 2
    for part in ("student", "learned"):
        assert ranks[0][part], part  # seed_kd: adapters; amal: the mixing logits
        for name, tensor in ranks[0][part].items():
            assert torch.equal(tensor, ranks[1][part][name]), f"{part}.{name} differs between ranks"
    for name, tensor in ranks[0]["learned"].items():  # what rank 0 saved is what every rank holds
        assert torch.equal(tensor, saved["distiller"][name]), name
    if distiller == "amal":
        import json

        cases = json.loads((tmp_path / "run" / "run.json").read_text())["data"]["train_cases"]
        mix = ranks[0]["learned"]["mix_logits"]
        assert mix.numel() == len(cases) and float(mix.std()) > 0  # one λ per training case, updated


def batch_norm_distiller() -> torch.nn.Module:
    from training.distillers import build_distiller

    student = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.BatchNorm3d(4),
                                  torch.nn.Conv3d(4, 2, 1))
    teacher = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2))
    return build_distiller("logit_kd", student, [teacher])


def test_batch_norm_under_torchrun_is_synced_on_cuda_and_refused_on_the_cpu():
    from training.distributed import sync_batch_norm

    distiller = batch_norm_distiller()
    with pytest.raises(ConfigError) as error:
        sync_batch_norm(distiller, torch.device("cpu"))
    assert str(error.value) == (
        "batch-norm networks train under torchrun only on CUDA (SyncBatchNorm keeps their statistics equal "
        "across processes), not on cpu; use instance norm (model.kwargs norm: instance) or one process")
    weight = distiller.student[1].weight
    sync_batch_norm(distiller, torch.device("cuda"))  # conversion only (no CUDA needed to convert)
    assert isinstance(distiller.student[1], torch.nn.SyncBatchNorm) and distiller.student[1].weight is weight
    assert isinstance(distiller.teachers[0][1], torch.nn.BatchNorm3d)  # frozen teachers keep theirs
    plain = unet()  # instance norm: nothing to sync, trains anywhere
    from training.distillers import build_distiller

    sync_batch_norm(build_distiller("none", plain, []), torch.device("cpu"))
