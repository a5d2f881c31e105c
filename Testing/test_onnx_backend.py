"""ONNX export in bundles and the onnxruntime backend: same masks as torch, without torch or MONAI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.bundle import load_bundle, resolve_model, save_bundle
from ProstateKDLib.errors import BundleError, DeviceError
from ProstateKDLib.image_io import read_volume
from ProstateKDLib.inference import Segmenter
from ProstateKDLib.onnx_export import ONNX_FILE, add_onnx_export, main as export_main

from conftest import MODEL_JSON, ROOT, make_bundle


def dice(a, b) -> float:
    a, b = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    """The tiny test network, saved with its ONNX export (as ``prostatekd export`` does)."""
    import torch

    from ProstateKDLib.networks import build_network

    torch.manual_seed(3)
    network = build_network("unet", {"in_channels": 1, "out_channels": 2, **MODEL_JSON["network"]["kwargs"]})
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    return save_bundle(out, MODEL_JSON, network.state_dict(), finish=add_onnx_export)


@pytest.fixture(scope="module")
def small_real_volume(shared_data):
    """A real T2 crop: PROMISE12 HK Case17, central 80x80x14 voxels (1.25x1.25x3.6 mm, estimated)."""
    image = read_volume(shared_data / "promise12" / "HK" / "Case17.nii.gz")
    return image[40:120, 40:120, 3:17]


def test_export_is_named_in_model_json(onnx_bundle):
    meta = onnx_bundle.meta
    assert meta.onnx_file == ONNX_FILE and (onnx_bundle.path / ONNX_FILE).stat().st_size > 10_000
    data = json.loads((onnx_bundle.path / "model.json").read_text())
    assert data["onnx"]["opset"] == 17 and len(data["onnx"]["weights_sha256"]) == 64
    assert not list(onnx_bundle.path.glob(".*tmp*"))  # no leftovers


def test_auto_picks_onnx_and_masks_equal_torch(onnx_bundle, make_volume):
    image = make_volume(size=(60, 52, 14))
    onnx = Segmenter(onnx_bundle, device="cpu", num_threads=1, largest_component=False)
    torch_ = Segmenter(onnx_bundle, device="cpu", num_threads=1, largest_component=False, backend="torch")
    assert onnx.backend == "onnx" and torch_.backend == "torch"
    a, b = onnx.segment(image), torch_.segment(image)
    assert a.backend == "onnx" and sitk.GetArrayViewFromImage(a.mask).any()
    assert dice(a.mask, b.mask) >= 0.999


@pytest.mark.parametrize("window", ["sliding", "whole"])
def test_bundled_student_onnx_equals_torch_on_real_mri(small_real_volume, window):
    student = resolve_model(None)
    assert student.meta.onnx_file == ONNX_FILE  # the bundled student ships its export
    onnx = Segmenter(student, device="cpu", num_threads=1, window=window)
    torch_ = Segmenter(student, device="cpu", num_threads=1, window=window, backend="torch")
    a, b = onnx.segment(small_real_volume), torch_.segment(small_real_volume)
    assert a.mode.startswith(window) and b.mode.startswith(window)
    assert sitk.GetArrayViewFromImage(b.mask).sum() > 100
    assert dice(a.mask, b.mask) >= 0.999


def test_zipped_bundle_runs_on_onnx(onnx_bundle, make_volume, tmp_path):
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in onnx_bundle.path.iterdir():
            zf.write(f, f"tiny/{f.name}")
    segmenter = Segmenter(str(archive), device="cpu", num_threads=1)
    assert segmenter.backend == "onnx"
    assert segmenter.segment(make_volume()).mask.GetSize() == make_volume().GetSize()
    with pytest.raises(BundleError, match="bundle folder, not a zip"):
        add_onnx_export(archive)


def test_stale_export_is_refused(onnx_bundle, tmp_path):
    stale = make_bundle(tmp_path / "stale", seed=11)  # other weights
    shutil.copy(onnx_bundle.path / ONNX_FILE, stale.path / ONNX_FILE)
    data = json.loads((stale.path / "model.json").read_text())
    data["onnx"] = json.loads((onnx_bundle.path / "model.json").read_text())["onnx"]
    (stale.path / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="exported from other weights than model.safetensors; re-export"):
        Segmenter(str(stale.path), device="cpu", backend="onnx")
    assert export_main([str(stale.path)]) == 0  # refreshing the export fixes it
    assert Segmenter(str(stale.path), device="cpu", backend="onnx").backend == "onnx"


def test_onnx_backend_errors(tiny_bundle, onnx_bundle):
    with pytest.raises(BundleError, match="names no ONNX export; add one with 'python -m ProstateKDLib.onnx_export"):
        Segmenter(tiny_bundle, device="cpu", backend="onnx")
    assert Segmenter(tiny_bundle, device="cpu").backend == "torch"  # auto falls back without an export
    with pytest.raises(DeviceError, match="mps needs the torch backend"):
        Segmenter(onnx_bundle, device="mps", backend="onnx")
    with pytest.raises(DeviceError, match="unknown device"):
        Segmenter(onnx_bundle, device="tpu", backend="onnx")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DeviceError, match="has no CUDA provider"):
            Segmenter(onnx_bundle, device="cuda:0", backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        Segmenter(onnx_bundle, backend="tensorrt")


def test_cli_onnx_imports_neither_torch_nor_monai(tmp_path):
    """The default ``prostatekd segment`` of the bundled student, in a fresh process."""
    out = tmp_path / "mask.nii.gz"
    sample = ROOT / "Resources" / "Samples" / "PhantomCase01.nii.gz"
    code = (
        "import json, sys\nfrom ProstateKDLib.cli import main\n"
        f"rc = main(['segment', {str(sample)!r}, {str(out)!r}, '--threads', '1', '--json'])\n"
        "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules, 'monai': 'monai' in sys.modules,"
        " 'scipy': 'scipy' in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = done.stdout.strip().splitlines()
    summary, state = json.loads(lines[-2]), json.loads(lines[-1])
    assert state == {"rc": 0, "torch": False, "monai": False, "scipy": False}, done.stderr
    assert summary["backend"] == "onnx" and summary["inference"].startswith("sliding")
    assert out.is_file() and summary["volume_ml"] > 5


def test_cli_options_tta_overlap_window(tmp_path, make_volume):
    image = tmp_path / "in.nii.gz"
    sitk.WriteImage(make_volume(size=(60, 52, 14)), str(image))
    from ProstateKDLib.cli import main

    for extra, expected in ((["--tta"], "sliding (overlap 0.25), tta"), (["--overlap", "0.5"], "sliding (overlap 0.5)"),
                            (["--window", "whole"], "whole"), (["--backend", "torch"], "sliding (overlap 0.25)")):
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}.nii.gz"
        done = subprocess.run([sys.executable, "-m", "ProstateKDLib.cli", "segment", str(image), str(out),
                               "--threads", "1", "--json", *extra], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["inference"] == expected
    assert main(["segment", str(image), str(tmp_path / "x.nii.gz"), "--overlap", "1.5"]) == 3
    assert not (tmp_path / "x.nii.gz").exists()
