"""Mean-teacher site adaptation on tiny phantoms: EMA arithmetic, a run without target labels, checks, CLI."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch

from ProstateKDLib.errors import ConfigError, DataError

SITES = ["BMC", "RUNMC", "HK"]
TARGET = "HK"
TINY = dict(epochs=2, rampup_epochs=1, batch_size=2, patches_per_volume=1, device="cpu", num_threads=2)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A tiny UNet student bundle (random weights) on the smoke config's grid."""
    from conftest import MODEL_JSON

    from ProstateKDLib.bundle import save_bundle
    from ProstateKDLib.networks import build_network

    model_json = copy.deepcopy(MODEL_JSON)
    model_json["name"] = "tiny-student"
    model_json["input"]["spacing"] = [4.0, 4.0, 6.0]
    torch.manual_seed(0)
    network = build_network("unet", {"in_channels": 1, "out_channels": 2, **model_json["network"]["kwargs"]})
    folder = tmp_path_factory.mktemp("student") / "bundle"
    save_bundle(folder, model_json, network.state_dict())
    return folder


@pytest.fixture
def data_root(phantom_folder) -> Path:
    """Three sites x 2 coarse phantoms (48 x 48 x 12 voxels)."""
    return phantom_folder(2, SITES, seed=5)


def test_ema_teacher_is_the_moving_average_of_the_student():
    from training.adapt import ema_update, make_teacher

    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3), torch.nn.BatchNorm3d(3))
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    alpha = 0.9
    expected = {k: v.detach().clone() for k, v in student.named_parameters()}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        student(torch.randn(2, 1, 5, 5, 5)).square().mean().backward()  # train mode: BN running stats move
        optimizer.step()
        ema_update(teacher, student, alpha)
        for name, value in student.named_parameters():
            expected[name] = alpha * expected[name] + (1 - alpha) * value.detach()
    for name, value in teacher.named_parameters():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)
    assert not torch.equal(teacher[1].weight, student[1].weight)  # the teacher lags behind the student
    for (name, buffer), (_, source) in zip(teacher.named_buffers(), student.named_buffers()):
        assert torch.equal(buffer, source), name  # buffers copied, not averaged


def test_rampup_and_options():
    from training.adapt import AdaptOptions, consistency_rampup

    assert consistency_rampup(0, 10) == pytest.approx(torch.exp(torch.tensor(-5.0)).item())
    assert consistency_rampup(10, 10) == consistency_rampup(99, 10) == 1.0 == consistency_rampup(0, 0)
    assert consistency_rampup(3, 10) < consistency_rampup(6, 10)
    with pytest.raises(ConfigError, match=r"adapt option 'ema_decay' must be a number in \[0, 1\), got 1.5"):
        AdaptOptions(ema_decay=1.5)
    with pytest.raises(ConfigError, match="'epochs' must be an integer >= 1, got 0"):
        AdaptOptions(epochs=0)


