"""nnU-Net v2 raw datasets read by ``prepare``: a small one written from real PROMISE12 HK cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from training.cli import main
from ProstateKDLib.datasets import index_cases, read_case
from ProstateKDLib.datasets.nnunet import index_nnunet, nnunet_channel
from ProstateKDLib.errors import DataError
from training.prepare import load_index

CASES = ("Case15", "Case16", "Case17")


def write_nnunet(root: Path, promise12: Path, cases=CASES, channel_names=None) -> Path:
    """``DatasetXXX`` with channel 0 an ADC-like map (a transform of T2) and channel 1 the real T2."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for number, case in enumerate(cases):
        t2 = sitk.ReadImage(str(promise12 / "HK" / f"{case}.nii.gz"))
        adc = sitk.Cast(3000 - sitk.Cast(t2, sitk.sitkFloat32), sitk.sitkFloat32)
        name = f"prostate_{number:03d}"
        sitk.WriteImage(adc, str(root / "imagesTr" / f"{name}_0000.nii.gz"))
        sitk.WriteImage(t2, str(root / "imagesTr" / f"{name}_0001.nii.gz"))
        label = sitk.ReadImage(str(promise12 / "HK" / f"{case}_segmentation.nii.gz"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"{name}.nii.gz"))
    descriptor = {
        "channel_names": channel_names or {"0": "ADC", "1": "T2"},
        "labels": {"background": 0, "prostate": 1},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": "Dataset042_PromiseHK",
    }
    (root / "dataset.json").write_text(json.dumps(descriptor), encoding="utf-8")
    return root


@pytest.fixture
def nnunet(shared_data: Path, tmp_path: Path) -> Path:
    return write_nnunet(tmp_path / "Dataset042_PromiseHK", shared_data / "promise12")


def test_cases_and_the_channel_by_name(nnunet: Path, shared_data: Path) -> None:
    cases = index_cases(nnunet)
    assert [c.case_id for c in cases] == ["nnUNet/prostate_000", "nnUNet/prostate_001", "nnUNet/prostate_002"]
    assert all(c.site == "nnUNet" and c.channel is None and c.image.name.endswith("_0001.nii.gz") for c in cases)
    image, label = read_case(cases[2])
    real = sitk.ReadImage(str(shared_data / "promise12" / "HK" / "Case17.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(real))
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, 1}
    adc = index_nnunet(nnunet, channel="adc")
    assert all(c.image.name.endswith("_0000.nii.gz") for c in adc)
    assert [c.image for c in index_cases(nnunet, channel=0)] == [c.image for c in adc]


def test_channel_errors_and_defaults() -> None:
    descriptor = {"channel_names": {"0": "T2W", "1": "ADC"}}
    assert nnunet_channel(descriptor, None) == 0 and nnunet_channel(descriptor, "ADC") == 1
    assert nnunet_channel({"channel_names": {"0": "MRI"}}, None) == 0
    with pytest.raises(DataError) as info:
        nnunet_channel(descriptor, "DWI")
    assert str(info.value) == "channel DWI not in dataset.json channel_names (0: T2W, 1: ADC)"
    with pytest.raises(DataError):
        nnunet_channel(descriptor, 2)


def test_prepare_reads_an_nnunet_v2_dataset(nnunet: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "index.json"
    assert main(["prepare", str(nnunet), "--out", str(out), "--folds", "1", "--test-fraction", "0",
                 "--quiet", "--keep-zones"]) == 0  # was: "dataset.json has no 'training' list"
    assert "nnunet layout, 3 cases" in capsys.readouterr().out
    index = json.loads(out.read_text())
    assert index["layout"] == "nnunet" and index["labels"] == {"1": "prostate"}
    assert [c["image"] for c in index["cases"]] == [f"imagesTr/prostate_00{i}_0001.nii.gz" for i in range(3)]
    train, val, test = load_index(out)
    assert len(train) + len(val) == 3 and test == []


def test_missing_channel_file_and_count_are_named(nnunet: Path) -> None:
    (nnunet / "imagesTr" / "prostate_001_0001.nii.gz").unlink()
    with pytest.raises(DataError) as info:
        index_cases(nnunet)
    assert str(info.value) == (
        f"case nnUNet/prostate_001: image file not found: {nnunet / 'imagesTr' / 'prostate_001_0001.nii.gz'}"
    )
    (nnunet / "labelsTr" / "prostate_001.nii.gz").unlink()
    with pytest.raises(DataError) as info:
        index_cases(nnunet)
    assert str(info.value) == "dataset.json numTraining is 3 but labelsTr holds 2 cases"
