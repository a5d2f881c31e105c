"""Saving an image and its corrected mask as a new multi-site training case (no Slicer needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import assert_same_geometry
from ProstateKDLib import training_case
from ProstateKDLib.errors import InputError, OutputError
from ProstateKDLib.training_case import INDEX_COLUMNS, next_case_number, save_training_case


@pytest.fixture
def pair(make_volume):
    image = sitk.Cast(make_volume(), sitk.sitkInt16)
    labels = (sitk.GetArrayFromImage(image) > 200).astype(np.uint8) * 2  # zone label 2 -> gland 1
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    return image, label


def read_index(root: Path) -> list[dict[str, str]]:
    with open(root / "dataset_index.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_round_trip_numbering_and_index(tmp_path, pair):
    image, label = pair
    first = save_training_case(image, label, tmp_path, "RUNMC")
    second = save_training_case(image, label, tmp_path, "RUNMC")
    other = save_training_case(image, label, tmp_path, "MYSITE")
    assert [first.case_id, second.case_id, other.case_id] == ["RUNMC/Case00", "RUNMC/Case01", "MYSITE/Case00"]
    saved_image, saved_label = sitk.ReadImage(str(first.image)), sitk.ReadImage(str(first.label))
    assert_same_geometry(saved_image, image)
    assert_same_geometry(saved_label, image)
    assert saved_image.GetPixelID() == sitk.sitkInt16 and saved_label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(saved_image), sitk.GetArrayViewFromImage(image))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(saved_label), sitk.GetArrayViewFromImage(label) > 0)

    header = (tmp_path / "dataset_index.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == ",".join(INDEX_COLUMNS)
    rows = read_index(tmp_path)
    assert [r["case_id"] for r in rows] == ["RUNMC/Case00", "RUNMC/Case01", "MYSITE/Case00"]
    assert rows[1] | {"added": ""} == {"case_id": "RUNMC/Case01", "site": "RUNMC", "image": "RUNMC/Case01.nii.gz",
                                       "label": "RUNMC/Case01_segmentation.nii.gz", "source": "slicer-correction",
                                       "added": ""}
    assert rows[1]["added"][:2] == "20" and "T" in rows[1]["added"]
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left behind

    from ProstateKDLib.datasets import index_multisite

    assert [r.case_id for r in index_multisite(tmp_path)] == ["MYSITE/Case00", "RUNMC/Case00", "RUNMC/Case01"]


def test_numbering_continues_after_a_gap_and_never_overwrites(tmp_path, pair):
    image, label = pair
    site = tmp_path / "BMC"
    site.mkdir()
    existing = {}
    for stem in ("Case00", "Case01", "Case03"):  # Case02 was deleted
        for suffix in (".nii.gz", "_segmentation.nii.gz"):
            path = site / f"{stem}{suffix}"
            path.write_bytes(f"old {stem}{suffix}".encode())
            existing[path] = path.read_bytes()
    (tmp_path / "dataset_index.csv").write_text("case_id,site,image,label,source,added\nBMC/Case00,BMC,a,b,c,d\n")
    assert next_case_number(site) == 4
    saved = save_training_case(image, label, tmp_path, "BMC")
    assert saved.case_id == "BMC/Case04"
    assert not (site / "Case02.nii.gz").exists()
    for path, content in existing.items():
        assert path.read_bytes() == content
    assert [r["case_id"] for r in read_index(tmp_path)] == ["BMC/Case00", "BMC/Case04"]


def test_a_case_appearing_concurrently_is_not_overwritten(tmp_path, pair, monkeypatch):
    """Another saver takes Case00 between the scan and the write: this one takes Case01."""
    image, label = pair
    site = tmp_path / "UCL"
    site.mkdir()
    (site / "Case00.nii.gz").write_bytes(b"written by someone else")
    monkeypatch.setattr(training_case, "next_case_number", lambda folder: 0)
    saved = save_training_case(image, label, tmp_path, "UCL")
    assert saved.case_id == "UCL/Case01"
    assert (site / "Case00.nii.gz").read_bytes() == b"written by someone else"
    assert not (site / "Case00_segmentation.nii.gz").exists()


def test_stray_label_is_not_overwritten(tmp_path, pair, monkeypatch):
    image, label = pair
    site = tmp_path / "HK"
    site.mkdir()
    (site / "Case00_segmentation.nii.gz").write_bytes(b"stray")
    monkeypatch.setattr(training_case, "next_case_number", lambda folder: 0)
    saved = save_training_case(image, label, tmp_path, "HK")
    assert saved.case_id == "HK/Case01"
    assert (site / "Case00_segmentation.nii.gz").read_bytes() == b"stray"
    assert not (site / "Case00.nii.gz").exists()


def test_without_hard_links_the_exclusive_copy_is_used(tmp_path, pair, monkeypatch):
    image, label = pair

    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(training_case.os, "link", no_links)
    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "Case00.nii.gz").write_bytes(b"keep")
    monkeypatch.setattr(training_case, "next_case_number", lambda folder: 0)
    saved = save_training_case(image, label, tmp_path, "X")
    assert saved.case_id == "X/Case01"
    assert (tmp_path / "X" / "Case00.nii.gz").read_bytes() == b"keep"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(saved.image))),
                                  sitk.GetArrayViewFromImage(image))


@pytest.mark.parametrize(
    "site, message",
    [("", "not usable as a folder name"), ("../up", "not usable"), (".hidden", "not usable"), ("a b", "not usable")],
)
def test_bad_site_names(tmp_path, pair, site, message):
    with pytest.raises(InputError, match=message):
        save_training_case(*pair, tmp_path, site)
    assert list(tmp_path.iterdir()) == []


def test_refused_inputs_write_nothing(tmp_path, pair):
    image, label = pair
    empty = sitk.Image(label.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(label)
    shifted = sitk.Image(label)
    shifted.SetOrigin([v + 1.0 for v in label.GetOrigin()])
    with pytest.raises(InputError, match="segmentation is empty"):
        save_training_case(image, empty, tmp_path, "A")
    with pytest.raises(InputError, match="not on the same voxel grid"):
        save_training_case(image, shifted, tmp_path, "A")
    with pytest.raises(OutputError, match="dataset folder does not exist"):
        save_training_case(image, label, tmp_path / "missing", "A")
    assert list(tmp_path.iterdir()) == []
