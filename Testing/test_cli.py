"""The ``prostatekd`` command: segment (single and batch), models, phantom, errors."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.cli import main

from conftest import assert_same_geometry


@pytest.fixture
def run(tiny_bundle, capsys):
    """Run ``prostatekd`` with the tiny bundle; returns (exit code, stdout, stderr)."""

    def runner(*args: str, model: bool = True):
        argv = list(args)
        if model and args and args[0] == "segment":
            argv += ["--model", str(tiny_bundle.path), "--device", "cpu"]
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return runner


def write_dicom_series(image: sitk.Image, folder) -> None:
    """Write ``image`` as a DICOM series with its oblique geometry."""
    folder.mkdir()
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.7777"
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0020|000e": series,
            "0020|000d": series + ".1",
            "0020|0037": "\\".join(f"{v:.10f}" for v in (direction[0], direction[3], direction[6],
                                                           direction[1], direction[4], direction[7])),
            "0020|0032": "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1),
            "0018|0050": str(image.GetSpacing()[2]),
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)


@pytest.mark.parametrize("in_suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", "dicom"])
@pytest.mark.parametrize("out_suffix", [".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha"])
def test_segment_keeps_input_geometry(run, tmp_path, make_volume, in_suffix, out_suffix):
    image = make_volume(size=(40, 36, 10))
    if in_suffix == "dicom":
        source = tmp_path / "series"
        write_dicom_series(image, source)
        tol = 1e-4
    else:
        source = tmp_path / f"input{in_suffix}"
        sitk.WriteImage(image, str(source))
        tol = 1e-5
    target = tmp_path / f"mask{out_suffix}"
    code, out, err = run("segment", str(source), str(target), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["output"] == str(target)
    assert summary["input_size"] == [40, 36, 10]
    assert set(summary["timings_s"]) == {"read", "preprocess", "network", "postprocess", "write"}
    mask = sitk.ReadImage(str(target))
    assert_same_geometry(mask, image, tol=tol)
    if out_suffix == ".seg.nrrd":
        assert mask.GetMetaData("Segment0_Name") == "Prostate"
        assert "41216001" in mask.GetMetaData("Segment0_Tags")
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_segment_prints_what_it_did(run, tmp_path, make_volume):
    source = tmp_path / "case.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    code, out, _ = run("segment", str(source), str(tmp_path / "mask.nii.gz"))
    assert code == 0
    for field in ("model:    tiny-test-model 0.0.1", "device:   cpu", "input:    ", "48x40x12 voxels",
                  "0.5x0.6x3 mm", "gland:", " ml", "time:"):
        assert field in out


def test_no_largest_component_flag(run, tmp_path, make_volume):
    source = tmp_path / "case.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    code, _, _ = run("segment", str(source), str(tmp_path / "a.nii.gz"))
    code2, _, _ = run("segment", str(source), str(tmp_path / "b.nii.gz"), "--no-largest-component")
    assert code == code2 == 0
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b.nii.gz")))
    assert (a <= b).all()  # the largest component is a subset of everything


def _write(tmp_path, name, array, spacing=(0.5, 0.6, 3.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def bad_inputs(tmp_path):
    """(path, exact message, exit code) for each bad input."""
    rng = np.random.default_rng(0)
    volume = rng.normal(100, 10, (12, 32, 32)).astype(np.float32)
    nan = volume.copy()
    nan[3, 4, 5] = np.nan
    text = tmp_path / "notes.nii.gz"
    text.write_text("this is not an image")
    return [
        (tmp_path / "absent.nii.gz", f"input not found: {tmp_path / 'absent.nii.gz'}", 3),
        (text, f"cannot read {text}: not a readable NIfTI, NRRD, MHA/MHD or DICOM image", 3),
        (_write(tmp_path, "flat.nii.gz", volume[0]),
         f"{tmp_path / 'flat.nii.gz'} is a 2D image (32x32); a 3D volume is needed", 3),
        (_write(tmp_path, "zeros.nii.gz", np.zeros_like(volume)),
         f"{tmp_path / 'zeros.nii.gz'} is constant (every voxel is 0); nothing to segment", 3),
        (_write(tmp_path, "nan.nii.gz", nan), f"{tmp_path / 'nan.nii.gz'} contains NaN or infinite values", 3),
        (_write(tmp_path, "spacing.nii.gz", volume, spacing=(0.6, 0.6, 80.0)),
         f"{tmp_path / 'spacing.nii.gz'} has implausible voxel spacing (0.6, 0.6, 80) mm; "
         "expected 0.05-20 mm per axis", 3),
    ]


def test_bad_inputs_fail_with_one_clear_line(run, tmp_path):
    for path, message, exit_code in bad_inputs(tmp_path):
        target = tmp_path / "mask.nii.gz"
        code, out, err = run("segment", str(path), str(target))
        assert (code, err.strip()) == (exit_code, f"prostatekd segment: error: {message}"), path
        assert "Traceback" not in err
        assert not target.exists()


def test_four_d_input_needs_a_channel(run, tmp_path):
    rng = np.random.default_rng(1)
    channels = [sitk.GetImageFromArray(rng.normal(100, 10, (12, 32, 32)).astype(np.float32)) for _ in range(2)]
    four_d = sitk.JoinSeries(channels)
    path = tmp_path / "t2adc.nii.gz"
    sitk.WriteImage(four_d, str(path))
    code, _, err = run("segment", str(path), str(tmp_path / "m.nii.gz"))
    assert code == 3
    assert err.strip() == f"prostatekd segment: error: {path} has 2 channels (0-1); choose one with --channel N"
    code, _, err = run("segment", str(path), str(tmp_path / "m.nii.gz"), "--channel", "0")
    assert code == 0, err


def test_output_problems(run, tmp_path, make_volume):
    source = tmp_path / "case.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    missing = tmp_path / "nowhere" / "mask.nii.gz"
    code, _, err = run("segment", str(source), str(missing))
    assert (code, err.strip()) == (4, f"prostatekd segment: error: output folder does not exist: {missing.parent}")
    existing = tmp_path / "mask.nii.gz"
    existing.write_bytes(b"keep me")
    code, _, err = run("segment", str(source), str(existing))
    assert (code, err.strip()) == (4, f"prostatekd segment: error: {existing} exists (use --overwrite to replace it)")
    assert existing.read_bytes() == b"keep me"
    code, _, _ = run("segment", str(source), str(existing), "--overwrite")
    assert code == 0
    assert sitk.ReadImage(str(existing)).GetSize() == (48, 40, 12)


def test_bad_model_and_device(run, tmp_path, make_volume):
    source = tmp_path / "case.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    code, _, err = run("segment", str(source), str(tmp_path / "m.nii.gz"), "--model", str(tmp_path / "nomodel"),
                       model=False)
    assert (code, err.strip()) == (5, f"prostatekd segment: error: model bundle not found: {tmp_path / 'nomodel'}")
    code, _, err = run("segment", str(source), str(tmp_path / "m.nii.gz"), "--device", "gpu7", model=False)
    assert (code, err.strip()) == (
        6, "prostatekd segment: error: unknown device 'gpu7'; use auto, cpu, cuda, cuda:N or mps"
    )


def test_batch_skips_a_corrupt_case(run, tmp_path, make_volume):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(2):
        sitk.WriteImage(make_volume(seed=i), str(inputs / f"case{i}.nii.gz"))
    (inputs / "broken.nii.gz").write_bytes(b"\x00" * 100)
    sitk.WriteImage(sitk.Cast(make_volume() > 200, sitk.sitkUInt8), str(inputs / "case0_segmentation.nii.gz"))
    outdir = tmp_path / "masks"
    code, out, err = run("segment", str(inputs), str(outdir), "--batch")
    assert code == 1
    assert "3 cases: " in out and "1 failed" in out
    rows = list(csv.DictReader(open(outdir / "summary.csv")))
    assert [r["case"] for r in rows] == ["broken", "case0", "case1"]
    assert rows[0]["status"] == "error"
    assert rows[0]["warnings"] == (
        f"cannot read {inputs / 'broken.nii.gz'}: not a readable NIfTI, NRRD, MHA/MHD or DICOM image"
    )
    for row in rows[1:]:
        assert row["status"] in ("ok", "warning")
        assert float(row["volume_ml"]) >= 0 and float(row["seconds"]) > 0
        assert_same_geometry(sitk.ReadImage(row["output"]), sitk.ReadImage(str(inputs / f"{row['case']}.nii.gz")))


def test_batch_from_csv(run, tmp_path, make_volume):
    sitk.WriteImage(make_volume(), str(tmp_path / "a.nrrd"))
    (tmp_path / "list.csv").write_text("case,image\nfirst,a.nrrd\nsecond,missing.nii.gz\n")
    code, out, _ = run("segment", str(tmp_path / "list.csv"), str(tmp_path / "out"), "--format", "seg.nrrd")
    assert code == 1
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert [(r["case"], r["status"]) for r in rows][1] == ("second", "error")
    assert (tmp_path / "out" / "first_segmentation.seg.nrrd").exists()


def test_models_list_and_info(run, tiny_bundle, tmp_path, monkeypatch):
    shutil.copytree(tiny_bundle.path, tmp_path / "tiny")
    monkeypatch.setenv("PROSTATEKD_MODELS", str(tmp_path))
    code, out, _ = run("models", "--json")
    assert code == 0
    names = [m["name"] for m in json.loads(out)["models"]]
    assert "tiny-test-model" in names
    code, out, _ = run("models", "info", "tiny-test-model")
    info = json.loads(out)
    assert info["network"]["name"] == "unet" and info["license"] == "Apache-2.0"
    code, _, err = run("models", "info", "nope")
    assert code == 5 and err.startswith("prostatekd models: error: model 'nope' not found")


def test_phantom_command(run, tmp_path):
    code, out, _ = run("phantom", str(tmp_path / "ph"), "--cases-per-site", "1", "--sites", "RUNMC", "HK",
                       "--size", "48", "48", "12")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "ph" / "HK").iterdir()) == ["Case00.nii.gz", "Case00_segmentation.nii.gz"]
    assert "synthetic" in out
    code, _, err = run("phantom", str(tmp_path / "ph2"), "--sites", "MARS")
    assert code == 3 and "unknown site 'MARS'" in err


def test_progress_lines_and_forced_largest_component(run, tmp_path, make_volume):
    source = tmp_path / "case.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    code, out, err = run("segment", str(source), str(tmp_path / "m.nii.gz"), "--progress", "--largest-component")
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("progress ")]
    fractions = [float(line.split()[1]) for line in lines]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    with pytest.raises(SystemExit) as info:
        run("segment", str(source), str(tmp_path / "n.nii.gz"), "--largest-component", "--no-largest-component")
    assert info.value.code == 2
