"""Choosing the DICOM series to segment, on the real ProstateX studies (``../shared/data/dicom``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ProstateKDLib.cli import main
from ProstateKDLib.dicom_series import choose_series, find_series
from ProstateKDLib.errors import InputError
from ProstateKDLib.image_io import read_volume

from conftest import assert_same_geometry

T2_0000 = "4.000000-t2tsetra-00702"
ADC_0000 = "7.000000-ep2ddifftraDYNDISTADC-48780"


@pytest.fixture(scope="session")
def prostatex(shared_data: Path) -> Path:
    """``../shared/data/dicom``: ProstateX-0000 (oblique T2 + ADC) and ProstateX-0001 (two T2 + ADC)."""
    return shared_data / "dicom"


@pytest.fixture(scope="session")
def flat_study(prostatex: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ProstateX-0000's T2 and ADC files copied into one flat folder, as a PACS export may hold them."""
    folder = tmp_path_factory.mktemp("flat") / "ProstateX-0000"
    folder.mkdir()
    for series in (T2_0000, ADC_0000):
        for file in sorted((prostatex / "ProstateX-0000" / "07-07-2011" / series).glob("*.dcm")):
            shutil.copyfile(file, folder / f"{series[:1]}_{file.name}")
    return folder


def message(excinfo: pytest.ExceptionInfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_patient_folder_lists_t2_and_adc(prostatex: Path) -> None:
    found = find_series(prostatex / "ProstateX-0000")  # the series are two levels down
    assert [s.number for s in found] == [4, 7]
    t2, adc = found
    assert (t2.name, t2.plane, t2.positions, len(t2.files)) == ("t2_tse_tra", "axial", 19, 19)
    assert 17 < t2.oblique_deg < 20  # ProstateX-0000's T2 is tilted about 18.5 deg from the transverse plane
    assert t2.orientation == "axial oblique (18 deg)"
    assert t2.pixel_spacing_mm == (0.5, 0.5) and t2.slice_spacing_mm == pytest.approx(3.0, abs=1e-3)
    assert t2.axial_t2 and t2.t2_evidence == "name" and not t2.localizer
    assert adc.diffusion and not adc.axial_t2 and (adc.columns, adc.rows) == (84, 128)
    heights = [np.cross(*np.reshape(pydicom.dcmread(f).ImageOrientationPatient, (2, 3)))
               @ np.asarray(pydicom.dcmread(f).ImagePositionPatient, float) for f in t2.files]
    assert np.all(np.diff(heights) > 2.9)  # files sorted along the slice normal


def test_t2_plus_adc_in_one_flat_folder_reads_the_t2(prostatex: Path, flat_study: Path) -> None:
    choice = choose_series(flat_study)
    assert choice.series.number == 4 and choice.reason == "axial T2"
    assert choice.message() == (
        "using series 4 't2_tse_tra' (axial oblique (18 deg), 384x384x19, 0.5x0.5x3 mm): axial T2"
    )
    image = read_volume(flat_study)  # 38 files, two series: was "38 images at 19 slice positions"-style trouble
    alone = read_volume(prostatex / "ProstateX-0000" / "07-07-2011" / T2_0000)
    assert_same_geometry(image, alone, tol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(alone))
    normal = np.reshape(image.GetDirection(), (3, 3))[:, 2]
    assert abs(normal[2]) < 0.96  # oblique: the slice axis is not the patient's z axis


def test_series_given_by_number_or_uid(flat_study: Path) -> None:
    adc = read_volume(flat_study, series=7)
    assert adc.GetSize() == (84, 128, 19)
    uid = find_series(flat_study)[1].uid
    assert read_volume(flat_study, series=uid).GetSize() == (84, 128, 19)
    assert choose_series(flat_study, "7").reason == "as given"
    with pytest.raises(InputError) as excinfo:
        choose_series(flat_study, "12")
    assert message(excinfo) == (
        f"DICOM series 12 not found in folder {flat_study}; it holds "
        "series 4 't2_tse_tra' (axial oblique (18 deg), 384x384x19, 0.5x0.5x3 mm); "
        "series 7 'ep2d_diff_tra_DYNDIST_ADC' (axial oblique (18 deg), 84x128x19, 2x2x3 mm)"
    )


def test_two_t2_series_the_later_repeat_wins(prostatex: Path) -> None:
    choice = choose_series(prostatex / "ProstateX-0001")
    assert [s.number for s in choice.all_series] == [6, 8, 10]
    assert choice.series.number == 10
    assert [s.number for s in choice.candidates] == [6, 10]
    assert choice.message().endswith("axial T2 (of 2 axial T2 series: 6, 10; choose with --series)")
    assert choose_series(prostatex / "ProstateX-0001", 6).series.number == 6


def test_adc_alone_is_not_segmented_without_being_asked(prostatex: Path) -> None:
    folder = prostatex / "ProstateX-0001" / "07-08-2011" / "8.000000-ep2ddifftraDYNDISTMIXADC-33954"
    with pytest.raises(InputError) as excinfo:
        read_volume(folder)
    assert message(excinfo) == (
        f"no axial T2 series in folder {folder}; it holds "
        "series 8 'ep2d_diff_tra_DYNDIST_MIX_ADC' (axial oblique (6 deg), 84x128x19, 2x2x3 mm); "
        "choose one with --series UID|NUMBER"
    )
    assert read_volume(folder, series=8).GetSize() == (84, 128, 19)


def sagittal_copy(t2_files: list[Path], folder: Path, slices: int = 25) -> None:
    """A longer sagittal T2 series made from real T2 slices (new UIDs, sagittal IOP/IPP)."""
    folder.mkdir()
    uid = pydicom.uid.generate_uid()
    for k in range(slices):
        dataset = pydicom.dcmread(t2_files[k % len(t2_files)])
        dataset.SeriesInstanceUID = uid
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.SeriesNumber = 3
        dataset.SeriesDescription = dataset.ProtocolName = "t2_tse_sag"
        dataset.InstanceNumber = k + 1
        dataset.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        dataset.ImagePositionPatient = [-36 + 3 * k, -100, 100]
        dataset.save_as(folder / f"sag{k:03d}.dcm")


def test_longer_sagittal_t2_is_not_picked(flat_study: Path, prostatex: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    shutil.copytree(flat_study, study / "tra")
    sagittal_copy(list(find_series(flat_study)[0].files), study / "sag")
    found = find_series(study)
    assert [(s.number, s.plane, len(s.files)) for s in found] == [
        (3, "sagittal", 25), (4, "axial", 19), (7, "axial", 19)
    ]
    assert choose_series(study).series.number == 4
    assert read_volume(study, series=3).GetSize() == (384, 384, 25)


def test_series_command_lists_and_marks_the_choice(prostatex: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["series", str(prostatex / "ProstateX-0001")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["number", "description", "orientation", "size", "spacing", "mm", "files", "localizer"]
    assert out[3].split()[:3] == ["*", "10", "t2_tse_tra"] and out[1].split()[0] == "6"
    assert out[-1].startswith("using series 10 't2_tse_tra'")
    assert main(["series", str(prostatex / "ProstateX-0000"), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [(s["series_number"], s["chosen"], s["axial_t2"], s["files"]) for s in listing["series"]] == [
        (4, True, True, 19), (7, False, False, 19)
    ]
    assert listing["series"][0]["size"] == [384, 384, 19]


def test_series_command_without_axial_t2_exits_3(prostatex: Path, tmp_path: Path, capsys) -> None:
    folder = prostatex / "ProstateX-0000" / "07-07-2011" / ADC_0000
    assert main(["series", str(folder)]) == 3
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"no axial T2 series in folder {folder}")
    assert main(["series", str(tmp_path)]) == 3
    assert capsys.readouterr().err.strip() == f"prostatekd series: error: no DICOM series found in folder {tmp_path}"


def test_segment_says_which_series_it_used(flat_study: Path, tiny_bundle, tmp_path: Path, capsys) -> None:
    model = ["--model", str(tiny_bundle.path), "--device", "cpu"]
    assert main(["segment", str(flat_study), str(tmp_path / "t2.nii.gz"), *model]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "series:   using series 4 't2_tse_tra' (axial oblique (18 deg), 384x384x19, 0.5x0.5x3 mm): axial T2" in lines
    assert sitk.ReadImage(str(tmp_path / "t2.nii.gz")).GetSize() == (384, 384, 19)
    assert main(["segment", str(flat_study), str(tmp_path / "adc.nii.gz"), "--series", "7", "--json", *model]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["series"]["series_number"] == 7 and summary["series"]["reason"] == "as given"
    assert summary["input_size"] == [84, 128, 19]


def test_segment_bad_series_choice_writes_nothing(flat_study: Path, tiny_bundle, tmp_path: Path, capsys) -> None:
    model = ["--model", str(tiny_bundle.path), "--device", "cpu"]
    assert main(["segment", str(flat_study), str(tmp_path / "m.nii.gz"), "--series", "99", *model]) == 3
    error = capsys.readouterr().err
    assert error.startswith(f"prostatekd segment: error: DICOM series 99 not found in folder {flat_study}")
    nifti = tmp_path / "t2.nii.gz"
    sitk.WriteImage(read_volume(flat_study), str(nifti))
    assert main(["segment", str(nifti), str(tmp_path / "m.nii.gz"), "--series", "4", *model]) == 2
    assert capsys.readouterr().err.strip() == (
        f"prostatekd segment: error: --series applies to a DICOM folder input, not {nifti}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2.nii.gz"]
