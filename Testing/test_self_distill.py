"""``self_distill`` (born-again networks): the architecture check, generations trained from the
previous generation's bundle, resume, argument checks and the ``self-distill`` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import unet
from training.distillers import DISTILLERS, build_distiller
from ProstateKDLib.errors import ConfigError, OutputError
from ProstateKDLib.networks import build_network

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def data_root(phantom_folder) -> Path:
    return phantom_folder(3, ["RUNMC", "BMC"])


def smoke_dict(root: Path) -> dict:
    data = yaml.safe_load(SMOKE.read_text())
    data["data"]["root"] = str(root)
    data["preprocessing"]["patch_size"] = [16, 16, 8]
    data["train"]["epochs"] = 1
    return data


@pytest.fixture(scope="module")
def two_generations(tmp_path_factory, data_root):
    """Two generations of 1 epoch each; returns (out folder, bundles, the distillers the loop built)."""
    import training.train
    from training.config import config_from_dict
    from training.self_distill import train_generations

    built = []
    original = training.train._build

    def capture(config, teachers, device):
        distiller = original(config, teachers, device)
        built.append(distiller)
        return distiller

    out = tmp_path_factory.mktemp("generations") / "ban"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.train, "_build", capture)
        bundles = train_generations(config_from_dict(smoke_dict(data_root), "smoke.yaml"), out, 2, progress=False)
    return out, bundles, built


# ------------------------------------------------------------------ the distiller
def test_registered_with_documented_formula():
    cls = DISTILLERS.get("self_distill")
    module = __import__(cls.__module__, fromlist=["x"])
    assert "L = " in module.__doc__ and "Furlanello" in module.__doc__ and cls.__doc__
    assert cls.loss_names == ("dice", "ce", "kl") and cls.min_teachers == cls.max_teachers == 1
    distiller = build_distiller("self_distill", unet(), [unet(seed=1)], temperature=3)
    assert distiller.kl.temperature == 3.0
    image = torch.randn(2, 1, 16, 16, 8)
    label = (image > 0.5).to(torch.uint8)
    _, terms = distiller.forward_train(image, label)
    assert list(terms) == ["dice", "ce", "kl"] and terms["kl"] > 0


def test_refuses_a_teacher_of_another_architecture():
    with pytest.raises(ValueError, match=(
        r"^self_distill needs a teacher of the student's own architecture \(a previous generation\): "
        r"teacher UNet and student UNet differ at 'model.0.conv.weight' "
        r"\(teacher \(8, 1, 3, 3, 3\), student \(4, 1, 3, 3, 3\)\)$"
    )):
        build_distiller("self_distill", unet(), [unet((8, 16, 32))])
    other = build_network("segresnet", {"init_filters": 8, "blocks_down": [1, 1], "blocks_up": [1]})
    with pytest.raises(ValueError, match=r"teacher is a SegResNet, student is a UNet$"):
        build_distiller("self_distill", unet(), [other])
    with pytest.raises(ValueError, match=r"^distiller 'self_distill' needs exactly 1 teacher, got 2$"):
        build_distiller("self_distill", unet(), [unet(), unet()])
    with pytest.raises(ValueError, match=r"^distiller 'self_distill' needs exactly 1 teacher, got 0$"):
        build_distiller("self_distill", unet(), [])


# ------------------------------------------------------------------ generations
def test_generation_two_learns_from_generation_one(two_generations):
    from ProstateKDLib.bundle import load_bundle
    from training.checkpoint import BEST, load_checkpoint

    out, bundles, built = two_generations
    assert bundles == [out / "gen1" / "bundle", out / "gen2" / "bundle"]
    assert [d.name for d in built] == ["none", "self_distill"]

    info = json.loads((out / "gen2" / "run.json").read_text())
    assert [t["path"] for t in info["teachers"]] == [str(out / "gen1" / "bundle")]
    assert info["method"]["name"] == "self_distill"
    assert yaml.safe_load((out / "gen2" / "config.yaml").read_text())["teachers"] == [str(out / "gen1" / "bundle")]

    exported = load_bundle(out / "gen1" / "bundle").load_state_dict()
    best = load_checkpoint(out / "gen1" / BEST)["model"]
    teacher = built[1].teachers[0].state_dict()
    assert set(teacher) == set(exported)
    assert all(torch.equal(teacher[k], exported[k]) and torch.equal(teacher[k], best[k]) for k in exported)

    assert "kl" not in read_log(out / "gen1")[0]
    assert all(float(row["kl"]) > 0 for row in read_log(out / "gen2"))
    assert load_bundle(out / "gen2" / "bundle").meta.name == "prostatekd-smoke-gen2"

    listing = json.loads((out / "generations.json").read_text())
    records = listing["generations"]
    assert [(g["generation"], g["run_dir"], g["bundle"], g["teacher"], g["distiller"]) for g in records] == [
        (1, "gen1", "gen1/bundle", None, "none"), (2, "gen2", "gen2/bundle", "gen1/bundle", "self_distill")]
    for record in records:
        assert record["validation_dice"] == load_bundle(out / record["bundle"]).meta.provenance["validation_dice"]


def test_resume_keeps_finished_generations_and_refuses_a_full_folder(two_generations, data_root, monkeypatch):
    import training.train
    from training.config import config_from_dict
    from training.self_distill import train_generations

    out, bundles, _ = two_generations
    config = config_from_dict(smoke_dict(data_root), "smoke.yaml")
    with pytest.raises(OutputError, match=r"is not empty; use --resume to complete it"):
        train_generations(config, out, 2, progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("a finished generation was trained again")

    monkeypatch.setattr(training.train, "train", fail)
    assert train_generations(config, out, 2, resume=True, progress=False) == bundles


@pytest.mark.parametrize("generations", [0, -1, True, 1.5, "2"])
def test_generations_must_be_at_least_one(generations, data_root, tmp_path):
    from training.config import config_from_dict
    from training.self_distill import train_generations

    config = config_from_dict(smoke_dict(data_root), "smoke.yaml")
    with pytest.raises(ConfigError, match=r"^--generations must be an integer >= 1, got "):
        train_generations(config, tmp_path / "out", generations, progress=False)
    assert not (tmp_path / "out").exists()


def test_generation_configs(data_root, tmp_path):
    from training.config import config_from_dict
    from training.self_distill import generation_config

    data = smoke_dict(data_root)
    data["distiller"]["weights"] = {"dice": 2.0, "ce": 0.5}
    config = config_from_dict(data, "smoke.yaml")
    first = generation_config(config, 1, None)
    assert first.distiller.name == "none" and first.teachers == () and dict(first.distiller.weights) == {
        "dice": 2.0, "ce": 0.5}
    second = generation_config(config, 2, tmp_path / "gen1" / "bundle")
    assert second.distiller.name == "self_distill" and second.teachers == (str(tmp_path / "gen1" / "bundle"),)
    assert dict(second.distiller.weights) == {"dice": 2.0, "ce": 0.5}
    assert second.export.name == "prostatekd-smoke-gen2" and "generation 2" in second.export.description
    with pytest.raises(ValueError, match="generation 2 needs the bundle of generation 1"):
        generation_config(config, 2, None)


# ------------------------------------------------------------------ the command
def test_cli_self_distill(data_root, tmp_path, capsys):
    from training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["self-distill", "--help"])
    assert exit_info.value.code == 0
    assert "--generations" in capsys.readouterr().out

    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(smoke_dict(data_root)))
    out = tmp_path / "ban"
    assert main(["self-distill", str(config), "--out", str(out), "--generations", "0"]) == 7
    assert capsys.readouterr().err.strip() == (
        "prostatekd self-distill: error: --generations must be an integer >= 1, got 0")
    assert main(["self-distill", str(config), "--out", str(out), "--generations", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "gen1/bundle" in printed and (out / "gen1" / "bundle" / "model.json").is_file()
    assert json.loads((out / "generations.json").read_text())["generations"][0]["teacher"] is None
