"""image_io: reading every input format, validation messages, atomic mask writing, .seg.nrrd."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import assert_same_geometry, oblique_direction
from ProstateKDLib.errors import InputError, OutputError
from ProstateKDLib.image_io import (
    PROSTATE_SEGMENT,
    SegmentInfo,
    check_output_path,
    image_summary,
    read_volume,
    validate_volume,
    write_mask,
)
from ProstateKDLib.seg_nrrd import PROSTATE_COLOR, segment_tags

PROSTATE_TAGS = (
    "TerminologyEntry:Segmentation category and type - 3D Slicer General Anatomy list"
    "~SCT^123037004^Anatomical Structure~SCT^41216001^Prostate~^^~Anatomic codes - DICOM master list~^^~^^|"
)


def pydicom_test_file(name: str) -> Path:
    """A file pydicom ships (never downloads: only the local test_files folder)."""
    pydicom_data = pytest.importorskip("pydicom.data")
    path = Path(pydicom_data.__file__).parent / "test_files" / name
    if not path.exists():
        pytest.skip(f"pydicom test file {name} not available")
    return path


def message(excinfo: pytest.ExceptionInfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.7.1",
                       positions: list[int] | None = None, orientation: Any = None) -> sitk.Image:
    """Write ``image`` as an int16 MR series, one file per slice, with oblique IOP/IPP tags."""
    folder.mkdir(parents=True, exist_ok=True)
    image16 = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    slices = range(image.GetSize()[2]) if positions is None else positions
    for number, k in enumerate(slices):
        slice_image = image16[:, :, k % image.GetSize()[2]]
        iop = (d[0], d[3], d[6], d[1], d[4], d[7]) if orientation is None else orientation(number)
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0020|0037": "\\".join(f"{v:.10g}" for v in iop),
            "0020|0032": "\\".join(f"{v:.10g}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(number + 1),
            "0018|0050": f"{image.GetSpacing()[2]:g}",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{number:04d}.dcm"))
        writer.Execute(slice_image)
    return image16


@pytest.fixture
def volume(make_volume: Callable[..., sitk.Image]) -> sitk.Image:
    """Oblique (20 deg about (0.3, 1, 0.5)), flipped and permuted (non-RAS), anisotropic 0.5x0.6x3 mm."""
    image = make_volume()
    assert not np.allclose(np.abs(image.GetDirection()), np.eye(3).ravel(), atol=0.05)
    return image


# ------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_round_trip_file_formats(tmp_path: Path, volume: sitk.Image, suffix: str) -> None:
    path = tmp_path / f"t2{suffix}"
    sitk.WriteImage(volume, str(path))
    image = read_volume(path)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetDimension() == 3
    # NIfTI stores the direction as float32 qform/sform; the others keep doubles.
    assert_same_geometry(image, volume, tol=1e-5 if ".nii" in suffix else 1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(volume))


def test_round_trip_int16_keeps_values(tmp_path: Path, volume: sitk.Image) -> None:
    path = tmp_path / "t2.nrrd"
    sitk.WriteImage(sitk.Cast(volume, sitk.sitkInt16), str(path))
    image = read_volume(path)
    assert image.GetPixelID() == sitk.sitkFloat32
    expected = sitk.GetArrayFromImage(sitk.Cast(volume, sitk.sitkInt16)).astype(np.float32)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), expected)


def test_round_trip_dicom_series(tmp_path: Path, volume: sitk.Image) -> None:
    assert np.linalg.det(np.reshape(volume.GetDirection(), (3, 3))) > 0
    expected = write_dicom_series(volume, tmp_path / "series")
    image = read_volume(tmp_path / "series")
    assert image.GetPixelID() == sitk.sitkFloat32
    assert_same_geometry(image, volume, tol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayFromImage(expected))


def test_dicom_left_handed_volume_reads_back_reversed_but_same_in_space(
    tmp_path: Path, make_volume: Callable[..., sitk.Image]
) -> None:
    """DICOM has no left-handed volumes: the slice axis comes back as row x column, slices reversed."""
    volume = make_volume(direction=oblique_direction(permute=False))
    assert np.linalg.det(np.reshape(volume.GetDirection(), (3, 3))) < 0
    expected = write_dicom_series(volume, tmp_path / "series")
    image = read_volume(tmp_path / "series")
    last = volume.TransformIndexToPhysicalPoint((0, 0, volume.GetSize()[2] - 1))
    np.testing.assert_allclose(image.GetOrigin(), last, atol=1e-4)
    direction, original = np.reshape(image.GetDirection(), (3, 3)), np.reshape(volume.GetDirection(), (3, 3))
    np.testing.assert_allclose(direction[:, :2], original[:, :2], atol=1e-4)
    np.testing.assert_allclose(direction[:, 2], -original[:, 2], atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayFromImage(expected)[::-1])


def test_dicom_folder_of_unnamed_series_needs_the_series_given(tmp_path: Path, volume: sitk.Image) -> None:
    """Two series without description or timing: no axial T2 can be told apart, so --series decides."""
    folder = tmp_path / "study"
    write_dicom_series(volume, folder / "a", series_uid="1.2.3.4.100")
    small = volume[:, :, :4]
    write_dicom_series(small, folder / "b", series_uid="1.2.3.4.200")
    for child in (folder / "a", folder / "b"):
        for file in child.iterdir():
            file.rename(folder / f"{child.name}{file.name}")
    with pytest.raises(InputError) as excinfo:
        read_volume(folder)
    assert message(excinfo) == (
        f"no axial T2 series in folder {folder}; it holds "
        "series 1.2.3.4.100 (no description) (axial oblique (18 deg), 48x40x12, 0.5x0.6x3 mm); "
        "series 1.2.3.4.200 (no description) (axial oblique (18 deg), 48x40x4, 0.5x0.6x3 mm); "
        "choose one with --series UID|NUMBER"
    )
    assert read_volume(folder, series="1.2.3.4.100").GetSize() == volume.GetSize()
    assert read_volume(folder, series="1.2.3.4.200").GetSize() == small.GetSize()
    with pytest.raises(InputError) as excinfo:
        read_volume(folder, series="9.9")
    assert message(excinfo).startswith(f"DICOM series 9.9 not found in folder {folder}; it holds series 1.2.3.4.100")


def test_dicom_series_with_repeated_positions_is_refused(tmp_path: Path, volume: sitk.Image) -> None:
    n = volume.GetSize()[2]
    write_dicom_series(volume, tmp_path / "dwi", positions=[*range(n), *range(n)])  # two "b-values"
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "dwi")
    assert message(excinfo) == (
        f"DICOM series in {tmp_path / 'dwi'} has {2 * n} images at {n} slice positions "
        "(several echoes, b-values or time points?); a single 3D stack is needed"
    )


def test_dicom_series_with_missing_slice_is_refused(tmp_path: Path, volume: sitk.Image) -> None:
    positions = [k for k in range(volume.GetSize()[2]) if k != 5]
    write_dicom_series(volume, tmp_path / "gap", positions=positions)
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "gap")
    assert message(excinfo) == (
        f"DICOM series in {tmp_path / 'gap'} has unevenly spaced slices (3-6 mm apart); slices are missing"
    )


def test_dicom_series_mixing_orientations_is_refused(tmp_path: Path, volume: sitk.Image) -> None:
    d = volume.GetDirection()
    tilted = (d[1], d[4], d[7], d[0], d[3], d[6])
    straight = (d[0], d[3], d[6], d[1], d[4], d[7])
    write_dicom_series(volume, tmp_path / "mixed", orientation=lambda i: tilted if i == 3 else straight)
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "mixed")
    assert message(excinfo) == (
        f"DICOM series in {tmp_path / 'mixed'} mixes slice orientations (a localizer?); "
        "a single 3D stack is needed"
    )


# ------------------------------------------------------ real pydicom files
def test_real_single_mr_slice_is_2d() -> None:
    path = pydicom_test_file("MR_small.dcm")
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert message(excinfo) == (
        f"{path} is a 2D image (64x64); a 3D volume is needed (pass the DICOM series folder, not one file)"
    )


def test_real_mr_folder_of_one_slice_is_2d(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "MR_small.dcm").write_bytes(pydicom_test_file("MR_small.dcm").read_bytes())
    with pytest.raises(InputError) as excinfo:
        read_volume(folder)
    assert message(excinfo) == f"{folder} is a 2D image (64x64); a 3D volume is needed"


def test_real_mr_slice_restacked_as_series(tmp_path: Path) -> None:
    """MR_small.dcm (a real scanner file) copied into an evenly spaced, oblique 6-slice series."""
    pydicom = pytest.importorskip("pydicom")
    source = pydicom.dcmread(pydicom_test_file("MR_small.dcm"))
    direction = oblique_direction()
    row, column, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    folder = tmp_path / "real"
    folder.mkdir()
    for k in range(6):
        ds = source.copy()
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.7.2"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.7.2.{k + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *column)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in np.array([-10.0, 20.0, 5.0]) + 2.5 * k * normal]
        ds.PixelSpacing = ["0.3125", "0.3125"]
        ds.save_as(folder / f"slice{k}.dcm", enforce_file_format=True)
    image = read_volume(folder)
    assert image.GetSize() == (64, 64, 6)
    np.testing.assert_allclose(image.GetSpacing(), (0.3125, 0.3125, 2.5), atol=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), direction, atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), (-10.0, 20.0, 5.0), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image)[2], source.pixel_array.astype(np.float32))


def test_real_localizer_series_is_refused() -> None:
    """pydicom's dicomdirtests MR700 series: 7 slices in 7 orientations (a radial localizer)."""
    folder = pydicom_test_file("dicomdirtests/98892003/MR700")
    with pytest.raises(InputError) as excinfo:
        read_volume(folder)
    assert message(excinfo) == (
        f"DICOM series in {folder} mixes slice orientations (a localizer?); a single 3D stack is needed"
    )


