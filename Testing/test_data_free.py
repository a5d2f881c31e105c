"""Data-free distillation: synthesis from a shape prior, the meta-learned start, no image read."""

from __future__ import annotations

import json

import pytest
import torch

from ProstateKDLib.errors import ConfigError, OutputError
from training.data_free import DataFreeOptions, distil_data_free, prior_labels, synthesize

TINY_STUDENT = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def test_prior_labels_are_one_ellipsoid_inside_each_patch():
    labels = prior_labels(3, (32, 32, 16), (0.15, 0.35), torch.Generator().manual_seed(0))
    assert labels.shape == (3, 1, 32, 32, 16) and set(labels.unique().tolist()) == {0, 1}
    fractions = labels.float().flatten(1).mean(1)
    assert bool(((fractions > 0.005) & (fractions < 0.4)).all())
    assert not torch.equal(labels[0], labels[1])  # random shapes


def test_synthesis_makes_the_teacher_segment_the_prior():
    torch.manual_seed(0)
    teacher = torch.nn.Conv3d(1, 2, 1)  # a 'teacher' whose answer depends on the voxel value
    labels = prior_labels(2, (16, 16, 8), (0.2, 0.3), torch.Generator().manual_seed(1))
    options = DataFreeOptions(synthesis_steps=60, synthesis_lr=0.2)
    start = torch.zeros(2, 1, 16, 16, 8)
    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(teacher(start), labels[:, 0]))
    x, ce = synthesize(teacher, labels, start, options)
    assert ce < 0.5 * before
    with torch.no_grad():
        agreement = (teacher(x).argmax(1) == labels[:, 0]).float().mean()
    assert agreement > 0.9


def test_student_from_a_teacher_bundle_alone_reads_no_image(tiny_bundle, tmp_path, monkeypatch):
    """Run with every image reader disabled: the data-free path never opens an image."""
    import SimpleITK as sitk

    def no_images(*args, **kwargs):
        raise AssertionError("data-free distillation read an image")

    monkeypatch.setattr(sitk, "ReadImage", no_images)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", no_images)
    out = distil_data_free(tiny_bundle.path, tmp_path / "df", epochs=2, batches_per_epoch=2, synthesis_steps=3,
                           student_kwargs=TINY_STUDENT, progress=False)
    model = json.loads((out / "bundle" / "model.json").read_text())
    assert model["provenance"]["training_data"].startswith("none (data-free)")
    assert model["input"]["spacing"] == list(tiny_bundle.meta.spacing)  # the teacher's grid
    assert model["network"]["kwargs"] == TINY_STUDENT
    log = (out / "log.csv").read_text().splitlines()
    assert log[0] == "epoch,synthesis_ce,kd_loss,agreement,seconds" and len(log) == 3
    from ProstateKDLib.bundle import load_bundle

    assert load_bundle(out / "bundle").build_network() is not None


def test_bad_options_and_full_folder(tiny_bundle, tmp_path):
    with pytest.raises(ConfigError, match="data-free option 'epochs' must be an integer >= 1, got 0"):
        distil_data_free(tiny_bundle.path, tmp_path / "a", epochs=0, progress=False)
    with pytest.raises(ConfigError, match="'axis_range' must satisfy"):
        distil_data_free(tiny_bundle.path, tmp_path / "b", axis_range=(0.3, 0.6), progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep")
    with pytest.raises(OutputError, match="is not empty"):
        distil_data_free(tiny_bundle.path, tmp_path / "c", progress=False)
    assert not (tmp_path / "a").exists() and (tmp_path / "c" / "x").read_text() == "keep"


def test_cli_help():
    from training.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["distill-data-free", "--help"])
    assert exc.value.code == 0


def test_datafree_recipe_on_a_tiny_comparison_run(tmp_path, capsys):
    """``compare_datafree.py`` after ``compare_kd.py --scale tiny --methods none,logit_kd``."""
    from training.recipes import compare_datafree, compare_kd

    compare = tmp_path / "compare"
    assert compare_kd.main(["--out", str(compare), "--scale", "tiny", "--quiet", "--methods", "none,logit_kd", "--seeds", "1"]) == 0
    out = tmp_path / "df"
    assert compare_datafree.main(["--compare", str(compare), "--out", str(out), "--epochs", "1", "--batches", "1",
                                  "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [m["model"] for m in results["models"]] == ["data_free", "none", "logit_kd", "teacher_full"]
    student = json.loads((out / "student" / "bundle" / "model.json").read_text())
    baseline = json.loads((compare / "students" / "none" / "bundle" / "model.json").read_text())
    assert student["network"] == baseline["network"]  # the same student architecture
    assert "| data_free | none (teacher bundle only) |" in capsys.readouterr().out


def test_datafree_recipe_needs_a_finished_comparison(tmp_path):
    from ProstateKDLib.errors import DataError
    from training.recipes import compare_datafree

    with pytest.raises(DataError, match="is not a finished compare_kd run"):
        compare_datafree.main(["--compare", str(tmp_path), "--out", str(tmp_path / "x")])
