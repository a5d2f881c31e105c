"""``prostatekd evaluate``: end to end on tiny phantoms with a random-weight bundle, and its summaries."""

from __future__ import annotations

import csv
import json
import math

import pytest
import SimpleITK as sitk

from training.cli import main
from training.evaluate import (
    COLUMNS,
    RESULT_FILES,
    format_table,
    model_labels,
    plot_metric,
    stats,
    summarize,
)
from training.prepare import prepare_index


@pytest.fixture(scope="module")
def index_path(tmp_path_factory):
    """Two phantom sites x 2 cases and a dataset index (one test case per site)."""
    from ProstateKDLib.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("evaluate")
    write_phantom_dataset(root / "data", cases_per_site=2, sites=["RUNMC", "HK"], size=(48, 48, 12))
    prepare_index(root / "data", root / "index.json", folds=1, test_fraction=0.5, progress=False)
    return root / "index.json"


def test_evaluate_end_to_end(tiny_bundle, index_path, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["evaluate", "--model", str(tiny_bundle.path), "--index", str(index_path),
            "--out", str(out), "--device", "cpu", "--save-masks", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "mean dice" in printed and "overall" in printed and "tiny-test-model" in printed
    for name in RESULT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / "per_case.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS
    assert len(rows) == 2 and sorted(r["site"] for r in rows) == ["HK", "RUNMC"]  # the test split
    for row in rows:
        assert row["model"] == "tiny-test-model" and row["case"].startswith(row["site"] + "/")
        assert 0.0 <= float(row["dice"]) <= 1.0
        assert float(row["volume_true_ml"]) > 0 and float(row["seconds"]) > 0
        for key in ("hd95_mm", "asd_mm", "volume_ml", "volume_error_pct"):
            value = float(row[key])
            assert math.isnan(value) or (math.isfinite(value) and (key == "volume_error_pct" or value >= 0))
    summary = json.loads((out / "summary.json").read_text())
    model = summary["models"]["tiny-test-model"]
    assert summary["cases"] == 2 and summary["sites"] == ["HK", "RUNMC"] and summary["source"]["split"] == "test"
    assert model["cases"] == 2 and model["mean_seconds"] > 0 and set(model["sites"]) == {"HK", "RUNMC"}
    assert model["overall"]["dice"]["n"] == 2 and 0 <= model["overall"]["dice"]["mean"] <= 1
    assert model["sites"]["HK"]["cases"] == 1
    case = next(r["case"] for r in rows if r["site"] == "HK")
    mask = sitk.ReadImage(str(out / "masks" / "tiny-test-model" / f"{case}.nii.gz"))
    image = sitk.ReadImage(str(index_path.parent / "data" / f"{case}.nii.gz"))
    assert mask.GetSize() == image.GetSize() and mask.GetSpacing() == pytest.approx(image.GetSpacing())
    # a non-empty output folder is refused without --overwrite
    assert main(argv) == 4
    assert capsys.readouterr().err.strip() == (
        f"prostatekd evaluate: error: output folder {out} is not empty (use --overwrite to write into it)"
    )


def test_evaluate_argument_checks(index_path, tmp_path, capsys):
    base = ["evaluate", "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*base, "--data", str(index_path.parent / "data"), "--split", "val"]) == 2
    assert "--split and --fold apply only with --index" in capsys.readouterr().err
    assert main([*base, "--index", str(index_path), "--fold", "3", "--split", "val"]) == 8
    assert capsys.readouterr().err.strip().endswith("fold 3 out of range (it has 1 folds: 0-0)")
    assert main([*base, "--index", str(tmp_path / "none.json")]) == 8
    assert not (tmp_path / "r").exists()


def fake_rows():
    rows = []
    for model, offset in (("a", 0.0), ("b", 0.1)):
        for site, dices in (("S1", (0.8, 0.7)), ("S2", (0.6, 0.9))):
            for i, dice in enumerate(dices):
                rows.append({"model": model, "case": f"{site}/C{i}", "site": site, "dice": dice + offset,
                             "hd95_mm": math.nan if i else 4.0, "asd_mm": 1.0, "volume_ml": 30.0,
                             "volume_true_ml": 25.0, "volume_error_ml": 5.0, "volume_error_pct": 20.0,
                             "seconds": 0.5, "note": ""})
    return rows


def test_summary_statistics_and_table(tmp_path):
    rows = fake_rows()
    summary = summarize(rows, ["a", "b"])
    assert summary["a"]["overall"]["dice"]["mean"] == pytest.approx(0.75)
    assert summary["b"]["sites"]["S2"]["dice"]["median"] == pytest.approx(0.85)
    assert summary["a"]["overall"]["hd95_mm"] == {"mean": 4.0, "std": 0.0, "median": 4.0, "n": 2, "nan": 2}
    assert stats([1.0]) == {"mean": 1.0, "std": None, "median": 1.0, "n": 1, "nan": 0}
    table = format_table({"sites": ["S1", "S2"], "models": summary})
    assert table.splitlines()[0].split() == ["mean", "dice", "S1", "S2", "overall"]
    assert table.splitlines()[2].split() == ["b", "0.850", "0.850", "0.850"]
    assert plot_metric(rows, "hd95_mm", ["a", "b"], tmp_path / "hd.png").stat().st_size > 1000


def test_model_labels_are_unique():
    assert model_labels(["a", "b"], ["1", "1"]) == ["a", "b"]
    assert model_labels(["a", "a"], ["1", "2"]) == ["a 1", "a 2"]
    assert model_labels(["a", "a"], ["1", "1"]) == ["a 1 #1", "a 1 #2"]
