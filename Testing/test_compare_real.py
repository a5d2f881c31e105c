"""``training/recipes/compare_real.py`` end to end at a tiny scale (phantom index, tiny networks, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"


def tiny_configs(tmp_path: Path) -> tuple[Path, Path]:
    base = yaml.safe_load(SMOKE.read_text())
    base["data"] = {"seed": 0}
    base["train"].update({"epochs": 1, "num_threads": 1})
    student, teacher = tmp_path / "student.yaml", tmp_path / "teacher.yaml"
    student.write_text(yaml.safe_dump(base))
    t = yaml.safe_load(yaml.safe_dump(base))
    t["model"]["kwargs"]["channels"] = [6, 12, 24]
    teacher.write_text(yaml.safe_dump(t))
    return student, teacher


def test_compare_real_trains_evaluates_and_leaves_one_centre_out(tmp_path, capsys):
    from ProstateKDLib.phantom import write_phantom_dataset
    from training.prepare import prepare_index
    from training.recipes.compare_real import main

    write_phantom_dataset(tmp_path / "data", cases_per_site=4, sites=["BMC", "HK", "RUNMC"], size=(48, 48, 12))
    prepare_index(tmp_path / "data", tmp_path / "index.json", folds=1, test_fraction=0.25, val_fraction=0.34,
                  progress=False)
    student, teacher = tiny_configs(tmp_path)
    out = tmp_path / "cr"
    code = main(["--out", str(out), "--index", str(tmp_path / "index.json"), "--methods", "none,multi_teacher_adaptive",
                 "--seeds", "2", "--method-seeds", "multi_teacher_adaptive=1", "--loco", "--loco-seeds", "1", "--student-config", str(student), "--site-config", str(teacher),
                 "--taps", str(tmp_path / "no-taps"), "--threads", "1", "--quiet"])
    assert code == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## Students over seeds" in text and "| multi_teacher_adaptive | 1 |" in text and "| none | 2 |" in text
    assert "| model | params |" in text and "ASD mm*" in text
    assert "### Per centre (mean Dice ± SD over seeds)" in text and "Validation pick: **" in text
    assert "| multi_teacher_adaptive − none |" in text  # the paper's comparison, paired per case
    assert "## Leave one centre out" in text and "| HK (4) |" in text
    assert "Paired over every case, each scored by the students that never saw its centre (12 cases)" in text
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["models"]) == sorted(["none@seed0", "none@seed1", "multi_teacher_adaptive@seed0", *[k for k in report["models"]
                                                                                 if k.startswith("teacher_site_")]])
    assert len([k for k in report["models"] if k.startswith("teacher_site_")]) == 3
    assert len({r["case"] for r in report["loco_cases"]}) == 12
    assert set(report["loco"]) == {"BMC", "HK", "RUNMC"} and all(len(v["none"]) == 1 for v in report["loco"].values())
    loco_run = json.loads((out / "loco" / "HK" / "multi_teacher_adaptive@seed0" / "run.json").read_text())
    assert not any(c.startswith("HK/") for c in loco_run["data"]["train_cases"] + loco_run["data"]["val_cases"])
    assert len(loco_run["teachers"]) == 2 and all("HK" not in str(t["training_subset"]) for t in loco_run["teachers"])
    assert loco_run["method"]["site_weights"]  # held-out reliability measured on the other centres' validation cases
    assert (out / "dice_per_centre.png").stat().st_size > 0 and (out / "dice_vs_latency.png").stat().st_size > 0


def test_compare_real_refuses_a_bad_method_seed_count(tmp_path, capsys):
    from training.recipes.compare_real import main

    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), "--methods", "none", "--method-seeds", "seed_kd=2"])
    assert exc.value.code == 2
    assert "--method-seeds: 'seed_kd=2' must be METHOD=N with METHOD one of --methods" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_compare_real_refuses_an_unknown_loco_centre(tmp_path, capsys):
    from ProstateKDLib.errors import ConfigError
    from training.recipes.compare_real import main

    with pytest.raises(ConfigError, match=r"--loco-centres: MARS not among the index's centres \(BIDMC, HK, RUNMC, UCL\)"):
        main(["--out", str(tmp_path / "x"), "--methods", "none", "--loco", "--loco-centres", "HK,MARS"])
    assert not (tmp_path / "x").exists()


def test_compare_real_reuses_an_exported_strong_teacher(tmp_path):
    from ProstateKDLib.phantom import write_phantom_dataset
    from training.prepare import prepare_index
    from training.recipes.compare_real import main

    write_phantom_dataset(tmp_path / "data", cases_per_site=3, sites=["BMC", "HK"], size=(48, 48, 12))
    prepare_index(tmp_path / "data", tmp_path / "index.json", folds=1, test_fraction=0.34, val_fraction=0.34,
                  progress=False)
    student, _ = tiny_configs(tmp_path)
    common = ["--index", str(tmp_path / "index.json"), "--seeds", "1", "--student-config", str(student),
              "--taps", str(tmp_path / "no-taps"), "--threads", "1", "--quiet"]
    assert main(["--out", str(tmp_path / "first"), "--methods", "none", *common]) == 0
    teacher = tmp_path / "first" / "students" / "none@seed0" / "bundle"
    assert main(["--out", str(tmp_path / "second"), "--methods", "logit_kd", "--strong-teacher", str(teacher),
                 *common]) == 0
    assert not (tmp_path / "second" / "teacher_strong").exists()  # nothing trained for the teacher
    run = json.loads((tmp_path / "second" / "students" / "logit_kd@seed0" / "run.json").read_text())
    assert [Path(t["path"]).resolve() for t in run["teachers"]] == [teacher.resolve()]
    report = json.loads((tmp_path / "second" / "report.json").read_text())
    reused = json.loads((teacher / "model.json").read_text())
    key = f"teacher_strong_{reused['name']}-{reused['version']}"  # the bundle's name, not its folder's ('bundle')
    assert report["models"][key]["bundle"] == str(teacher.resolve())
    log = (tmp_path / "second" / "students" / "logit_kd@seed0" / "log.csv").read_text().splitlines()
    seconds = sum(float(line.split(",")[-1]) for line in log[1:])
    assert report["timings_s"]["logit_kd@seed0"] == pytest.approx(seconds)  # the logged epochs, resume-safe
    for png in ("dice_per_centre.png", "dice_vs_latency.png"):
        (tmp_path / "second" / png).unlink()
    assert main(["--out", str(tmp_path / "second"), "--replot"]) == 0  # from report.json + eval/summary.json alone
    assert (tmp_path / "second" / "dice_vs_latency.png").stat().st_size > 0
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "first" / "students"), "--replot"])
    assert exc.value.code == 2


def test_logged_seconds_sums_every_log_of_a_folder(tmp_path):
    from training.recipes.compare_real import logged_seconds

    assert logged_seconds(tmp_path, 7.5) == 7.5  # nothing logged yet
    for site, rows in {"A": ["1,0.5,10.0", "2,0.4,12.5"], "B": ["1,0.6,3.0"]}.items():
        (tmp_path / site).mkdir()
        (tmp_path / site / "log.csv").write_text("epoch,loss,seconds\n" + "\n".join(rows) + "\n")
    assert logged_seconds(tmp_path, 7.5) == pytest.approx(25.5)


def test_compare_real_refuses_a_missing_strong_teacher(tmp_path):
    from ProstateKDLib.errors import BundleError
    from training.recipes.compare_real import main

    with pytest.raises(BundleError):
        main(["--out", str(tmp_path / "x"), "--methods", "seed_kd", "--strong-teacher", str(tmp_path / "nothing")])
    assert not (tmp_path / "x").exists()
