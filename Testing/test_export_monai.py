"""MONAI Bundle export: ``python -m monai.bundle run`` on the sample gives the mask of ``prostatekd segment``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from training.cli import main
from ProstateKDLib.errors import OutputError
from ProstateKDLib.bundle import resolve_model
from training.export_monai import export_monai_bundle

from conftest import assert_same_geometry

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "Samples" / "PhantomCase01.nii.gz"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_monai_bundle_run_reproduces_segment(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("fire")  # what 'python -m monai.bundle' needs for its command line
    bundle = tmp_path / "prostatekd-student-monai"
    assert main(["export", "prostatekd-student", str(bundle), "--format", "monai-bundle"]) == 0
    assert "exported MONAI bundle to" in capsys.readouterr().out
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()) == [
        "configs/inference.json", "configs/metadata.json", "docs/README.md", "models/model.pt"
    ]
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    shipped = resolve_model("prostatekd-student").meta
    assert (metadata["name"], metadata["version"], metadata["license"]) == ("prostatekd-student", shipped.version,
                                                                            "CC-BY-4.0")
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "Prostate"}
    images = tmp_path / "images"
    images.mkdir()
    shutil.copyfile(SAMPLE, images / "case.nii.gz")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--dataset_dir", str(images), "--output_dir", str(tmp_path / "masks")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    monai_mask = sitk.ReadImage(str(tmp_path / "masks" / "case_seg.nii.gz"))
    assert_same_geometry(monai_mask, sitk.ReadImage(str(SAMPLE)), tol=1e-4)
    theirs = sitk.GetArrayFromImage(monai_mask) > 0
    masks = {}
    for extra in ([], ["--no-largest-component"]):
        out = tmp_path / f"segment{len(extra)}.nii.gz"
        assert main(["segment", str(SAMPLE), str(out), "--device", "cpu", "-q", *extra]) == 0
        masks[len(extra)] = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
        assert masks[len(extra)].sum() > 1000
    # the bundle keeps the largest component as ProstateKD does (MONAI's KeepLargestConnectedComponentd): the
    # same voxels as our default; on this sample that step removes a second blob, so the check can fail
    assert np.array_equal(masks[0], theirs)
    assert masks[1].sum() > masks[0].sum()
    assert metadata["required_packages_version"]["scikit-image"] != "not installed"

def test_monai_export_refuses_to_replace_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "b"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match=r"exists \(use --overwrite to replace it\)$"):
        export_monai_bundle(None, target)
    assert (target / "keep.txt").read_text() == "x"
    export_monai_bundle(None, target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "models" / "model.pt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary folder left
