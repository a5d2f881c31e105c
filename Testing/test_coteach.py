"""Semi-supervised co-teaching on tiny phantoms: role schedule, confidence filter, a run without the
unlabelled labels (both bundles, provenance, resume), bad options, CLI help."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from ProstateKDLib.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"
LARGE = dict(large_network="unet", large_kwargs={"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0})
TINY = dict(LARGE, epochs=2, device="cpu", num_threads=2, confidence=0.6)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """Labelled phantoms (2 sites x 3) and unlabelled ones (1 site x 2) whose label files are deleted."""
    from ProstateKDLib.phantom import write_phantom_dataset

    base = tmp_path_factory.mktemp("coteach-data")
    write_phantom_dataset(base / "labelled", cases_per_site=3, sites=["RUNMC", "BMC"], size=(48, 48, 12))
    write_phantom_dataset(base / "unlabelled", cases_per_site=2, sites=["HK"], size=(48, 48, 12), seed=7)
    for label in (base / "unlabelled" / "HK").glob("*_segmentation.nii.gz"):
        label.unlink()
    assert len(list((base / "unlabelled" / "HK").glob("Case*"))) == 2
    return base / "labelled", base / "unlabelled"


def tiny_config(root: Path):
    from training.config import config_from_dict

    data = yaml.safe_load(SMOKE.read_text())
    data["data"]["root"] = str(root)
    data["preprocessing"]["patch_size"] = [16, 16, 8]
    return config_from_dict(data, "smoke.yaml")


def test_roles_alternate_and_confidence_filter():
    from training.coteach import confidence_mask, pseudo_label_loss, teacher_for_epoch

    assert [teacher_for_epoch(e, 1) for e in range(1, 5)] == ["large", "small", "large", "small"]
    assert [teacher_for_epoch(e, 2) for e in range(1, 6)] == ["large", "large", "small", "small", "large"]
    probs = torch.tensor([[0.95, 0.5, 0.2, 0.1], [0.05, 0.5, 0.8, 0.9]]).reshape(1, 2, 4)  # (B, C, voxels)
    labels, mask = confidence_mask(probs, 0.8)
    assert labels[0, [0, 2, 3]].tolist() == [0, 1, 1]
    assert mask.tolist() == [[True, False, True, True]]  # 0.8 >= 0.8 kept, 0.5 dropped
    assert confidence_mask(probs, 0.95)[1].tolist() == [[True, False, False, False]]
    logits = torch.randn(1, 2, 4)
    none = pseudo_label_loss(logits, labels, torch.zeros_like(mask))
    assert float(none) == 0.0
    full = pseudo_label_loss(logits, labels, torch.ones_like(mask))
    torch.testing.assert_close(full, torch.nn.functional.cross_entropy(logits, labels))


def test_coteach_without_unlabelled_labels_writes_both_bundles_and_resumes(data, tmp_path):
    from ProstateKDLib.bundle import load_bundle
    from training.checkpoint import load_checkpoint
    from training.coteach import coteach

    labelled, unlabelled = data
    config = tiny_config(labelled)
    out = tmp_path / "coteach"
    assert coteach(config, unlabelled, out, progress=False, **TINY) == out
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["teacher"] for r in rows] == ["large", "small"]
    for row in rows:
        assert 0.0 <= float(row["coverage"]) <= 1.0 and float(row["sup_large"]) > 0 and float(row["sup_small"]) > 0
        assert row["val_dice_large"] != "" and row["val_dice_small"] != ""
    info = json.loads((out / "run.json").read_text())
    assert info["unlabelled_labels_used"] is False and info["data"]["unlabelled_cases"] == ["HK/Case00", "HK/Case01"]
    assert len(info["data"]["train_cases"]) == 4 and len(info["data"]["val_cases"]) == 2

    small, large = load_bundle(out / "bundle"), load_bundle(out / "large_bundle")
    prov = small.meta.provenance
    assert prov["coteaching"]["method"] == "coteach" and prov["method"].startswith("coteach")
    assert prov["coteaching"]["labelled_cases"] == 4 and prov["coteaching"]["unlabelled_cases"] == 2
    assert prov["coteaching"]["large_network"]["kwargs"]["channels"] == [8, 16, 32]
    assert prov["coteaching"]["role"] == "small" and large.meta.provenance["coteaching"]["role"] == "large"
    assert small.meta.raw["network"]["kwargs"]["channels"] == [4, 8, 16]
    assert large.meta.raw["network"]["kwargs"]["channels"] == [8, 16, 32]
    assert large.meta.name == small.meta.name + "-large" and small.meta.patch_size == (16, 16, 8)
    last = load_checkpoint(out / "checkpoint_last.pt")
    exported = small.load_state_dict()
    assert all(torch.equal(exported[k], last["model"][k]) for k in exported)

    with pytest.raises(Exception, match="is not empty; use --resume"):
        coteach(config, unlabelled, out, progress=False, **TINY)
    with pytest.raises(ConfigError, match="coteach option 'confidence' differs"):
        coteach(config, unlabelled, out, resume=True, progress=False, **{**TINY, "confidence": 0.7})
    coteach(config, unlabelled, out, resume=True, progress=False, **{**TINY, "epochs": 3})
    assert [r["teacher"] for r in csv.DictReader(open(out / "log.csv"))] == ["large", "small", "large"]
    assert load_bundle(out / "bundle").meta.provenance["epochs_trained"] == 3


def test_bad_options_and_data_write_nothing(data, tmp_path):
    from training.coteach import CoteachOptions, coteach

    labelled, unlabelled = data
    config = tiny_config(labelled)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"coteach option 'confidence' must be a number in \(0, 1\], got 1.5"):
        coteach(config, unlabelled, out, progress=False, **{**TINY, "confidence": 1.5})
    with pytest.raises(ConfigError, match="'alternate_every' must be an integer >= 1, got 0"):
        CoteachOptions(alternate_every=0)
    with pytest.raises(ConfigError, match="large_network"):
        CoteachOptions(large_network="nonet")
    deep = {"channels": [4, 8, 16, 32, 64], "strides": [2, 2, 2, 2]}
    with pytest.raises(ConfigError, match="coteach large network 'unet': .*divisible by the network's total stride"):
        coteach(config, unlabelled, out, progress=False, **{**TINY, "large_kwargs": deep})
    with pytest.raises(DataError, match="unlabelled data not found"):
        coteach(config, tmp_path / "missing", out, progress=False, **TINY)
    with pytest.raises(DataError, match="is also a labelled case"):
        coteach(config, labelled, out, progress=False, **TINY)
    assert not out.exists()


def test_cli_coteach_help(capsys):
    from training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["coteach", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--unlabelled" in text and "--large-channels" in text and "--confidence" in text and "--resume" in text


def test_semi_supervised_recipe_tiny(tmp_path, capsys):
    """``compare_semi.py --scale tiny``: labelled-only, co-taught small and large, all-labels rows."""
    import csv as csv_module
    import json as json_module

    from training.recipes.compare_semi import ROWS, main

    out = tmp_path / "semi"
    assert main(["--out", str(out), "--scale", "tiny", "--labelled-per-site", "1", "--quiet"]) == 0
    assert "| coteach | 2 labelled + 2 unlabelled (small network) |" in capsys.readouterr().out
    results = json_module.loads((out / "results.json").read_text())
    assert [m["model"] for m in results["models"]] == list(ROWS)
    with open(out / "data" / "unlabelled.csv", newline="") as handle:
        unlabelled = list(csv_module.DictReader(handle))
    assert unlabelled and all("label" not in row for row in unlabelled)  # images only
    provenance = json_module.loads((out / "coteach" / "bundle" / "model.json").read_text())["provenance"]
    assert provenance["coteaching"]["unlabelled_labels_used"] is False
    assert (out / "dice_per_site.png").stat().st_size > 0


def test_semi_supervised_recipe_needs_unlabelled_cases(tmp_path, capsys):
    from ProstateKDLib.errors import DataError
    from training.recipes.compare_semi import main

    with pytest.raises(DataError, match="none left unlabelled with --labelled-per-site 5"):
        main(["--out", str(tmp_path / "x"), "--scale", "tiny", "--labelled-per-site", "5", "--quiet"])