# ---------------------------------------------------------- input errors
def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "nope.nii.gz")
    assert message(excinfo) == f"input not found: {tmp_path / 'nope.nii.gz'}"
    assert excinfo.value.exit_code == 3


@pytest.mark.parametrize("name, content", [("x.nii.gz", b"this is a text file\n"), ("x.nrrd", None)])
def test_not_an_image(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    path.write_bytes(content if content is not None else np.random.default_rng(1).bytes(4096))
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert message(excinfo) == f"cannot read {path}: not a readable NIfTI, NRRD, MHA/MHD or DICOM image"


def test_sheared_nifti(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    affine = np.array([[0.6, 0.1, 0, 10], [0, -0.6, 0.2, 20], [0.05, 0, 3, -5], [0, 0, 0, 1]])
    path = tmp_path / "sheared.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 8)).astype(np.float32), affine), path)
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert message(excinfo) == f"cannot read {path}: its orientation matrix is not orthonormal (sheared)"


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path)
    assert message(excinfo) == f"no DICOM series found in folder {tmp_path}"


def test_2d_images(tmp_path: Path) -> None:
    flat = sitk.GetImageFromArray(np.random.default_rng(0).random((256, 256)).astype(np.float32))
    sitk.WriteImage(flat, str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "flat.nrrd")
    assert message(excinfo) == f"{tmp_path / 'flat.nrrd'} is a 2D image (256x256); a 3D volume is needed"
    slab = sitk.GetImageFromArray(np.random.default_rng(0).random((1, 200, 256)).astype(np.float32))
    sitk.WriteImage(slab, str(tmp_path / "slab.nii.gz"))
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "slab.nii.gz")
    assert message(excinfo) == f"{tmp_path / 'slab.nii.gz'} is a 2D image (256x200); a 3D volume is needed"