def test_adapt_without_target_labels_writes_bundle_and_resumes(student, data_root, tmp_path):
    from ProstateKDLib.bundle import load_bundle
    from training.adapt import adapt
    from training.checkpoint import load_checkpoint

    for label in (data_root / TARGET).glob("*_segmentation.nii.gz"):
        label.unlink()  # the target labels are not on disk: adaptation cannot read them
    assert not list((data_root / TARGET).glob("*_segmentation*")) and list((data_root / TARGET).glob("Case*"))
    out = tmp_path / "adapted"
    assert adapt(student, data_root, TARGET, out, progress=False, **TINY) == out

    rows = list(csv.DictReader(open(out / "log.csv")))
    assert list(rows[0]) == ["epoch", "loss", "sup", "dice", "ce", "consistency", "consistency_weight", "lr", "seconds"]
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[0]["consistency_weight"]) < float(rows[1]["consistency_weight"]) == 1.0
    assert all(float(r["consistency"]) >= 0 for r in rows)
    info = json.loads((out / "run.json").read_text())
    assert info["target_labels_used"] is False and info["exported_weights"] == "ema_teacher"
    targets = info["data"]["target_cases"]
    assert len(targets) == 2 and all(c.startswith(TARGET + "/") for c in targets)
    assert sorted({c.split("/")[0] for c in info["data"]["source_cases"]}) == ["BMC", "RUNMC"]
    assert json.loads((out / "options.json").read_text())["ema_decay"] == 0.99

    bundle = load_bundle(out / "bundle")
    prov = bundle.meta.provenance
    assert bundle.meta.name == f"tiny-student-{TARGET}-adapted"
    assert prov["adaptation"]["method"] == "mean_teacher" and prov["adaptation"]["target_site"] == TARGET
    assert prov["adaptation"]["target_labels_used"] is False and prov["adaptation"]["exported_weights"] == "ema_teacher"
    assert prov["adaptation"]["adapted_from"]["path"] == str(student.resolve())
    assert prov["adaptation"]["source_sites"] == ["BMC", "RUNMC"] and "no target labels used" in prov["method"]
    assert bundle.meta.spacing == (4.0, 4.0, 6.0) and bundle.meta.patch_size == (32, 32, 16)
    last = load_checkpoint(out / "checkpoint_last.pt")
    exported = bundle.load_state_dict()
    assert all(torch.equal(exported[k], last["teacher"][k]) for k in last["teacher"])  # the EMA teacher
    assert any(not torch.equal(last["teacher"][k], last["model"][k]) for k in last["model"])

    with pytest.raises(Exception, match="is not empty; use --resume"):
        adapt(student, data_root, TARGET, out, progress=False, **TINY)
    with pytest.raises(ConfigError, match="adapt option 'ema_decay' differs"):
        adapt(student, data_root, TARGET, out, resume=True, progress=False, **{**TINY, "ema_decay": 0.9})
    adapt(student, data_root, TARGET, out, resume=True, progress=False, **{**TINY, "epochs": 3})
    assert [r["epoch"] for r in csv.DictReader(open(out / "log.csv"))] == ["1", "2", "3"]
    assert load_bundle(out / "bundle").meta.provenance["epochs_trained"] == 3


def test_unknown_target_site_and_bad_options_write_nothing(student, data_root, tmp_path):
    from training.adapt import adapt

    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"no cases of site 'UCL' in .* \(sites: BMC, HK, RUNMC\)"):
        adapt(student, data_root, "UCL", out, progress=False, **TINY)
    with pytest.raises(ConfigError, match="'consistency_weight' must be a number >= 0, got -1"):
        adapt(student, data_root, TARGET, out, progress=False, **{**TINY, "consistency_weight": -1})
    (data_root / "RUNMC" / "Case00_segmentation.nii.gz").unlink()
    with pytest.raises(DataError, match="case RUNMC/Case00: label file missing"):
        adapt(student, data_root, TARGET, out, progress=False, **TINY)
    assert not out.exists()


