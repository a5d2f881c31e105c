"""DICOM SEG output on the real, oblique ProstateX-0000 T2 series: read back and mapped onto the source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ProstateKDLib.cli import main
from ProstateKDLib.dicom_seg import check_seg_output_path, segment_to_dicom_seg, write_dicom_seg
from ProstateKDLib.dicom_series import find_series
from ProstateKDLib.errors import InputError, OutputError
from ProstateKDLib.image_io import read_volume

T2 = ("ProstateX-0000", "07-07-2011", "4.000000-t2tsetra-00702")
ADC = ("ProstateX-0000", "07-07-2011", "7.000000-ep2ddifftraDYNDISTADC-48780")


@pytest.fixture(scope="session")
def t2_folder(shared_data: Path) -> Path:
    """The oblique (18 deg) transverse T2 of ProstateX-0000: 384x384x19, 0.5x0.5x3 mm."""
    return shared_data.joinpath("dicom", *T2)


def mask_from_seg(seg_path: Path, source_folder: Path) -> tuple[np.ndarray, sitk.Image]:
    """Rebuild a (z, y, x) labelmap on the source grid from the SEG's frames, checking their geometry.

    Every frame must reference a source slice (SOPInstanceUID), lie at that slice's
    ImagePositionPatient and share its orientation and pixel spacing.
    """
    seg = pydicom.dcmread(seg_path)
    image = read_volume(source_folder)
    sources = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in sorted(source_folder.glob("*.dcm"))}
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [float(v) for v in next(iter(sources.values())).ImageOrientationPatient], atol=1e-6,
    )
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.5, 0.5]
    labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        source = sources[uid]
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in source.ImagePositionPatient], atol=1e-4)
        index = image.TransformPhysicalPointToContinuousIndex(position)
        np.testing.assert_allclose(index[:2], (0, 0), atol=1e-4)
        k = int(round(index[2]))
        assert abs(index[2] - k) < 1e-4
        identification = group if "SegmentIdentificationSequence" in group else shared  # shared when one segment
        segment = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        labels[k][frame > 0] = segment
    return labels, image


def asymmetric_mask(image: sitk.Image) -> sitk.Image:
    """A blob off-centre in every axis, spanning some slices only: any flip or shift shows."""
    z, y, x = sitk.GetArrayViewFromImage(image).shape
    kk, jj, ii = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    inside = ((ii - 0.6 * x) / 40) ** 2 + ((jj - 0.4 * y) / 60) ** 2 + ((kk - 6) / 3.5) ** 2 < 1
    inside[4, 10:20, 300:330] = True  # a small extra island on one slice
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def test_seg_frames_map_onto_the_oblique_source_voxel_for_voxel(t2_folder: Path, tmp_path: Path) -> None:
    from ProstateKDLib.bundle import resolve_model

    image = read_volume(t2_folder)
    mask = asymmetric_mask(image)
    labels = resolve_model(None).meta.labels
    files = list(find_series(t2_folder)[0].files)[::-1]  # any order of the source files
    path = write_dicom_seg(mask, files, tmp_path / "seg.dcm", labels, "prostatekd-student", "0.2.0")
    rebuilt, _ = mask_from_seg(path, t2_folder)
    expected = sitk.GetArrayFromImage(mask)
    assert expected.sum() > 10000 and 0 < expected.any(axis=(1, 2)).sum() < expected.shape[0]
    np.testing.assert_array_equal(rebuilt, expected)

    seg = pydicom.dcmread(path)
    source = pydicom.dcmread(files[0])
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert int(seg.NumberOfFrames) == int(expected.any(axis=(1, 2)).sum())  # empty slices omitted
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Prostate" and segment.SegmentAlgorithmType == "AUTOMATIC"
    kind, category = segment.SegmentedPropertyTypeCodeSequence[0], segment.SegmentedPropertyCategoryCodeSequence[0]
    assert (kind.CodingSchemeDesignator, kind.CodeValue, kind.CodeMeaning) == ("SCT", "41216001", "Prostate")
    assert (category.CodeValue, category.CodeMeaning) == ("123037004", "Anatomical Structure")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("prostatekd-student", "0.2.0")
    assert segment.SegmentAlgorithmName == "prostatekd-student"
    assert seg.SeriesNumber == 1004 and seg.ContentLabel == "PROSTATE"


def test_highdicom_reads_the_seg_back_on_the_source_geometry(t2_folder: Path, tmp_path: Path) -> None:
    import highdicom as hd

    from ProstateKDLib.bundle import resolve_model

    image = read_volume(t2_folder)
    mask = asymmetric_mask(image)
    path = write_dicom_seg(mask, find_series(t2_folder)[0].files, tmp_path / "seg.dcm",
                           resolve_model(None).meta.labels, "prostatekd-student", "0.2.0")
    seg = hd.seg.segread(path)
    expected = sitk.GetArrayViewFromImage(mask)
    in_seg = {g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
              for g in seg.PerFrameFunctionalGroupsSequence}
    for file in t2_folder.glob("*.dcm"):
        source = pydicom.dcmread(file, stop_before_pixels=True)
        k = int(round(image.TransformPhysicalPointToContinuousIndex(
            [float(v) for v in source.ImagePositionPatient])[2]))
        if source.SOPInstanceUID not in in_seg:
            assert not expected[k].any()  # only empty slices are omitted
            continue
        frame = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1])
        np.testing.assert_array_equal(frame[0, :, :, 0], expected[k])
    assert len(in_seg) == int(expected.any(axis=(1, 2)).sum())


def test_segmenting_into_a_seg_reproduces_the_mask(t2_folder: Path, tmp_path: Path) -> None:
    """The bundled student on the real oblique series: the SEG holds exactly the mask it computed."""
    from ProstateKDLib.inference import Segmenter

    result = segment_to_dicom_seg(Segmenter(None, device="cpu"), t2_folder, tmp_path / "out.dcm")
    expected = sitk.GetArrayFromImage(result.mask)
    assert expected.any()
    rebuilt, image = mask_from_seg(tmp_path / "out.dcm", t2_folder)
    np.testing.assert_array_equal(rebuilt, expected)
    assert result.output_path == str((tmp_path / "out.dcm").resolve())
    assert set(result.timings) == {"read", "preprocess", "network", "postprocess", "write"}


def test_cli_single_and_batch_dicom_seg(shared_data: Path, t2_folder: Path, tiny_bundle, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    model = ["--model", str(tiny_bundle.path), "--device", "cpu"]
    assert main(["segment", str(t2_folder), str(tmp_path / "single.dcm"), "--json", *model]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str((tmp_path / "single.dcm").resolve())
    seg = pydicom.dcmread(tmp_path / "single.dcm")
    assert seg.Modality == "SEG"
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "tiny-test-model"
    # --format dicom-seg with a name without suffix, as PACS files often are
    assert main(["segment", str(t2_folder), str(tmp_path / "SEG0001"), "--format", "dicom-seg", *model]) == 0
    assert pydicom.dcmread(tmp_path / "SEG0001").Modality == "SEG"
    capsys.readouterr()

    cases = tmp_path / "cases"
    shutil.copytree(t2_folder, cases / "ProstateX-0000")
    shutil.copytree(shared_data.joinpath("dicom", "ProstateX-0001", "07-08-2011", "6.000000-t2tsetra-76610"),
                    cases / "ProstateX-0001")
    (cases / "ProstateX-0002").mkdir()
    sitk.WriteImage(sitk.Image([16, 16, 16], sitk.sitkFloat32) + 1.0, str(cases / "nifti-case.nii.gz"))
    code = main(["segment", str(cases), str(tmp_path / "out"), "--format", "dicom-seg", *model])
    capsys.readouterr()
    assert code == 1  # the NIfTI case cannot become a DICOM SEG
    rows = {row["case"]: row for row in _csv(tmp_path / "out" / "summary.csv")}
    assert rows["ProstateX-0000"]["status"] != "error" and rows["ProstateX-0001"]["status"] != "error"
    assert rows["nifti-case"]["status"] == "error"
    assert rows["nifti-case"]["warnings"].startswith("DICOM SEG output needs a DICOM series folder as input")
    for case, folder in (("ProstateX-0000", t2_folder), ("ProstateX-0001", cases / "ProstateX-0001")):
        seg = pydicom.dcmread(tmp_path / "out" / f"{case}_segmentation.dcm")
        source = pydicom.dcmread(next(folder.glob("*.dcm")))
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert not (tmp_path / "out" / "nifti-case_segmentation.dcm").exists()


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_seg_output_errors_lose_nothing(shared_data: Path, t2_folder: Path, tmp_path: Path) -> None:
    from ProstateKDLib.bundle import resolve_model

    labels = resolve_model(None).meta.labels
    existing = tmp_path / "old.dcm"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputError, match=r"old\.dcm exists \(use --overwrite to replace it\)$"):
        check_seg_output_path(existing)
    with pytest.raises(OutputError, match=r"names an image format, not DICOM SEG; use a \.dcm name$"):
        check_seg_output_path(tmp_path / "mask.nii.gz")
    with pytest.raises(OutputError, match="output folder does not exist"):
        check_seg_output_path(tmp_path / "missing" / "seg.dcm")
    adc = read_volume(shared_data.joinpath("dicom", *ADC), series=7)
    with pytest.raises(InputError, match=r"^the mask's grid does not match the source series \(slices of 384x384"):
        write_dicom_seg(asymmetric_mask(adc), find_series(t2_folder)[0].files, tmp_path / "x.dcm", labels, "m", "1")
    assert existing.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.dcm"]  # no temporary or partial file
