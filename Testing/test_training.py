"""Training: config validation, distillers, the loop, checkpoints, resume, export and the CLI."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from training.distillers import DISTILLERS
from ProstateKDLib.errors import ConfigError, OutputError
from training.config import config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"
STUDENT = ROOT / "training" / "configs" / "student_phantom.yaml"


@pytest.fixture(scope="module")
def data_root(phantom_folder) -> Path:
    """Two sites x 3 coarse phantoms (48 x 48 x 12 voxels)."""
    return phantom_folder(3, ["RUNMC", "BMC"])


@pytest.fixture
def smoke(data_root) -> dict:
    """The smoke config as a dict, pointing at the tiny phantom set."""
    data = yaml.safe_load(SMOKE.read_text())
    data["data"]["root"] = str(data_root)
    return data


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_root) -> Path:
    """A finished 2-epoch smoke run (shared, read-only)."""
    from training.train import train

    data = yaml.safe_load(SMOKE.read_text())
    data["data"]["root"] = str(data_root)
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    return train(config_from_dict(data, "smoke.yaml"), run_dir, progress=False)


# ---------------------------------------------------------------- configuration
def test_bundled_configs_load():
    smoke = load_config(SMOKE)
    assert smoke.model.network == "unet" and smoke.train.device == "cpu"
    student = load_config(STUDENT)
    assert student.preprocessing.patch_size == (128, 128, 32)
    assert student.preprocessing.normalization.as_dict() == {"name": "zscore", "clip_percentiles": [0.5, 99.5]}
    assert Path(student.data.root).is_absolute()
    assert "phantom" in student.export.training_data.lower()


def test_config_round_trips_through_yaml(tmp_path, smoke):
    from training.config import write_config

    config = config_from_dict(smoke, "smoke.yaml")
    write_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def edited(data: dict, dotted: str, value=None, delete: bool = False) -> dict:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    "dotted, value, delete, message",
    [
        ("train.lr", 0.1, False,
         "unknown key 'train.lr' (known: amp, batch_size, device, epochs, grad_clip, learning_rate, lr_schedule, "
         "num_threads, optimizer, patches_per_volume, positive_fraction, seed, val_overlap, warmup_steps, "
         "weight_decay)"),
        ("optimiser", {}, False,
         "unknown key 'optimiser' (known: augmentation, data, distiller, export, model, preprocessing, teachers, "
         "train)"),
        ("preprocessing.normalization.mode", "x", False,
         "unknown key 'preprocessing.normalization.mode' (known: clip_percentiles, name)"),
        ("train.epochs", None, True, "missing required key 'train.epochs'"),
        ("data.root", None, True, "missing required key 'data.root'"),
        ("export.training_data", None, True, "missing required key 'export.training_data'"),
        ("train.epochs", "ten", False, "key 'train.epochs' must be an integer, got 'ten'"),
        ("train.epochs", 2.0, False, "key 'train.epochs' must be an integer, got 2.0"),
        ("train.epochs", 0, False, "key 'train.epochs' must be at least 1, got 0"),
        ("train.amp", "yes", False, "key 'train.amp' must be true or false, got 'yes'"),
        ("train.learning_rate", 0, False, "key 'train.learning_rate' must be > 0, got 0"),
        ("data.val_fraction", 1, False, "key 'data.val_fraction' must be in [0, 1), got 1"),
        ("train.device", "gpu", False, "key 'train.device' must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
        ("train", [1], False, "key 'train' must be a mapping, got [1]"),
        ("preprocessing.spacing", [1, 1], False,
         "key 'preprocessing.spacing' must be a list of 3 positive numbers, got [1, 1]"),
        ("preprocessing.patch_size", [32, 32, 16.0], False,
         "key 'preprocessing.patch_size' must be a list of 3 positive integers, got [32, 32, 16.0]"),
        ("preprocessing.patch_size", [32, 30, 16], False,
         "key 'preprocessing.patch_size' must be divisible by the network's total stride [4, 4, 4], got [32, 30, 16]"),
        ("preprocessing.orientation", "RAR", False,
         "key 'preprocessing.orientation' must be 3 axis codes such as RAS or LPS, got 'RAR'"),
        ("preprocessing.normalization.name", "minmax", False,
         "key 'preprocessing.normalization.name' must be one of zscore, none, got 'minmax'"),
        ("model.network", "unet3", False,
         "key 'model.network' names unknown network 'unet3' (known: dynunet, segresnet, unet)"),
        ("model.kwargs.in_channels", 3, False,
         "key 'model.kwargs.in_channels' is not allowed; set 'model.in_channels' instead"),
        ("model.kwargs.chanels", [4, 8], False,
         "key 'model.kwargs' is invalid for network 'unet': got an unexpected keyword argument 'chanels'"),
        ("model.num_classes", 3, False, "key 'model.num_classes' must be 2 (background and gland), got 3"),
        ("data.channels", [0], False,
         "key 'data.channels' must be null or a list of at least 2 unique channel indices >= 0, got [0]"),
        ("data.channels", [0, 0], False,
         "key 'data.channels' must be null or a list of at least 2 unique channel indices >= 0, got [0, 0]"),
        ("distiller.name", "kd", False, "key 'distiller.name' names unknown distiller 'kd' "
         f"(known: {', '.join(DISTILLERS.names())})"),  # every registered method, sorted
        ("distiller.weights.kl", 1.0, False, "unknown key 'distiller.weights.kl' (known: ce, dice)"),
        ("distiller.weights.dice", -1, False, "key 'distiller.weights.dice' must be a number >= 0, got -1"),
    ],
)
def test_config_errors(smoke, dotted, value, delete, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(edited(smoke, dotted, value, delete), "student.yaml")
    assert str(error.value) == f"config student.yaml: {message}"
    assert error.value.exit_code == 7


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "missing.yaml")
    assert str(error.value) == f"config file not found: {tmp_path / 'missing.yaml'}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    assert str(error.value) == (
        "config bad.yaml: must hold a mapping of sections (data, model, ...), got ['just', 'a list']"
    )
    bad.write_text("train: {epochs: [1}\n")
    with pytest.raises(ConfigError, match=r"^config bad.yaml: not valid YAML: "):
        load_config(bad)


def test_overrides_are_validated():
    assert load_config(SMOKE, {"train.epochs": 5}).train.epochs == 5
    with pytest.raises(ConfigError) as error:
        load_config(SMOKE, {"train.epochs": -1})
    assert str(error.value) == "config smoke.yaml: key 'train.epochs' must be at least 1, got -1"


# ------------------------------------------------------------------- distillers
def tiny_unet(seed: int = 0) -> torch.nn.Module:
    from ProstateKDLib.networks import build_network

    torch.manual_seed(seed)
    return build_network("unet", {"channels": [4, 8], "strides": [2], "num_res_units": 0, "dropout": 0.2,
                                  "norm": "batch"})


def test_teachers_stay_frozen_and_in_eval_mode():
    from training.distillers.base import Distiller

    class Probe(Distiller):
        loss_names = ("probe",)
        default_weights = {"probe": 2.0}

        def forward_train(self, image, label):
            logits = self.student(image)
            teacher = self.teacher_logits(image)[0]
            return logits, {"probe": ((logits - teacher) ** 2).mean()}

    teacher = tiny_unet(1)
    distiller = Probe(tiny_unet(0), [teacher])
    distiller.train()
    assert distiller.student.training and not teacher.training
    assert all(not m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in distiller.student.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=0.1)
    _, terms = distiller.forward_train(torch.randn(2, 1, 16, 16, 8), None)
    loss = distiller.total_loss(terms)
    assert torch.allclose(loss, 2.0 * terms["probe"])
    loss.backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # incl. BN statistics
    distiller.train(True)
    assert not teacher.training
    distiller.eval()
    assert not distiller.student.training


def test_none_distiller_terms_and_checks():
    from training.distillers import DISTILLERS, build_distiller

    assert "none" in DISTILLERS.names()  # the full list: Testing/test_distillers.py
    distiller = build_distiller("none", tiny_unet(), [], {"ce": 0.5})
    assert distiller.weights == {"dice": 1.0, "ce": 0.5}
    label = torch.zeros(2, 1, 16, 16, 8, dtype=torch.uint8)
    label[:, :, 4:12, 4:12, 2:6] = 1
    logits, terms = distiller.forward_train(torch.randn(2, 1, 16, 16, 8), label)
    assert logits.shape == (2, 2, 16, 16, 8) and sorted(terms) == ["ce", "dice"]
    assert all(t.ndim == 0 and t.requires_grad for t in terms.values())
    assert torch.allclose(distiller.total_loss(terms), terms["dice"] + 0.5 * terms["ce"])
    with pytest.raises(ValueError, match="distiller 'none' takes no teachers, got 1"):
        build_distiller("none", tiny_unet(), [tiny_unet(1)])
    with pytest.raises(ValueError, match="NoDistillation has no loss term 'kl' \\(terms: dice, ce\\)"):
        build_distiller("none", tiny_unet(), [], {"kl": 1.0})


def test_training_steps_lower_the_loss(data_root):
    """A few real optimisation steps on one preprocessed phantom patch lower Dice + CE."""
    from ProstateKDLib.datasets import index_multisite, load_case
    from training.distillers import build_distiller
    from ProstateKDLib.networks import build_network
    from training.sampling import pad_to

    case = index_multisite(data_root)[0]
    image, label = load_case(case, "RAS", (4.0, 4.0, 6.0), {"name": "zscore"})
    image, label = pad_to(image, (48, 48, 16))[None, :, :48, :48, :16], pad_to(label, (48, 48, 16))[None, :, :48, :48, :16]
    torch.manual_seed(0)
    student = build_network("unet", {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0})
    distiller = build_distiller("none", student).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        _, terms = distiller.forward_train(image, label)
        loss = distiller.total_loss(terms)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_patch_sampler_shapes_and_state():
    from training.sampling import PatchSampler

    image = torch.randn(1, 20, 24, 6)
    label = torch.zeros(1, 20, 24, 6, dtype=torch.uint8)
    label[:, 8:12, 8:12, 2:4] = 1
    sampler = PatchSampler([(image, label)] * 3, (16, 16, 8), positive_fraction=1.0, seed=4)
    state = sampler.state_dict()
    batches = list(sampler.epoch(patches_per_volume=2, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 2] == [b[1].shape[0] for b in batches]
    assert batches[0][0].shape == (4, 1, 16, 16, 8) and batches[0][1].dtype == torch.uint8
    assert all(int(b[1][i].sum()) > 0 for b in batches for i in range(b[1].shape[0]))  # all positive
    sampler.load_state_dict(state)
    again = list(sampler.epoch(patches_per_volume=2, batch_size=4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))


# --------------------------------------------------------- the loop and its run
def test_run_folder_contents(trained_run):
    names = sorted(p.name for p in trained_run.iterdir() if p.name != "tensorboard")  # when installed
    assert names == ["checkpoint_best.pt", "checkpoint_last.pt", "config.yaml", "log.csv", "run.json"]
    rows = list(csv.DictReader(open(trained_run / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "loss", "dice", "ce", "val_dice", "lr", "seconds"]
    assert all(0 <= float(r["val_dice"]) <= 1 and float(r["loss"]) > 0 for r in rows)
    last = torch.load(trained_run / "checkpoint_last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["step"] == 4 and len(last["history"]) == 2
    assert {"model", "optimizer", "rng", "sampler", "best_dice", "config"} <= set(last)
    best = torch.load(trained_run / "checkpoint_best.pt", weights_only=True)
    assert best["val_dice"] == max(r["val_dice"] for r in last["history"]) == last["best_dice"]
    info = json.loads((trained_run / "run.json").read_text())
    assert set(info["versions"]) >= {"torch", "monai", "SimpleITK", "numpy", "python"}
    assert info["seeds"]["train"] == 0 and info["machine"]["device"] == "cpu"
    assert len(info["data"]["train_cases"]) == 4 and len(info["data"]["val_cases"]) == 2
    assert "git" in info and info["started"]
    assert load_config(trained_run / "config.yaml").data.root == last["config"]["data"]["root"]


def test_refuses_non_empty_run_dir_and_missing_resume(trained_run, smoke, tmp_path):
    from training.train import train

    config = config_from_dict(smoke, "smoke.yaml")
    with pytest.raises(OutputError) as error:
        train(config, trained_run, progress=False)
    assert str(error.value) == (
        f"run folder {trained_run} is not empty; use --resume to continue the run in it, or choose a new folder"
    )
    with pytest.raises(OutputError) as error:
        train(config, tmp_path, resume=True, progress=False)
    assert str(error.value) == f"cannot resume: {tmp_path / 'checkpoint_last.pt'} not found"
    changed = config_from_dict(edited(smoke, "train.learning_rate", 0.5), "smoke.yaml")
    with pytest.raises(ConfigError) as error:
        train(changed, trained_run, resume=True, progress=False)
    assert str(error.value) == (
        "config smoke.yaml: key 'train.learning_rate' differs from the run being resumed (0.01 there, 0.5 here)"
    )


def test_without_validation_the_last_epoch_is_best(tmp_path, smoke):
    from training.train import train

    data = edited(edited(edited(smoke, "data.val_fraction", 0.0), "data.cases", 3), "train.epochs", 1)
    run_dir = train(config_from_dict(data, "smoke.yaml"), tmp_path / "run", progress=False)
    best = torch.load(run_dir / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] == 1 and best["val_dice"] is None
    (row,) = csv.DictReader(open(run_dir / "log.csv"))
    assert row["val_dice"] == ""
    info = json.loads((run_dir / "run.json").read_text())
    assert info["data"]["train_cases"] == ["BMC/Case00", "BMC/Case01", "RUNMC/Case00"]
    assert info["data"]["val_cases"] == []


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from training import checkpoint

    target = tmp_path / "checkpoint_last.pt"
    checkpoint.atomic_save({"model": {"w": torch.ones(3)}}, target)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.atomic_save({"model": {"w": torch.zeros(3)}}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]
    assert torch.equal(checkpoint.load_checkpoint(target)["model"]["w"], torch.ones(3))


def test_resume_equals_uninterrupted_run(tmp_path, smoke, monkeypatch):
    """A run killed right after epoch 1's checkpoint, then resumed, ends with the same weights."""
    from training import checkpoint
    from training.train import train

    data = edited(edited(smoke, "train.epochs", 3), "model.kwargs.dropout", 0.2)  # dropout: torch RNG matters
    config = config_from_dict(data, "smoke.yaml")
    full = train(config, tmp_path / "full", progress=False)

    real_save = checkpoint.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if Path(path).name == checkpoint.LAST:
            raise KeyboardInterrupt  # killed after the first epoch was saved

    monkeypatch.setattr(checkpoint, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", progress=False)
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(tmp_path / "stopped" / checkpoint.LAST)["epoch"] == 1
    torch.manual_seed(123)  # a fresh process would not share the first run's RNG state
    np.random.seed(7)
    train(config, tmp_path / "stopped", resume=True, progress=False)

    a = checkpoint.load_checkpoint(full / checkpoint.LAST)
    b = checkpoint.load_checkpoint(tmp_path / "stopped" / checkpoint.LAST)
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    info = json.loads((tmp_path / "stopped" / "run.json").read_text())
    assert [s["resumed_from_epoch"] for s in info["sessions"]] == [None, 1]


# ---------------------------------------------------------------------- export
def test_export_writes_a_loadable_bundle(trained_run, tmp_path):
    from ProstateKDLib.bundle import load_bundle
    from training.export import export_run

    bundle = export_run(trained_run, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    network = loaded.build_network()
    best = torch.load(trained_run / "checkpoint_best.pt", weights_only=True)
    for key, value in network.state_dict().items():
        assert torch.equal(value, best["model"][key])
    meta = bundle.meta
    assert meta.name == "prostatekd-smoke" and meta.version == "0.0.1" and meta.channels == ("T2",)
    assert meta.spacing == (4.0, 4.0, 6.0) and meta.patch_size == (32, 32, 16)
    assert meta.overlap == 0.25 and meta.blend_mode == "gaussian" and meta.largest_component
    assert meta.labels[0].name == "Prostate" and meta.labels[0].terminology["type"][1] == "41216001"
    prov = meta.provenance
    assert "synthetic phantoms" in prov["training_data"]
    assert prov["method"] == "distiller 'none' (supervised training, no distillation); loss 1*dice + 1*ce"
    assert prov["teachers"] == []
    assert prov["validation_dice"] == round(best["val_dice"], 4)
    assert prov["parameters"] == sum(p.numel() for p in network.parameters())
    assert prov["checkpoint_epoch"] == best["epoch"] and prov["epochs_trained"] == 2
    assert prov["training_seed"] == best["config"]["train"]["seed"]
    assert {"date", "git_commit", "software_version"} <= set(prov)

    with pytest.raises(OutputError) as error:
        export_run(trained_run, tmp_path / "bundle")
    assert str(error.value) == f"{tmp_path / 'bundle'} exists (use --overwrite to replace it)"
    last = export_run(trained_run, tmp_path / "bundle", checkpoint="last", overwrite=True)
    assert last.meta.provenance["checkpoint_epoch"] == 2
    with pytest.raises(OutputError) as error:
        export_run(tmp_path, tmp_path / "other")
    assert str(error.value) == f"{tmp_path} is not a training run: config.yaml is missing"


# ------------------------------------------------------------------------- CLI
def test_cli_train_export_segment(tmp_path, data_root, capsys):
    from training.cli import main

    run_dir = tmp_path / "run"
    args = ["train", str(SMOKE), "--run-dir", str(run_dir), "--data-root", str(data_root), "--quiet"]
    assert main(args + ["--epochs", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"run finished: {run_dir}"
    assert main(args) == 4
    assert "use --resume to continue the run in it" in capsys.readouterr().err
    assert main(["train", "--run-dir", str(run_dir), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len(list(csv.DictReader(open(run_dir / "log.csv")))) == 2
    capsys.readouterr()

    assert main(["export", str(run_dir), str(tmp_path / "bundle")]) == 0
    assert capsys.readouterr().out.startswith(f"exported prostatekd-smoke 0.0.1 to {tmp_path / 'bundle'}")
    mask = tmp_path / "mask.nii.gz"
    image = data_root / "RUNMC" / "Case00.nii.gz"
    code = main(["segment", str(image), str(mask), "--model", str(tmp_path / "bundle"), "--device", "cpu"])
    assert code == 0 and mask.is_file()
    capsys.readouterr()

    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("epochs: 2", "epochs: two"))
    assert main(["train", str(bad), "--run-dir", str(tmp_path / "other")]) == 7
    assert capsys.readouterr().err.strip() == (
        "prostatekd train: error: config bad.yaml: key 'train.epochs' must be an integer, got 'two'"
    )
    assert main(["train", "--run-dir", str(tmp_path / "other")]) == 7
    assert "train needs a CONFIG file" in capsys.readouterr().err
