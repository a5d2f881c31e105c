"""Hostile inputs get one line on stderr and the right exit code (issue 15, items 7, 9-12)."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.cli import main
from ProstateKDLib.native_stderr import captured_native_stderr


@pytest.fixture
def run_fd(tiny_bundle, capfd):
    """Run ``prostatekd`` in-process; stdout/stderr captured at the file-descriptor level (ITK's too)."""

    def runner(*args: str, model: bool = True):
        argv = list(args)
        if model and args[0] == "segment":
            argv += ["--model", str(tiny_bundle.path), "--device", "cpu"]
        code = main(argv)
        out, err = capfd.readouterr()
        return code, out, err

    return runner


def _volume(size=(32, 32, 12), spacing=(0.5, 0.6, 3.0), seed=0) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(seed).normal(300, 50, size[::-1]).astype(np.int16))
    image.SetSpacing(spacing)
    return image


# -------------------------------------------------------------------- item 7
def test_zero_nifti_pixdim_is_implausible_spacing(run_fd, tmp_path):
    plain = tmp_path / "ok.nii.gz"
    sitk.WriteImage(_volume(), str(plain))
    header = bytearray(gzip.decompress(plain.read_bytes()))
    header[76 + 12 : 76 + 16] = struct.pack("<f", 0.0)  # pixdim[3] = 0
    bad = tmp_path / "zero_z.nii.gz"
    bad.write_bytes(gzip.compress(bytes(header)))
    with captured_native_stderr():
        assert sitk.ReadImage(str(bad)).GetSpacing()[2] == 1.0  # what ITK alone makes of it
    output = tmp_path / "m.nii.gz"
    code, out, err = run_fd("segment", str(bad), str(output))
    assert (code, err.strip()) == (
        3, f"prostatekd segment: error: {bad} has implausible voxel spacing (0.5, 0.6, 0) mm; expected 0.05-20 mm per axis"
    )
    assert not output.exists() and out == ""


def test_zero_nrrd_space_direction_is_implausible_spacing(run_fd, tmp_path):
    good = tmp_path / "ok.nrrd"
    sitk.WriteImage(_volume(spacing=(0.5, 0.5, 3.0)), str(good), useCompression=False)
    data = good.read_bytes()
    assert b"(0,0,3)" in data
    bad = tmp_path / "zero.nrrd"
    bad.write_bytes(data.replace(b"(0,0,3)", b"(0,0,0)", 1))
    code, _, err = run_fd("segment", str(bad), str(tmp_path / "m.nii.gz"))
    assert (code, err.strip()) == (
        3, f"prostatekd segment: error: {bad} has implausible voxel spacing (0.5, 0.5, 0) mm; expected 0.05-20 mm per axis"
    )


# ------------------------------------------------------------------- item 10
def test_itk_console_messages_never_reach_stderr(run_fd, tmp_path):
    image = _volume()
    whole = tmp_path / "whole.mha"
    sitk.WriteImage(image, str(whole), useCompression=False)
    truncated = tmp_path / "truncated.mha"
    truncated.write_bytes(whole.read_bytes()[:-2000])
    header_only = tmp_path / "nodata.mhd"
    sitk.WriteImage(image, str(header_only))
    (tmp_path / "nodata.raw").unlink()
    import nibabel as nib

    affine = np.diag([0.5, 0.6, 3.0, 1.0])
    affine[0, 1] = 0.3  # shear
    sheared = tmp_path / "sheared.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 12), np.int16) + np.arange(12, dtype=np.int16), affine), str(sheared))
    expected = {
        truncated: f"cannot read {truncated}: the file is damaged or truncated "
                   "(MetaImage: M_ReadElementsData: data not read completely)",
        header_only: f"cannot read {header_only}: the file is damaged or truncated (MetaImage: Read: Cannot open data file)",
        sheared: f"cannot read {sheared}: its orientation matrix is not orthonormal (sheared)",
    }
    for path, message in expected.items():
        code, out, err = run_fd("segment", str(path), str(tmp_path / "m.nii.gz"))
        assert code == 3, path
        assert err.splitlines() == [f"prostatekd segment: error: {message}"], err
        assert out == ""
    assert not (tmp_path / "m.nii.gz").exists()