def test_cli_adapt_help_and_before_after_evaluation(student, data_root, tmp_path, capsys):
    from training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["adapt", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--target-site" in text and "--ema-decay" in text and "--consistency-weight" in text

    out = tmp_path / "cli"
    assert main(["adapt", str(student), str(data_root), "--target-site", TARGET, "--out", str(out), "--epochs", "1",
                 "--patches-per-volume", "1", "--device", "cpu", "--threads", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "adapted model (EMA teacher)" in printed and TARGET in printed and "tiny-student-HK-adapted" in printed
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["sites"] == [TARGET] and len(summary["models"]) == 2
    assert main(["adapt", str(student), str(data_root), "--target-site", "XX", "--out", str(tmp_path / "x")]) == 8
    assert "no cases of site 'XX'" in capsys.readouterr().err


def test_resume_equals_uninterrupted_and_target_labels_are_not_opened(student, data_root, tmp_path, monkeypatch):
    import SimpleITK as sitk

    import ProstateKDLib.datasets as dataset
    from training.adapt import adapt
    from training.checkpoint import load_checkpoint

    opened: list[str] = []
    read, read_image, read_label = sitk.ReadImage, dataset.read_image, dataset.read_label
    monkeypatch.setattr(sitk, "ReadImage", lambda path, *a, **k: opened.append(str(path)) or read(path, *a, **k))
    monkeypatch.setattr(dataset, "read_image", lambda r: opened.append(str(r.image)) or read_image(r))
    monkeypatch.setattr(dataset, "read_label", lambda r: opened.append(str(r.label)) or read_label(r))
    whole, split = tmp_path / "whole", tmp_path / "split"
    adapt(student, data_root, TARGET, whole, progress=False, **TINY)
    adapt(student, data_root, TARGET, split, progress=False, **{**TINY, "epochs": 1})
    adapt(student, data_root, TARGET, split, resume=True, progress=False, **TINY)
    a, b = load_checkpoint(whole / "checkpoint_last.pt"), load_checkpoint(split / "checkpoint_last.pt")
    for key in ("model", "teacher"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert any(p.endswith(f"{TARGET}/Case00.nii.gz") for p in opened)  # target images are read ...
    assert any(p.endswith("RUNMC/Case00_segmentation.nii.gz") for p in opened)  # ... source labels too ...
    assert not [p for p in opened if f"/{TARGET}/" in p and "_segmentation" in p]  # ... target labels never


def test_case_list_target_rows_need_no_label(data_root, tmp_path):
    from training.adapt import index_adaptation_data

    table = tmp_path / "cases.csv"
    rows = ["image,label,site"]
    for site in SITES:
        for image in sorted((data_root / site).glob("Case0?.nii.gz")):
            label = "" if site == TARGET else str(image).replace(".nii.gz", "_segmentation.nii.gz")
            rows.append(f"{image},{label},{site}")
    table.write_text("\n".join(rows) + "\n")
    source, target = index_adaptation_data(table, TARGET)
    assert [t.case_id for t in target] == ["HK/Case00", "HK/Case01"] and not hasattr(target[0], "label")
    assert len(source) == 4 and {c.site for c in source} == {"BMC", "RUNMC"}
    with pytest.raises(DataError, match=r"no cases of site 'UCL' in .*cases.csv \(sites: BMC, HK, RUNMC\)"):
        index_adaptation_data(table, "UCL")
    with pytest.raises(DataError, match="line 6: case HK/Case00 has no label"):
        index_adaptation_data(table, "BMC")  # HK rows are source rows now, and have no label


def test_adaptation_recipe_tiny(tmp_path, capsys):
    """``compare_adapt.py --scale tiny``: source-only, adapted and oracle students, Dice per site, plot."""
    from training.recipes.compare_adapt import ROWS, main

    out = tmp_path / "adapt"
    assert main(["--out", str(out), "--scale", "tiny", "--quiet", "--target-site", "RUNMC"]) == 0
    assert "| adapted | source_only + 2 epochs with RUNMC images (no labels) |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [m["model"] for m in results["models"]] == list(ROWS)
    assert all("dice_RUNMC" in m and "dice_BMC" in m for m in results["models"])
    with open(out / "data" / "source.csv", newline="") as handle:
        assert {row["site"] for row in csv.DictReader(handle)} == {"BMC"}  # no target case in the source
    provenance = json.loads((out / "adapted" / "bundle" / "model.json").read_text())["provenance"]
    assert "no target labels used" in provenance["method"]
    assert (out / "dice_per_site.png").stat().st_size > 0


def test_adaptation_recipe_rejects_an_unknown_site(tmp_path, capsys):
    from training.recipes.compare_adapt import main

    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), "--scale", "tiny", "--target-site", "XYZ"])
    assert exc.value.code == 2 and "'XYZ' is not a site of scale tiny" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
