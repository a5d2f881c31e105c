"""The shipped default student and sample case: the README's main job works and says what it is."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from ProstateKDLib.bundle import DEFAULT_MODEL, bundled_models_dir, resolve_model, resources_dir
from ProstateKDLib.cli import main

SAMPLE = resources_dir() / "Samples" / "PROMISE12_HK_Case13.nii.gz"
SAMPLE_LABEL = resources_dir() / "Samples" / "PROMISE12_HK_Case13_segmentation.nii.gz"  # the expert mask


def test_default_model_is_the_bundled_student(monkeypatch):
    monkeypatch.delenv("PROSTATEKD_MODELS", raising=False)
    bundle = resolve_model(None)
    assert bundle.name == DEFAULT_MODEL
    assert bundle.path.parent == bundled_models_dir()
    provenance = bundle.meta.provenance
    # honest about its training data: real PROMISE12 cases, with attribution, never the test split
    assert "PROMISE12 (Litjens et al." in provenance["training_data"]
    assert "CC BY 4.0" in provenance["training_data"]
    assert "test cases of the index were not used" in provenance["training_data"]
    assert provenance["training_cases"] == 23
    # distilled from the bundled strong teacher, which ships beside it and says the same of its own data
    teacher = resolve_model("prostatekd-teacher")
    assert teacher.path.parent == bundled_models_dir()
    assert [(t["name"], t["version"], t["path"]) for t in provenance["teachers"]] == [
        ("prostatekd-teacher", teacher.meta.version, "Resources/Models/prostatekd-teacher")]
    assert provenance["teachers"][0]["validation_dice"] == teacher.meta.provenance["validation_dice"]
    assert "PROMISE12 (Litjens et al." in teacher.meta.provenance["training_data"]
    assert bundle.meta.license == "CC-BY-4.0"
    bundle.build_network()  # weights match the network


def test_main_job_segments_the_sample(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PROSTATEKD_MODELS", raising=False)
    output = tmp_path / "prostate_mask.nii.gz"
    assert main(["segment", str(SAMPLE), str(output), "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"].startswith("prostatekd-student ")
    assert summary["input_size"] == [160, 160, 15]
    mask = sitk.ReadImage(str(output))
    truth = sitk.ReadImage(str(SAMPLE_LABEL))
    a, b = sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(truth) > 0
    dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
    # a real test-split case the student never saw, against its expert mask: the shipped model is the trained one
    assert dice >= 0.80, dice
    assert abs(summary["volume_ml"] - float(b.sum()) * np.prod(truth.GetSpacing()) / 1000) < 5


def test_the_recipe_in_the_repository_is_the_bundled_students():
    """training/configs/student_seed_kd_real.yaml names the bundled student's version, seed and method."""
    import yaml

    recipe = yaml.safe_load((resources_dir().parent / "training" / "configs" / "student_seed_kd_real.yaml").read_text())
    meta = resolve_model("prostatekd-student").meta
    assert (recipe["export"]["name"], recipe["export"]["version"]) == (meta.name, meta.version)
    assert recipe["train"]["seed"] == meta.provenance["training_seed"]
    assert recipe["distiller"]["name"] == meta.provenance["distillation"]["distiller"]
    assert recipe["train"]["epochs"] == meta.provenance["epochs_trained"]
    assert recipe["teachers"] == ["Resources/Models/prostatekd-teacher"]
    teacher = resolve_model("prostatekd-teacher").meta
    assert f"prostatekd-teacher {teacher.version}" in meta.description  # says which teacher it came from