def test_nan_and_constant_and_spacing(tmp_path: Path, volume: sitk.Image) -> None:
    array = sitk.GetArrayFromImage(volume)
    array[3, 4, 5] = np.nan
    nan = sitk.GetImageFromArray(array)
    nan.CopyInformation(volume)
    sitk.WriteImage(nan, str(tmp_path / "nan.nrrd"))
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "nan.nrrd")
    assert message(excinfo) == f"{tmp_path / 'nan.nrrd'} contains NaN or infinite values"

    for value, text in [(0.0, "0"), (12.5, "12.5")]:
        constant = sitk.Image(volume.GetSize(), sitk.sitkFloat32) + value
        constant.CopyInformation(volume)
        sitk.WriteImage(constant, str(tmp_path / "constant.mha"))
        with pytest.raises(InputError) as excinfo:
            read_volume(tmp_path / "constant.mha")
        expected = f"{tmp_path / 'constant.mha'} is constant (every voxel is {text}); nothing to segment"
        assert message(excinfo) == expected

    thick = sitk.Image(volume)
    thick.SetSpacing((0.6, 0.6, 80.0))
    sitk.WriteImage(thick, str(tmp_path / "thick.nii.gz"))
    with pytest.raises(InputError) as excinfo:
        read_volume(tmp_path / "thick.nii.gz")
    assert message(excinfo) == (
        f"{tmp_path / 'thick.nii.gz'} has implausible voxel spacing (0.6, 0.6, 80) mm; "
        "expected 0.05-20 mm per axis"
    )


