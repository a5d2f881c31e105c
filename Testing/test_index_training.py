"""Index-driven training: train/val from the index, the test split refused, the schedule, by-site folds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from training.cli import main
from training.prepare import prepare_index
from training.train import learning_rate

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def phantom_index(tmp_path_factory) -> Path:
    from ProstateKDLib.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("index-data")
    write_phantom_dataset(root / "data", cases_per_site=4, sites=["RUNMC", "BMC"], size=(48, 48, 12))
    prepare_index(root / "data", root / "index.json", folds=2, test_fraction=0.25, progress=False)
    return root / "index.json"


def smoke_config(tmp_path: Path, **train) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    data["data"] = {"index": "placeholder", "seed": 0}
    data["train"].update({"epochs": 1, "num_threads": 1, **train})
    path = tmp_path / "smoke_index.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_uses_exactly_the_index_training_and_validation_cases(phantom_index, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", str(smoke_config(tmp_path)), "--index", str(phantom_index), "--fold", "1",
                 "--run-dir", str(run), "--quiet"])
    assert code == 0, capsys.readouterr().err
    index = json.loads(phantom_index.read_text())
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["train_cases"] == sorted(index["splits"]["folds"][1]["train"])
    assert info["data"]["val_cases"] == sorted(index["splits"]["folds"][1]["val"])
    assert not set(index["splits"]["test"]) & set(info["data"]["train_cases"] + info["data"]["val_cases"])


def test_a_leaking_index_is_refused_and_nothing_is_written(phantom_index, tmp_path, capsys):
    index = json.loads(phantom_index.read_text())
    leaked = index["splits"]["test"][0]
    index["splits"]["folds"][0]["train"].append(leaked)  # a hand-edited index: a test case in training
    bad = tmp_path / "leaking.json"
    bad.write_text(json.dumps(index))
    run = tmp_path / "run"
    code = main(["train", str(smoke_config(tmp_path)), "--index", str(bad), "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 8  # DataError: a data set problem
    assert err == (f"prostatekd train: error: case {leaked} is in the test split of {bad}; refusing to train or "
                   "validate on it (the index's splits overlap: rewrite it with 'prostatekd prepare')")
    assert not run.exists()


def test_learning_rate_warms_up_and_an_extended_run_does_not_jump():
    assert learning_rate(1.0, "poly", 0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert learning_rate(1.0, "poly", 9, 100, warmup_steps=10) == pytest.approx(1.0)
    assert learning_rate(1.0, "poly", 10, 100, warmup_steps=10) == pytest.approx(1.0)
    # a 100-step run stopped after 60 steps and extended to 200 steps continues from where it was
    reached = learning_rate(1.0, "poly", 59, 100)
    anchor = {"step": 60, "lr": reached}
    after = learning_rate(1.0, "poly", 60, 200, anchor=anchor)
    without_anchor = learning_rate(1.0, "poly", 60, 200)
    assert after == pytest.approx(reached)
    assert without_anchor > 1.5 * reached  # what the old schedule did: a jump
    assert learning_rate(1.0, "poly", 199, 200, anchor=anchor) < 0.02


def test_resume_with_more_epochs_keeps_the_rate_continuous(phantom_index, tmp_path, capsys):
    config = smoke_config(tmp_path, epochs=2, learning_rate=0.01)
    run = tmp_path / "run"
    assert main(["train", str(config), "--index", str(phantom_index), "--run-dir", str(run), "--quiet"]) == 0
    assert main(["train", "--resume", "--epochs", "4", "--run-dir", str(run), "--quiet"]) == 0, capsys.readouterr().err
    rates = [float(line.split(",")[-2]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert len(rates) == 4
    assert all(b <= a * 1.0001 for a, b in zip(rates, rates[1:])), rates


def test_prepare_by_site_folds_and_case_metadata(shared_data, tmp_path, capsys):
    out = tmp_path / "by_site.json"
    assert main(["prepare", str(shared_data / "promise12"), "--out", str(out), "--folds", "by-site", "--quiet"]) == 0
    index = json.loads(out.read_text())
    folds = index["splits"]["folds"]
    assert [sorted({c.split("/")[0] for c in f["val"]}) for f in folds] == [["BIDMC"], ["HK"], ["RUNMC"], ["UCL"]]
    for fold in folds:
        site = fold["val"][0].split("/")[0]
        assert not any(c.startswith(site + "/") for c in fold["train"])
        assert not set(fold["train"] + fold["val"]) & set(index["splits"]["test"])
    case = next(c for c in index["cases"] if c["case_id"] == "HK/Case17")
    assert case["metadata"]["spacing_source"].startswith("centre protocol")
    assert "estimated" in next(c for c in index["cases"] if c["case_id"] == "UCL/Case26")["metadata"]["spacing_source"]


def test_committed_promise12_index_is_portable_and_matches_the_data(shared_data):
    from training.prepare import index_split

    path = ROOT / "training" / "indexes" / "promise12.json"
    index = json.loads(path.read_text())
    assert not Path(index["root"]).is_absolute()
    test = index_split(path, "test")
    assert len(test) == 7 and {c.site for c in test} == {"BIDMC", "HK", "RUNMC", "UCL"}
    assert all(c.image.is_file() for c in test)
