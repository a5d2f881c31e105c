"""Dataset readers (Decathlon, Slicer's dataset_index.csv), ``prostatekd prepare`` and ``load_index``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from training.cli import main
from ProstateKDLib.datasets import CaseRecord, index_cases, load_case, read_case
from ProstateKDLib.datasets import index_msd, msd_default_channel
from ProstateKDLib.datasets import SAVED_INDEX
from ProstateKDLib.errors import DataError, OutputError
from training.prepare import (
    BadCaseError,
    load_index,
    make_folds,
    prepare_index,
    split_test,
)

SIZE = (48, 48, 12)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Two phantom sites x 3 cases (read-only; copy before changing)."""
    from ProstateKDLib.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("prep") / "data"
    write_phantom_dataset(root, cases_per_site=3, sites=["RUNMC", "BMC"], size=SIZE)
    return root


def copy_of(phantoms: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(phantoms, target)
    return target


# ------------------------------------------------------------------ Decathlon
def write_msd(root: Path, cases: int = 2, modality=None) -> Path:
    """A Task05-like folder: 4D two-channel images (T2 = 100 + i, ADC = 1000 + i) and zone labels."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i in range(cases):
        t2 = sitk.GetImageFromArray((100 + i + rng.normal(0, 5, (10, 24, 28))).astype(np.float32))
        adc = sitk.GetImageFromArray((1000 + i + rng.normal(0, 5, (10, 24, 28))).astype(np.float32))
        image = sitk.JoinSeries([t2, adc])
        image.SetSpacing((0.6, 0.6, 3.6, 1.0))
        image.SetOrigin((-10.0, 5.0, 2.0, 0.0))
        labels = np.zeros((10, 24, 28), np.uint8)
        labels[3:7, 8:16, 8:14] = 1  # PZ
        labels[3:7, 8:16, 14:20] = 2  # TZ
        label = sitk.GetImageFromArray(labels)
        label.SetSpacing((0.6, 0.6, 3.6))
        label.SetOrigin((-10.0, 5.0, 2.0))
        sitk.WriteImage(image, str(root / "imagesTr" / f"prostate_{i:02d}.nii.gz"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"prostate_{i:02d}.nii.gz"))
        entries.append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz", "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
    descriptor = {
        "name": "Prostate",
        "modality": modality or {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": cases,
        "training": entries,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(descriptor))
    return root


def test_msd_layout_channel_and_zones(tmp_path):
    root = write_msd(tmp_path / "Task05_Prostate")
    cases = index_cases(root)
    assert [c.case_id for c in cases] == ["MSD/prostate_00", "MSD/prostate_01"]
    assert all(c.site == "MSD" and c.channel == 0 for c in cases)
    image, label = read_case(cases[1])
    assert image.GetSize() == (28, 24, 10)
    assert abs(float(sitk.GetArrayViewFromImage(image).mean()) - 101) < 1  # T2 channel
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, 1}  # PZ + TZ merged
    _, zones = read_case(cases[1], keep_zones=True)
    assert set(np.unique(sitk.GetArrayViewFromImage(zones))) == {0, 1, 2}
    adc, _ = read_case(index_cases(root, channel=1)[1])
    assert abs(float(sitk.GetArrayViewFromImage(adc).mean()) - 1001) < 1
    image_t, label_t = load_case(cases[0], "RAS", (1.2, 1.2, 3.6), {"name": "zscore"})
    assert image_t.shape == label_t.shape and int(label_t.max()) == 1
    with pytest.raises(DataError) as info:
        index_msd(root, channel=2)
    assert str(info.value) == "channel 2 out of range: dataset.json lists 2 modalities (0: T2, 1: ADC)"


def test_msd_default_channel_follows_modality():
    assert msd_default_channel({"modality": {"0": "ADC", "1": "T2W"}}) == 1
    assert msd_default_channel({"modality": {"0": "T2", "1": "ADC"}}) == 0
    assert msd_default_channel({"modality": {"0": "MRI"}}) is None


def test_msd_missing_file_names_case(tmp_path):
    root = write_msd(tmp_path / "task", cases=1)
    (root / "labelsTr" / "prostate_00.nii.gz").unlink()
    with pytest.raises(DataError) as info:
        index_cases(root)
    assert str(info.value) == f"case MSD/prostate_00: label file not found: {root / 'labelsTr/prostate_00.nii.gz'}"


def test_prepare_msd_keep_zones(tmp_path):
    root = write_msd(tmp_path / "task", cases=3)
    index = prepare_index(root, tmp_path / "index.json", folds=1, test_fraction=0.0, keep_zones=True, progress=False)
    assert index["layout"] == "msd" and index["label_mode"] == "zones"
    assert index["labels"] == {"1": "PZ", "2": "TZ"}
    assert [c["channel"] for c in index["cases"]] == [0, 0, 0]
    assert index["cases"][0]["label_values"] == [0, 1, 2]
    train, val, test = load_index(tmp_path / "index.json")
    assert test == [] and len(train) + len(val) == 3 and all(c.channel == 0 for c in train + val)


# ------------------------------------------------------------ dataset_index.csv
def test_saved_cases_are_added_once(phantoms, tmp_path):
    from ProstateKDLib.training_case import save_training_case

    root = copy_of(phantoms, tmp_path)
    assert not (root / SAVED_INDEX).exists()
    folder_cases = index_cases(root)
    # saved from Slicer into the tree: found by the folder scan and in dataset_index.csv, listed once
    image = sitk.ReadImage(str(root / "BMC/Case00.nii.gz"))
    label = sitk.ReadImage(str(root / "BMC/Case00_segmentation.nii.gz"))
    saved = save_training_case(image, label, root, "RUNMC")
    assert saved.case_id == "RUNMC/Case03" and (root / SAVED_INDEX).is_file()
    cases = index_cases(root)
    assert [c.case_id for c in cases].count("RUNMC/Case03") == 1 and len(cases) == len(folder_cases) + 1
    # a row whose files live elsewhere (absolute paths) is added; an optional channel column is read
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("Case00.nii.gz", "Case00_segmentation.nii.gz"):
        shutil.copy(root / "BMC" / name, elsewhere / name.replace("Case00", "Edited"))
    text = (root / SAVED_INDEX).read_text()
    assert text.splitlines()[0] == "case_id,site,image,label,source,added"
    row = f"SLICER/Edited,SLICER,{elsewhere / 'Edited.nii.gz'},{elsewhere / 'Edited_segmentation.nii.gz'},x,y\n"
    (root / SAVED_INDEX).write_text(text + row)
    cases = index_cases(root)
    assert len(cases) == len(folder_cases) + 2
    extra = next(c for c in cases if c.case_id == "SLICER/Edited")
    assert extra.site == "SLICER" and extra.image == elsewhere / "Edited.nii.gz" and extra.channel is None
    # the same case id as a scanned case, with another image: refused, naming the line
    bad = f"BMC/Case01,BMC,{elsewhere / 'Edited.nii.gz'},{elsewhere / 'Edited_segmentation.nii.gz'},x,y\n"
    (root / SAVED_INDEX).write_text(text + row + bad)
    with pytest.raises(DataError) as info:
        index_cases(root)
    assert str(info.value) == (
        f"dataset_index.csv line 4: case BMC/Case01 is also in the folder scan with another image "
        f"({root / 'BMC/Case01.nii.gz'})"
    )
    (root / SAVED_INDEX).write_text(text + "RUNMC/Gone,RUNMC,RUNMC/Gone.nii.gz,RUNMC/Gone_seg.nii.gz,x,y\n")
    with pytest.raises(DataError) as info:
        index_cases(root)
    assert str(info.value) == f"case RUNMC/Gone: image file not found: {root / 'RUNMC/Gone.nii.gz'}"


def test_saved_cases_alone(phantoms, tmp_path):
    root = tmp_path / "only_saved"
    root.mkdir()
    (root / SAVED_INDEX).write_text(
        "case_id,site,image,label,source,added,channel\n"
        f"A/One,A,{phantoms / 'BMC/Case00.nii.gz'},{phantoms / 'BMC/Case00_segmentation.nii.gz'},,,0\n"
    )
    cases = index_cases(root)
    assert [(c.case_id, c.channel) for c in cases] == [("A/One", 0)]


# -------------------------------------------------------------------- splits
def synthetic_cases(counts: dict[str, int]) -> list[CaseRecord]:
    return [CaseRecord(f"{s}/Case{i:02d}", s, Path(f"{s}/{i}.nii.gz"), Path(f"{s}/{i}_s.nii.gz"))
            for s, n in counts.items() for i in range(n)]


def test_splits_reproducible_stratified_disjoint_covering():
    cases = synthetic_cases({"RUNMC": 30, "BMC": 30, "HCRUDB": 19, "UCL": 13, "BIDMC": 12, "HK": 12})
    dev, test = split_test(cases, 0.2, seed=3)
    assert split_test(list(reversed(cases)), 0.2, seed=3) == (dev, test)  # order-independent, reproducible
    assert split_test(cases, 0.2, seed=4) != (dev, test)
    assert {c.case_id for c in dev}.isdisjoint({c.case_id for c in test})
    assert len(dev) + len(test) == len(cases)
    per_site = {s: sum(c.site == s for c in test) for s in {c.site for c in cases}}
    assert per_site == {"RUNMC": 6, "BMC": 6, "HCRUDB": 4, "UCL": 3, "BIDMC": 2, "HK": 2}
    folds = make_folds(dev, 5, seed=3)
    assert folds == make_folds(dev, 5, seed=3)
    vals = [{c.case_id for c in val} for _, val in folds]
    assert set().union(*vals) == {c.case_id for c in dev} and sum(map(len, vals)) == len(dev)  # a partition
    assert max(map(len, vals)) - min(map(len, vals)) <= 1
    for train, val in folds:
        assert {c.case_id for c in train}.isdisjoint({c.case_id for c in val})
        assert len(train) + len(val) == len(dev)
        assert {c.site for c in val} == {c.site for c in cases} == {c.site for c in train}  # every site, every fold
    single = make_folds(dev, 1, seed=3, val_fraction=0.25)
    assert len(single) == 1 and {c.site for c in single[0][1]} == {c.site for c in cases}


def test_folds_need_enough_cases():
    with pytest.raises(DataError, match="cannot make 5 folds from 3 development cases"):
        make_folds(synthetic_cases({"A": 3}), 5, seed=0)


# ------------------------------------------------------------------- prepare
def test_prepare_writes_index_and_loads_back(phantoms, tmp_path, capsys):
    out = tmp_path / "index.json"
    assert main(["prepare", str(phantoms), "--out", str(out), "--folds", "2", "--test-fraction", "0.34",
                 "--seed", "7", "--quiet"]) == 0
    assert "index:" in capsys.readouterr().out
    index = json.loads(out.read_text())
    assert index["format"] == "prostatekd-dataset-index" and index["format_version"] == 1
    assert index["seed"] == 7 and index["source"] == str(phantoms.resolve()) and index["layout"] == "multisite"
    assert index["sites"] == {"BMC": {"cases": 3, "test": 1, "development": 2},
                              "RUNMC": {"cases": 3, "test": 1, "development": 2}}
    assert {c["case_id"] for c in index["cases"]} == {f"{s}/Case0{i}" for s in ("BMC", "RUNMC") for i in range(3)}
    assert index["cases"][0]["image"] == "BMC/Case00.nii.gz" and index["skipped"] == []
    assert len(index["splits"]["folds"]) == 2
    train, val, test = load_index(out, fold=1)
    assert [c.site for c in test] == ["BMC", "RUNMC"] and len(train) == len(val) == 2
    assert all(c.image.is_file() for c in train + val + test)
    # same seed, same splits
    again = prepare_index(phantoms, tmp_path / "again.json", folds=2, test_fraction=0.34, seed=7, progress=False)
    assert again["splits"] == index["splits"]
    # refused without --overwrite, nothing changed
    before = out.read_text()
    assert main(["prepare", str(phantoms), "--out", str(out), "--quiet"]) == 4
    assert capsys.readouterr().err.strip() == f"prostatekd prepare: error: {out} exists (use --overwrite to replace it)"
    assert out.read_text() == before
    assert main(["prepare", str(phantoms), "--out", str(out), "--folds", "1", "--quiet", "--overwrite"]) == 0
    with pytest.raises(DataError) as info:
        load_index(out, fold=1)
    assert str(info.value) == f"dataset index {out}: fold 1 out of range (it has 1 folds: 0-0)"
    # data moved: root= relocates the relative paths
    moved = tmp_path / "moved"
    shutil.copytree(phantoms, moved)
    assert load_index(out, root=moved)[2][0].image.parent.parent == moved


def test_bad_cases_named_or_skipped(phantoms, tmp_path, capsys):
    root = copy_of(phantoms, tmp_path)
    label_path = root / "BMC/Case01_segmentation.nii.gz"
    label = sitk.ReadImage(str(label_path))
    array = sitk.GetArrayFromImage(label)
    array[0, 0, 0] = 5
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(label)
    sitk.WriteImage(bad, str(label_path))
    shifted = sitk.ReadImage(str(root / "RUNMC/Case02_segmentation.nii.gz"))
    shifted.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(shifted, str(root / "RUNMC/Case02_segmentation.nii.gz"))
    out = tmp_path / "index.json"
    with pytest.raises(BadCaseError) as info:
        prepare_index(root, out, folds=2, progress=False)
    assert str(info.value) == "case BMC/Case01: label values must be 0, 1 or 2, found 0, 1, 5"
    assert info.value.case_id == "BMC/Case01" and isinstance(info.value, DataError) and not out.exists()
    assert main(["prepare", str(root), "--out", str(out), "--quiet"]) == 8
    assert capsys.readouterr().err.strip() == (
        "prostatekd prepare: error: case BMC/Case01: label values must be 0, 1 or 2, found 0, 1, 5 "
        "(use --skip-bad to list and skip bad cases)"
    )
    assert main(["prepare", str(root), "--out", str(out), "--folds", "2", "--skip-bad", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipped BMC/Case01: case BMC/Case01: label values must be 0, 1 or 2, found 0, 1, 5" in err
    assert "skipped RUNMC/Case02: case RUNMC/Case02: image and label geometry differ (spacing" in err
    index = json.loads(out.read_text())
    assert [s["case_id"] for s in index["skipped"]] == ["BMC/Case01", "RUNMC/Case02"]
    assert len(index["cases"]) == 4 and "BMC/Case01" not in json.dumps(index["splits"])


def test_prepare_argument_checks(phantoms, tmp_path, capsys):
    assert main(["prepare", str(phantoms), "--out", str(tmp_path / "i.json"), "--val-fraction", "0.3"]) == 2
    assert "--val-fraction applies only with --folds 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", str(phantoms), "--out", str(tmp_path / "i.json"), "--test-fraction", "1.5"])
    with pytest.raises(OutputError, match="must be a .json file"):
        prepare_index(phantoms, tmp_path / "index.txt", progress=False)
    with pytest.raises(OutputError, match="output folder does not exist"):
        prepare_index(phantoms, tmp_path / "missing" / "index.json", progress=False)
    with pytest.raises(DataError, match="is not a ProstateKD dataset index"):
        (tmp_path / "other.json").write_text("{}")
        load_index(tmp_path / "other.json")