@pytest.mark.parametrize("spacing, text", [((0.01, 0.5, 3.0), "0.01, 0.5, 3"), ((0.5, 0.5, 25.0), "0.5, 0.5, 25")])
def test_validate_volume_spacing(volume: sitk.Image, spacing: tuple, text: str) -> None:
    image = sitk.Image(volume)
    image.SetSpacing(spacing)
    with pytest.raises(InputError) as excinfo:
        validate_volume(image, "T2")
    assert message(excinfo) == f"T2 has implausible voxel spacing ({text}) mm; expected 0.05-20 mm per axis"


def test_validate_volume_messages(volume: sitk.Image) -> None:
    validate_volume(volume)  # the fixture itself is fine

    small = sitk.Image([4, 4, 20], sitk.sitkFloat32) + 1
    small[0, 0, 0] = 5.0
    small.SetSpacing((1.0, 1.0, 1.0))
    with pytest.raises(InputError) as excinfo:
        validate_volume(small)
    assert message(excinfo) == "input is too small (4x4x20 voxels); at least 8x8 voxels per slice are needed"

    vector = sitk.Compose(volume, volume)
    with pytest.raises(InputError) as excinfo:
        validate_volume(vector, "v")
    assert message(excinfo) == "v has 2 components per voxel; a scalar volume is needed"

    flat = volume[:, :, 0]
    with pytest.raises(InputError) as excinfo:
        validate_volume(flat, "f")
    assert message(excinfo) == "f is a 2D image (48x40); a 3D volume is needed"

    skewed = sitk.Image(volume)
    skewed.SetDirection((1, 0, 0, 0, 1, 0, 0, 0.5, 0.8))  # SimpleITK accepts any non-singular matrix
    with pytest.raises(InputError) as excinfo:
        validate_volume(skewed, "s")
    assert message(excinfo) == "s has a degenerate or non-orthonormal direction matrix; its orientation is corrupt"

    with pytest.raises(TypeError):
        validate_volume(np.zeros((8, 8, 8)))  # type: ignore[arg-type]


# -------------------------------------------------------------- channels
def write_4d(tmp_path: Path, volume: sitk.Image, channels: int = 2) -> tuple[Path, list[sitk.Image]]:
    """A 4D NIfTI with channels on the 4th axis, like the Medical Segmentation Decathlon Task05 (T2, ADC)."""
    images = [volume * (c + 1) + 10 * c for c in range(channels)]
    path = tmp_path / "prostate_00.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(images), str(path))
    return path, images


def test_4d_needs_a_channel(tmp_path: Path, volume: sitk.Image) -> None:
    path, _ = write_4d(tmp_path, volume)
    assert sitk.ReadImage(str(path)).GetSize() == (*volume.GetSize(), 2)  # SimpleITK reads it as 4D
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert message(excinfo) == f"{path} has 2 channels (0-1); choose one with --channel N"
    for bad in (5, -1):
        with pytest.raises(InputError) as excinfo:
            read_volume(path, channel=bad)
        assert message(excinfo) == f"channel {bad} out of range: {path} has 2 channels (0-1)"


def test_4d_channel_extracts_the_3d_volume(tmp_path: Path, volume: sitk.Image) -> None:
    path, images = write_4d(tmp_path, volume)
    for channel in (0, 1):
        image = read_volume(path, channel=channel)
        assert image.GetDimension() == 3 and image.GetPixelID() == sitk.sitkFloat32
        assert_same_geometry(image, volume, tol=1e-5)
        np.testing.assert_allclose(
            sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(images[channel]), rtol=1e-6
        )


def test_4d_nifti_from_nibabel(tmp_path: Path) -> None:
    """A 4D file as other tools write it (pixdim[4] = 0, channels last)."""
    nib = pytest.importorskip("nibabel")
    direction = oblique_direction()
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag([0.625, 0.625, 3.6])
    affine[:3, 3] = [-80.0, 60.0, -30.0]
    data = np.random.default_rng(0).random((24, 20, 10, 2)).astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    image.header["pixdim"][4] = 0
    path = tmp_path / "msd.nii.gz"
    nib.save(image, path)
    adc = read_volume(path, channel=1)
    assert adc.GetSize() == (24, 20, 10)
    np.testing.assert_allclose(adc.GetSpacing(), (0.625, 0.625, 3.6), atol=1e-5)
    # NIfTI is RAS, ITK is LPS: the first two rows change sign.
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(np.reshape(adc.GetDirection(), (3, 3)), lps @ direction, atol=1e-5)
    np.testing.assert_allclose(adc.GetOrigin(), lps @ affine[:3, 3], atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(adc), data[..., 1].transpose(2, 1, 0))


