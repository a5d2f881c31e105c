"""The Python API: lazy package names, numpy input with its geometry, probabilities, README example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.array_image import array_from_image, image_from_array
from ProstateKDLib.inference import Segmenter

from conftest import assert_same_geometry

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "Samples" / "PhantomCase01.nii.gz"


def test_package_names_are_lazy_and_cheap() -> None:
    code = (
        "import sys, ProstateKDLib\n"
        "heavy = [m for m in ('numpy', 'SimpleITK', 'torch', 'monai') if m in sys.modules]\n"
        "from ProstateKDLib import Segmenter, read_volume, write_mask\n"
        "after = [m for m in ('torch', 'monai') if m in sys.modules]\n"
        "from ProstateKDLib.inference import Segmenter as S\n"
        "assert Segmenter is S and callable(read_volume) and callable(write_mask)\n"
        "print(heavy, after, 'Segmenter' in dir(ProstateKDLib))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[] [] True"
    with pytest.raises(ImportError):
        exec("from ProstateKDLib import NoSuchThing", {})


def test_python_m_runs_the_cli(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "ProstateKDLib", "--version"], capture_output=True, text=True,
                         cwd=ROOT)
    assert (out.returncode, out.stdout.strip()) == (0, "prostatekd 0.1.0")
    out = subprocess.run([sys.executable, "-m", "ProstateKDLib", "series", str(tmp_path)], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 3
    assert out.stderr.strip() == f"prostatekd series: error: no DICOM series found in folder {tmp_path}"


def test_affine_array_gets_the_geometry_simpleitk_reads(tmp_path: Path, make_volume) -> None:
    """nibabel's [i, j, k] array + RAS affine of a NIfTI -> the same image SimpleITK reads from the file."""
    nib = pytest.importorskip("nibabel")
    volume = make_volume()  # oblique, flipped, permuted, anisotropic
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(volume, str(path))
    nii = nib.load(path)
    image, layout = image_from_array(nii.get_fdata(), affine=nii.affine)
    assert layout == "ijk"
    assert_same_geometry(image, sitk.ReadImage(str(path)), tol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(volume))
    np.testing.assert_array_equal(array_from_image(image, "ijk"), nii.get_fdata().astype(np.float32))


def test_array_geometry_errors() -> None:
    data = np.ones((4, 8, 8))
    with pytest.raises(ValueError, match="^a numpy array needs its geometry: affine=4x4"):
        image_from_array(data)
    with pytest.raises(ValueError, match="^give either affine or spacing/origin/direction, not both$"):
        image_from_array(data, spacing=(1, 1, 1), affine=np.eye(4))
    with pytest.raises(ValueError, match=r"^spacing must be 3 positive numbers, got \(1, 0, 1\)$"):
        image_from_array(data, spacing=(1, 0, 1))
    with pytest.raises(ValueError, match=r"^affine must be a finite 4x4 matrix, got shape \(3, 3\)$"):
        image_from_array(data, affine=np.eye(3))
    with pytest.raises(ValueError, match=r"^array must be a 3D numeric array, got shape \(8, 8\)"):
        image_from_array(np.ones((8, 8)), spacing=(1, 1, 1))


def test_segment_array_same_mask_as_image_and_probabilities(tiny_bundle, make_volume) -> None:
    segmenter = Segmenter(tiny_bundle, device="cpu", largest_component=False)
    image = make_volume(seed=3)
    expected = segmenter.segment(image)
    array = sitk.GetArrayFromImage(image)
    result = segmenter.segment(array, spacing=image.GetSpacing(), origin=image.GetOrigin(),
                               direction=image.GetDirection(), return_probabilities=True)
    assert result.layout == "zyx"
    assert_same_geometry(result.mask, image, tol=1e-9)
    np.testing.assert_array_equal(result.mask_array(), sitk.GetArrayFromImage(expected.mask))
    probability = result.probability_array()
    assert probability.shape == array.shape and probability.dtype == np.float32
    assert 0.0 <= probability.min() and probability.max() <= 1.0
    np.testing.assert_array_equal(probability > 0.5, result.mask_array() == 1)  # the mask is p > 0.5
    assert 0 < (probability > 0.5).sum() < probability.size
    with pytest.raises(ValueError, match="no probabilities"):
        expected.probability_array()
    with pytest.raises(ValueError, match="are for numpy arrays"):
        segmenter.segment(image, spacing=(1, 1, 1))
    from ProstateKDLib.errors import InputError

    with pytest.raises(InputError, match=r"^array is constant \(every voxel is 0\); nothing to segment$"):
        segmenter.segment(np.zeros((12, 40, 48)), spacing=(0.5, 0.6, 3.0))


def readme_python_example() -> str:
    """The first ``python`` block of README.md's *Python API* section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no python block in the Python API section"
    return match.group(1)


def test_readme_notebook_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("nibabel")
    shutil.copyfile(SAMPLE, tmp_path / "t2.nii.gz")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md (Python API)", "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("gland ") and out[-1] == "True"
    written = sitk.ReadImage(str(tmp_path / "t2_prostate.nii.gz"))
    reference = sitk.GetArrayFromImage(namespace["result"].mask)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), reference)
    assert reference.sum() > 1000  # the bundled student finds the phantom's gland
    mask = namespace["mask"]
    assert mask.shape == namespace["nii"].shape and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, reference.transpose(2, 1, 0))  # numpy [i, j, k] = the same mask
    assert os.path.exists("t2_prostate.nii.gz")