# ------------------------------------------------------------------- item 11
def test_usage_errors_exit_2(run_fd, tmp_path):
    source = tmp_path / "t2.nii.gz"
    sitk.WriteImage(_volume(), str(source))
    code, _, err = run_fd("segment", str(source), str(tmp_path / "m.nii.gz"), "--threads", "0")
    assert (code, err.strip()) == (2, "prostatekd segment: error: --threads must be at least 1, got 0")
    code, _, err = run_fd("models", "info", model=False)
    assert (code, err.strip()) == (2, "prostatekd models: error: models info needs a bundle NAME or path")
    code, _, err = run_fd("segment", str(source), str(tmp_path / "m.nii.gz"), "--skip-existing")
    assert (code, err.strip()) == (2, "prostatekd segment: error: --skip-existing is for a batch (add --batch)")
    assert not (tmp_path / "m.nii.gz").exists()


# ------------------------------------------------------------------- item 12
def test_far_origin_is_exact_where_the_format_can_hold_it(run_fd, tmp_path):
    image = _volume()
    image.SetOrigin((-812.123456789, 655.98765431, 1940.55555555))
    source = tmp_path / "far.nrrd"
    sitk.WriteImage(image, str(source))
    for suffix in (".nrrd", ".seg.nrrd", ".mha", ".nii.gz"):
        output = tmp_path / f"mask{suffix}"
        code, _, err = run_fd("segment", str(source), str(output))
        assert code == 0, err
        error = np.abs(np.subtract(sitk.ReadImage(str(output)).GetOrigin(), image.GetOrigin())).max()
        if suffix == ".nii.gz":
            assert 0 < error < 1e-3  # NIfTI stores the origin as float32 (README says so)
        else:
            assert error == 0.0, suffix


# -------------------------------------------------------------------- item 9
def test_a_mask_or_noise_as_input_is_said_not_to_look_like_a_t2(run_fd, tmp_path):
    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[:12, :48, :48]
    label = (((xx - 24) / 12) ** 2 + ((yy - 24) / 10) ** 2 + ((zz - 6) / 4) ** 2 < 1).astype(np.uint8)
    mask_input = sitk.GetImageFromArray(label)
    mask_input.SetSpacing((0.8, 0.8, 3.0))
    noise = sitk.GetImageFromArray(rng.normal(300, 100, label.shape).astype(np.float32))
    noise.SetSpacing((0.8, 0.8, 3.0))
    checks = {"label.nii.gz": (mask_input, "[check: distinct-values < 32]"),
              "noise.nii.gz": (noise, "[check: neighbour-correlation < 0.5]")}
    for name, (image, check) in checks.items():
        sitk.WriteImage(image, str(tmp_path / name))
        code, out, err = run_fd("segment", str(tmp_path / name), str(tmp_path / f"m_{name}"), "--json")
        assert code == 0, err
        summary = json.loads(out)
        warnings = [w for w in summary["warnings"] if w.startswith("the input does not look like a T2 prostate MRI")]
        assert len(warnings) == 1 and warnings[0].endswith(check), summary["warnings"]
        assert set(summary["quality"]) >= {"distinct_values", "neighbour_correlation", "foreground_margin"}


def test_flip_check_adds_its_measure(run_fd, tmp_path, make_volume):
    source = tmp_path / "t2.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    code, out, err = run_fd("segment", str(source), str(tmp_path / "m.nii.gz"), "--flip-check", "--json")
    assert code == 0, err
    agreement = json.loads(out)["quality"]["flip_agreement"]
    assert 0.0 <= agreement <= 1.0
    flagged = [w for w in json.loads(out)["warnings"] if "[check: flip-agreement" in w]
    assert bool(flagged) == (agreement < 0.8)