def test_vector_image_channels(tmp_path: Path, volume: sitk.Image) -> None:
    path = tmp_path / "vector.nrrd"
    sitk.WriteImage(sitk.Compose(volume, volume * 2, volume * 3), str(path))
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert message(excinfo) == f"{path} has 3 channels (0-2); choose one with --channel N"
    image = read_volume(path, channel=2)
    assert image.GetNumberOfComponentsPerPixel() == 1
    assert_same_geometry(image, volume, tol=1e-9)
    expected = 3 * sitk.GetArrayViewFromImage(volume)
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(image), expected, rtol=1e-6)


def test_channel_on_a_3d_image(tmp_path: Path, volume: sitk.Image) -> None:
    path = tmp_path / "t2.nrrd"
    sitk.WriteImage(volume, str(path))
    assert read_volume(path, channel=0).GetSize() == volume.GetSize()
    with pytest.raises(InputError) as excinfo:
        read_volume(path, channel=1)
    assert message(excinfo) == f"channel 1 out of range: {path} has 1 channel (0-0)"


def test_read_volume_argument_types(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        read_volume(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        read_volume(tmp_path, channel="1")  # type: ignore[arg-type]


# ------------------------------------------------------------ output path
def test_check_output_path(tmp_path: Path) -> None:
    for name in ("mask.nii.gz", "mask.nii", "mask.nrrd", "mask.seg.nrrd", "mask.mha"):
        assert check_output_path(tmp_path / name) == (tmp_path / name).resolve()
    # ITK picks writers by lower-case suffix ("MASK.MHA" would become MASK.mhd + MASK.zraw)
    for name in ("mask.png", "mask.gz", "mask.mhd", "mask", ".nii.gz", "MASK.NII.GZ", "mask.MHA"):
        with pytest.raises(OutputError) as excinfo:
            check_output_path(tmp_path / name)
        assert message(excinfo) == (
            f"unsupported output format {tmp_path / name}; use .nii.gz, .nii, .nrrd, .seg.nrrd or .mha"
        )
        assert excinfo.value.exit_code == 4
    with pytest.raises(OutputError) as excinfo:
        check_output_path(tmp_path / "missing" / "mask.nii.gz")
    assert message(excinfo) == f"output folder does not exist: {tmp_path / 'missing'}"
    (tmp_path / "old.nii.gz").write_bytes(b"old")
    with pytest.raises(OutputError) as excinfo:
        check_output_path(tmp_path / "old.nii.gz")
    assert message(excinfo) == f"{tmp_path / 'old.nii.gz'} exists (use --overwrite to replace it)"
    assert check_output_path(str(tmp_path / "old.nii.gz"), overwrite=True) == (tmp_path / "old.nii.gz").resolve()
    (tmp_path / "dir.nii.gz").mkdir()
    with pytest.raises(OutputError) as excinfo:
        check_output_path(tmp_path / "dir.nii.gz", overwrite=True)
    assert message(excinfo) == (
        f"output path is a folder: {tmp_path / 'dir.nii.gz'}; give a file name such as mask.nii.gz"
    )
    with pytest.raises(OutputError) as excinfo:
        check_output_path("")
    assert message(excinfo) == "output path is empty"


def test_check_output_path_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(OutputError) as excinfo:
        check_output_path(tmp_path / "mask.nii.gz")
    assert message(excinfo) == f"output folder is not writable: {tmp_path}"


# ------------------------------------------------------------ write_mask
def make_mask(volume: sitk.Image) -> sitk.Image:
    array = np.zeros(sitk.GetArrayViewFromImage(volume).shape, dtype=np.uint8)
    array[3:7, 10:25, 12:30] = 1  # z, y, x
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(volume)
    return mask


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha"])
def test_write_mask_round_trip(tmp_path: Path, volume: sitk.Image, suffix: str) -> None:
    mask = make_mask(volume)
    written = write_mask(mask, tmp_path / f"mask{suffix}")
    assert written == (tmp_path / f"mask{suffix}").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"mask{suffix}"]
    back = sitk.ReadImage(str(written))
    assert back.GetPixelID() == sitk.sitkUInt8
    assert_same_geometry(back, volume, tol=1e-5 if ".nii" in suffix else 1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(mask))


def test_write_mask_is_compressed(tmp_path: Path, volume: sitk.Image) -> None:
    mask = make_mask(volume)
    write_mask(mask, tmp_path / "mask.nrrd")
    write_mask(mask, tmp_path / "mask.nii")
    assert b"encoding: gzip" in (tmp_path / "mask.nrrd").read_bytes()[:1000]
    assert (tmp_path / "mask.nrrd").stat().st_size < (tmp_path / "mask.nii").stat().st_size / 5


def test_write_mask_refuses_to_overwrite(tmp_path: Path, volume: sitk.Image) -> None:
    target = tmp_path / "mask.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError) as excinfo:
        write_mask(make_mask(volume), target)
    assert message(excinfo) == f"{target} exists (use --overwrite to replace it)"
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []
    write_mask(make_mask(volume), target, overwrite=True)
    assert sitk.ReadImage(str(target)).GetSize() == volume.GetSize()


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_write_mask_failure_leaves_nothing(
    tmp_path: Path, volume: sitk.Image, monkeypatch: pytest.MonkeyPatch, failure: type
) -> None:
    target = tmp_path / "mask.nii.gz"
    target.write_bytes(b"precious")
    seen: list[str] = []

    def broken_writer(image: sitk.Image, filename: str, *args: Any, **kwargs: Any) -> None:
        seen.append(filename)
        Path(filename).write_bytes(b"half a file")
        raise failure(f"ITK ERROR: NiftiImageIO(0x55d1): ERROR: nifti library failed to write image: {filename}\n")

    monkeypatch.setattr(sitk, "WriteImage", broken_writer)
    expected = OutputError if failure is RuntimeError else KeyboardInterrupt
    with pytest.raises(expected) as excinfo:
        write_mask(make_mask(volume), target, overwrite=True)
    if expected is OutputError:
        assert message(excinfo) == f"cannot write {target}: nifti library failed to write image: {target}"
    assert len(seen) == 1
    assert Path(seen[0]).parent == tmp_path
    assert Path(seen[0]).name.startswith(f".mask.tmp-{os.getpid()}-") and seen[0].endswith(".nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
    assert target.read_bytes() == b"precious"


def test_write_mask_argument_checks(tmp_path: Path, volume: sitk.Image) -> None:
    with pytest.raises(TypeError):
        write_mask(np.zeros((8, 8, 8)), tmp_path / "m.nii.gz")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        write_mask(volume[:, :, 0], tmp_path / "m.nii.gz")
    with pytest.raises(ValueError):
        write_mask(sitk.Cast(make_mask(volume), sitk.sitkInt16) * 300, tmp_path / "m.nii.gz")
    with pytest.raises(ValueError):
        write_mask(sitk.Cast(make_mask(volume), sitk.sitkFloat32) * 0.5, tmp_path / "m.nii.gz")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- .seg.nrrd
def test_seg_nrrd_metadata(tmp_path: Path, volume: sitk.Image) -> None:
    path = write_mask(make_mask(volume), tmp_path / "mask.seg.nrrd")
    seg = sitk.ReadImage(str(path))
    meta = {key: seg.GetMetaData(key) for key in seg.GetMetaDataKeys()}
    assert meta["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert meta["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert meta["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    assert meta["Segment0_ID"] == "Segment_1"
    assert meta["Segment0_Name"] == "Prostate"
    assert meta["Segment0_NameAutoGenerated"] == "0"
    assert meta["Segment0_LabelValue"] == "1"
    assert meta["Segment0_Layer"] == "0"
    assert meta["Segment0_Color"] == "0.901961 0.619608 0.54902"
    assert meta["Segment0_ColorAutoGenerated"] == "0"
    assert meta["Segment0_Extent"] == "12 29 10 24 3 6"  # i0 i1 j0 j1 k0 k1
    assert meta["Segment0_Tags"] == PROSTATE_TAGS
    assert "Segment1_ID" not in meta
    assert_same_geometry(seg, volume, tol=1e-9)
    assert meta["NRRD_space"] == "left-posterior-superior"


def test_seg_nrrd_custom_segments(tmp_path: Path, volume: sitk.Image) -> None:
    mask = make_mask(volume)
    mask[5, 5, 1] = 2
    mask[6, 7, 2] = 7  # not described: gets an auto segment
    segments = [
        SegmentInfo(1, "Peripheral zone", (0.2, 0.4, 0.6), "ctx~SCT^1^a~SCT^2^b~^^~ctx2~^^~^^"),
        SegmentInfo(2, "Transition zone", [1, 0, 0]),  # type: ignore[arg-type]
        SegmentInfo(3, "Lesion", (0, 1, 0)),  # absent from the mask
    ]
    seg = sitk.ReadImage(str(write_mask(mask, tmp_path / "zones.seg.nrrd", segments=segments)))
    meta = {key: seg.GetMetaData(key) for key in seg.GetMetaDataKeys()}
    names = [meta[f"Segment{i}_Name"] for i in range(4)]
    assert names == ["Peripheral zone", "Transition zone", "Lesion", "Label 7"]
    assert [meta[f"Segment{i}_LabelValue"] for i in range(4)] == ["1", "2", "3", "7"]
    assert meta["Segment0_Tags"] == "TerminologyEntry:ctx~SCT^1^a~SCT^2^b~^^~ctx2~^^~^^|"
    assert meta["Segment1_Tags"] == ""
    assert meta["Segment1_Color"] == "1 0 0"
    assert meta["Segment1_Extent"] == "5 5 5 5 1 1"
    assert meta["Segment2_Extent"] == "0 -1 0 -1 0 -1"
    assert meta["Segment3_ColorAutoGenerated"] == "1"
    assert meta["Segment3_Extent"] == "6 6 7 7 2 2"
    assert "Segment4_ID" not in meta
    # other formats ignore segments
    write_mask(mask, tmp_path / "zones.nrrd", segments=segments)
    assert not sitk.ReadImage(str(tmp_path / "zones.nrrd")).HasMetaDataKey("Segment0_Name")


def test_segment_info_and_tags() -> None:
    assert PROSTATE_SEGMENT.label_value == 1 and PROSTATE_SEGMENT.name == "Prostate"
    assert PROSTATE_SEGMENT.color == PROSTATE_COLOR
    assert segment_tags(PROSTATE_SEGMENT.terminology) == PROSTATE_TAGS
    assert segment_tags(PROSTATE_TAGS) == PROSTATE_TAGS
    assert segment_tags(PROSTATE_TAGS[len("TerminologyEntry:"):-1]) == PROSTATE_TAGS
    assert segment_tags(None) == ""
    for bad in [dict(label_value=0), dict(label_value=256), dict(label_value=True), dict(name=""),
                dict(color=(1.2, 0, 0)), dict(color=(0, 0)), dict(terminology=3)]:
        with pytest.raises(ValueError):
            SegmentInfo(**{"label_value": 1, "name": "x", "color": (0, 0, 0), **bad})
    with pytest.raises(ValueError):
        from ProstateKDLib.seg_nrrd import slicer_segmentation_metadata

        slicer_segmentation_metadata(sitk.Image([8, 8, 8], sitk.sitkUInt8), [PROSTATE_SEGMENT, PROSTATE_SEGMENT])


# ---------------------------------------------------------------- summary
def test_image_summary(volume: sitk.Image) -> None:
    summary = image_summary(volume)
    assert summary["size"] == [48, 40, 12]
    assert summary["spacing_mm"] == pytest.approx([0.5, 0.6, 3.0])
    assert summary["origin_mm"] == pytest.approx([12.5, -40.0, 7.0])
    assert summary["direction"] == pytest.approx(list(volume.GetDirection()))
    assert summary["voxel_volume_ml"] == pytest.approx(0.5 * 0.6 * 3.0 / 1000)
    assert summary["pixel_type"] == "32-bit float"
    assert len(summary["orientation"]) == 3 and set(summary["orientation"]) <= set("LRPAIS")
    assert image_summary(sitk.Image([8, 8, 8], sitk.sitkUInt8))["orientation"] == "LPS"


@pytest.mark.parametrize("pixel", [sitk.sitkFloat32, sitk.sitkInt16])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_truncated_files(tmp_path: Path, volume: sitk.Image, suffix: str, pixel: int) -> None:
    """SimpleITK zero-fills truncated NIfTI data silently; read_volume refuses it like the other formats."""
    path = tmp_path / f"t2{suffix}"
    sitk.WriteImage(sitk.Cast(volume, pixel), str(path), useCompression=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    detail = " (MetaImage: M_ReadElementsData: data not read completely)" if suffix == ".mha" else ""
    assert message(excinfo) == f"cannot read {path}: the file is damaged or truncated{detail}"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nifti_non_finite_values(tmp_path: Path, volume: sitk.Image, suffix: str, bad: float, dtype: type) -> None:
    """SimpleITK 2.5 (ITK 5.4) reads NaN/inf NIfTI voxels as 0; read_volume still reports them."""
    array = sitk.GetArrayFromImage(volume).astype(dtype)
    array[7, 30, 40] = bad
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(volume)
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(image, str(path))
    assert np.isfinite(sitk.GetArrayViewFromImage(sitk.ReadImage(str(path)))).all()  # the ITK behaviour
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert message(excinfo) == f"{path} contains NaN or infinite values"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti2(tmp_path: Path, suffix: str) -> None:
    """SimpleITK 2.5 cannot read NIfTI-2: say so. The NIfTI-2 data check itself works."""
    nib = pytest.importorskip("nibabel")
    from ProstateKDLib.image_io import inspect_nifti

    data = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
    path = tmp_path / f"t2{suffix}"
    nib.save(nib.Nifti2Image(data, np.diag([0.7, 0.7, 3.0, 1.0])), path)
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert message(excinfo) == f"cannot read {path}: NIfTI-2 is not supported; save it as NIfTI-1"
    assert inspect_nifti(path) is None
    data[15, 15, 7] = np.nan  # the very last voxel
    nib.save(nib.Nifti2Image(data, np.eye(4)), path)
    assert inspect_nifti(path) == "non-finite"


def test_real_tri_planar_localizer_folder() -> None:
    """pydicom's MR2 folder: three series, two tri-planar localizers (3 files each) and one single slice."""
    folder = pydicom_test_file("dicomdirtests/98892003/MR2")
    with pytest.raises(InputError) as excinfo:
        read_volume(folder)  # only localizers: nothing to choose
    assert message(excinfo) == (
        f"no axial T2 series in folder {folder}; it holds "
        "series 2 'T/S/C RF FAST PILOT' (mixed, 16x16x3, 1.17x1.17x10 mm, localizer); "
        "series 2 'T/S/C RF FAST PILOT' (mixed, 16x16x3, 1.17x1.17x10 mm, localizer); "
        "series 2 'FAST LOCALIZER' (sagittal, 16x16x1, 1.37x1.37x10 mm, localizer); "
        "choose one with --series UID|NUMBER"
    )
    with pytest.raises(InputError) as excinfo:
        read_volume(folder, series=2)  # three series share SeriesNumber 2
    assert message(excinfo).startswith(f"series number 2 is ambiguous in folder {folder}: series 2 'T/S/C")
    assert message(excinfo).endswith("; give the SeriesInstanceUID")
    with pytest.raises(InputError) as excinfo:
        read_volume(folder, series="1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.481")
    assert message(excinfo) == f"{folder} is a 2D image (16x16); a 3D volume is needed"


def test_nifti_with_header_extension(tmp_path: Path) -> None:
    """Voxel data after a header extension (vox_offset > 540) is found and checked."""
    nib = pytest.importorskip("nibabel")
    data = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32) + 1
    for name, bad in (("ok.nii.gz", None), ("nan.nii.gz", (0, 0, 0)), ("inf.nii", (15, 15, 7))):
        if bad:
            data[bad] = np.inf if name.startswith("inf") else np.nan
        image = nib.Nifti1Image(data, np.diag([0.7, 0.7, 3.0, 1.0]))
        image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 600))
        nib.save(image, tmp_path / name)
        with (gzip.open if name.endswith(".gz") else open)(tmp_path / name, "rb") as handle:
            raw = handle.read(112)
        assert struct.unpack("<f", raw[108:112])[0] > 540  # vox_offset
    assert read_volume(tmp_path / "ok.nii.gz").GetSize() == (16, 16, 8)
    for name in ("nan.nii.gz", "inf.nii"):
        with pytest.raises(InputError) as excinfo:
            read_volume(tmp_path / name)
        assert message(excinfo) == f"{tmp_path / name} contains NaN or infinite values"
