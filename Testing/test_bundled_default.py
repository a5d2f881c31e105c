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
    assert [(t["name"], t["version"]) for t in provenance["teachers"]] == [("prostatekd-teacher", "0.3.0")]
    teacher = resolve_model("prostatekd-teacher")
    assert teacher.meta.version == "0.3.0" and teacher.path.parent == bundled_models_dir()
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
