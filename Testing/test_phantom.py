"""Tests of the synthetic multi-site prostate phantoms (ProstateKDLib.phantom)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.errors import OutputError
from ProstateKDLib.phantom import (
    SITES,
    SiteProfile,
    gland_volume_ml,
    make_phantom,
    make_phantom_case,
    write_phantom_dataset,
)
from ProstateKDLib.phantom_anatomy import Tissue

SMALL = (64, 64, 16)


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def geometry(image: sitk.Image) -> tuple:
    return (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def physical_centroid(label: sitk.Image) -> np.ndarray:
    index = np.argwhere(array(label) > 0).mean(axis=0)[::-1]  # (x, y, z) continuous index
    return np.array(label.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def physical_centre(image: sitk.Image) -> np.ndarray:
    middle = (np.array(image.GetSize()) - 1) / 2
    return np.array(image.TransformContinuousIndexToPhysicalPoint(middle.tolist()))


def test_deterministic_per_seed():
    a_image, a_label = make_phantom(7, "BMC", SMALL)
    b_image, b_label = make_phantom(7, "BMC", SMALL)
    assert geometry(a_image) == geometry(b_image)
    np.testing.assert_array_equal(array(a_image), array(b_image))
    np.testing.assert_array_equal(array(a_label), array(b_label))


def test_different_seeds_differ():
    a_image, a_label = make_phantom(1, size=SMALL)
    b_image, b_label = make_phantom(2, size=SMALL)
    assert not np.array_equal(array(a_label), array(b_label))
    assert not np.array_equal(array(a_image), array(b_image))
    assert a_image.GetDirection() != b_image.GetDirection()
    assert gland_volume_ml(a_label) != gland_volume_ml(b_label)


@pytest.mark.parametrize("site", list(SITES))
def test_image_and_label_share_geometry_and_types(site):
    image, label = make_phantom(3, site, SMALL)
    assert geometry(image) == geometry(label)
    assert image.GetSize() == SMALL
    assert image.GetPixelID() == sitk.sitkInt16
    assert label.GetPixelID() == sitk.sitkUInt8
    assert array(image).min() >= 0


@pytest.mark.parametrize("site", list(SITES))
def test_default_spacing_anisotropic_and_direction_oblique(site):
    profile = SITES[site]
    image, label = make_phantom(11, site)
    sx, sy, sz = image.GetSpacing()
    assert image.GetSize() == profile.matrix
    assert sx == sy and 0.5 <= sx <= 0.8
    assert 3.0 <= sz <= 4.0
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction @ direction.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(direction) == pytest.approx(1.0)
    angle = math.degrees(math.acos(np.clip((np.trace(direction) - 1) / 2, -1, 1)))
    assert 3.0 - 1e-6 <= angle <= 20.0 + 1e-6
    assert not np.allclose(direction, np.eye(3), atol=0.01)
    assert geometry(image) == geometry(label)


def test_size_keeps_field_of_view():
    profile = SITES["RUNMC"]
    image, _ = make_phantom(0, "RUNMC", SMALL)
    fov = np.array(image.GetSize()) * np.array(image.GetSpacing())
    np.testing.assert_allclose(fov, profile.field_of_view)
    assert profile.matrix == (320, 320, 24)
    np.testing.assert_allclose(profile.spacing, (0.6, 0.6, 3.6))


@pytest.mark.parametrize("site,seed", [(s, seed) for s in SITES for seed in (0, 5)])
def test_gland_present_sane_volume_inside_and_centred(site, seed):
    image, label = make_phantom(seed, site, SMALL)
    gland = array(label) > 0
    assert 10.0 < gland_volume_ml(label) < 100.0
    for axis in range(3):
        first = np.take(gland, 0, axis=axis)
        last = np.take(gland, gland.shape[axis] - 1, axis=axis)
        assert not first.any() and not last.any(), f"gland touches the border (axis {axis})"
    distance = np.linalg.norm(physical_centroid(label) - physical_centre(image))
    assert distance < 20.0


def test_gland_volume_mostly_20_to_60_ml():
    volumes = [gland_volume_ml(make_phantom(seed, "HCRUDB", SMALL)[1]) for seed in range(40)]
    inside = np.mean([(20 <= v <= 60) for v in volumes])
    assert inside >= 0.8
    assert np.std(volumes) > 3.0  # variety


def test_same_anatomy_in_physical_space_at_two_resolutions():
    """The same seed and site at full and reduced size put the gland in the same physical place."""
    full_image, full_label = make_phantom(4, "HCRUDB")
    small_image, small_label = make_phantom(4, "HCRUDB", SMALL)
    assert full_image.GetDirection() == small_image.GetDirection()
    np.testing.assert_allclose(physical_centre(full_image), physical_centre(small_image), atol=1e-6)
    np.testing.assert_allclose(physical_centroid(full_label), physical_centroid(small_label), atol=3.0)
    assert gland_volume_ml(small_label) == pytest.approx(gland_volume_ml(full_label), rel=0.2)
    # The physical point of the full-size gland centroid is inside the small label's gland.
    point = physical_centroid(full_label)
    index = small_label.TransformPhysicalPointToIndex(point.tolist())
    assert small_label[index] == 1


@pytest.mark.parametrize("site", list(SITES))
def test_t2_contrast(site):
    case = make_phantom_case(2, site, SMALL, zones=True)
    image, label, tissue = array(case.image).astype(float), array(case.label), case.tissue
    central, peripheral = image[label == 1].mean(), image[label == 2].mean()
    assert peripheral > 1.2 * central
    fat, muscle = image[tissue == Tissue.FAT].mean(), image[tissue == Tissue.MUSCLE].mean()
    assert fat > 1.5 * muscle
    assert fat > central
    assert image[tissue == Tissue.URINE].mean() > central


def test_zones_option():
    image_z, label_z = make_phantom(6, "UCL", SMALL, zones=True)
    image, label = make_phantom(6, "UCL", SMALL)
    assert set(np.unique(array(label_z))) == {0, 1, 2}
    assert set(np.unique(array(label))) == {0, 1}
    np.testing.assert_array_equal(array(label_z) > 0, array(label) > 0)
    np.testing.assert_array_equal(array(image_z), array(image))
    assert gland_volume_ml(label_z) == gland_volume_ml(label)


def test_sites_differ_in_spacing_and_intensity():
    spacings = {name: p.spacing for name, p in SITES.items()}
    assert len(set(spacings.values())) == len(SITES)
    assert set(SITES) == {"RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK"}
    stats = {}
    for name in SITES:
        image = array(make_phantom(0, name, SMALL)[0]).astype(float)
        stats[name] = np.array([image.mean(), image.std(), np.percentile(image, 99)])
    for a, b in itertools.combinations(SITES, 2):
        relative = np.abs(stats[a] - stats[b]) / np.maximum(stats[a], stats[b])
        assert relative.max() > 0.1, (a, b, stats[a], stats[b])


def test_custom_site_profile_and_noise_free():
    profile = dataclasses.replace(SITES["RUNMC"], name="QUIET", noise=0.0, bias=0.0)
    case = make_phantom_case(1, profile, SMALL, zones=True)
    image, tissue = array(case.image), case.tissue
    assert np.all(image[tissue == Tissue.AIR] == 0)
    assert case.site is profile


def test_custom_site_with_too_small_field_of_view():
    tiny = dataclasses.replace(SITES["RUNMC"], name="TINY", matrix=(64, 64, 8))
    with pytest.raises(ValueError, match="field of view too small"):
        make_phantom(0, tiny)


def test_gland_volume_ml_counts_voxels():
    label = sitk.Image(10, 10, 10, sitk.sitkUInt8)
    label.SetSpacing((0.5, 0.5, 4.0))
    label[2, 3, 4] = 1
    label[2, 3, 5] = 2
    assert gland_volume_ml(label) == pytest.approx(2 * 0.5 * 0.5 * 4.0 / 1000)
    with pytest.raises(TypeError):
        gland_volume_ml(np.zeros((3, 3, 3)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"site": "NOPE"}, "unknown site 'NOPE' \\(known sites: RUNMC, BMC, HCRUDB, UCL, BIDMC, HK\\)"),
        ({"size": (64, 0, 16)}, "size must be three integers"),
        ({"size": (64, -3, 16)}, "size must be three integers"),
        ({"size": (64, 64)}, "size must be three integers"),
        ({"size": (64.5, 64, 16)}, "size must be three integers"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
    ],
)
def test_make_phantom_bad_arguments(kwargs, match):
    arguments = {"seed": 0, "site": "RUNMC", "size": SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_phantom(**arguments)


def test_site_profile_validation():
    with pytest.raises(ValueError, match="noise must be >= 0"):
        dataclasses.replace(SITES["HK"], noise=-0.1)
    with pytest.raises(ValueError, match="spacing_xy must be positive"):
        dataclasses.replace(SITES["HK"], spacing_xy=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SITES["HK"].noise = 0.0  # type: ignore[misc]
    assert isinstance(SITES["HK"], SiteProfile)


def test_write_dataset_layout_and_readback(tmp_path):
    out = tmp_path / "phantoms"
    records = write_phantom_dataset(out, cases_per_site=2, seed=3, sites=["RUNMC", "HK"], size=(32, 32, 8))
    assert [(r["site"], r["case_id"]) for r in records] == [
        ("RUNMC", "Case00"), ("RUNMC", "Case01"), ("HK", "Case00"), ("HK", "Case01")
    ]
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert names == [
        "HK", "HK/Case00.nii.gz", "HK/Case00_segmentation.nii.gz", "HK/Case01.nii.gz",
        "HK/Case01_segmentation.nii.gz", "RUNMC", "RUNMC/Case00.nii.gz",
        "RUNMC/Case00_segmentation.nii.gz", "RUNMC/Case01.nii.gz",
        "RUNMC/Case01_segmentation.nii.gz", "phantom.json",
    ]  # no temporary files left behind
    for record in records:
        image = sitk.ReadImage(record["image"])
        label = sitk.ReadImage(record["label"])
        assert_same_geometry(image, label)
        expected_image, expected_label = make_phantom(record["seed"], record["site"], (32, 32, 8))
        assert_same_geometry(image, expected_image)
        np.testing.assert_array_equal(array(image), array(expected_image))
        np.testing.assert_array_equal(array(label), array(expected_label))
        assert record["gland_volume_ml"] == pytest.approx(gland_volume_ml(label), abs=1e-3)
    assert records[0]["seed"] != records[1]["seed"]
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["seed"] == 3
    assert "synthetic" in meta["note"].lower() and "accuracy" in meta["note"].lower()
    assert {name: s["cases"] for name, s in meta["sites"].items()} == {"RUNMC": 2, "HK": 2}
    assert meta["cases"][0]["image"] == "RUNMC/Case00.nii.gz"


def test_write_dataset_refuses_overwrite(tmp_path):
    write_phantom_dataset(tmp_path, cases_per_site=1, sites=["BMC"], size=(16, 16, 8))
    target = tmp_path / "BMC" / "Case00.nii.gz"
    before = target.read_bytes()
    with pytest.raises(OutputError) as info:
        write_phantom_dataset(tmp_path, cases_per_site=1, sites=["BMC"], size=(16, 16, 8), seed=1)
    assert str(info.value) == f"{target} exists (use --overwrite to replace it)"
    assert target.read_bytes() == before
    records = write_phantom_dataset(
        tmp_path, cases_per_site=1, sites=["BMC"], size=(16, 16, 8), seed=1, overwrite=True
    )
    assert target.read_bytes() != before
    assert records[0]["image"] == str(target)
    assert sorted(p.name for p in (tmp_path / "BMC").iterdir()) == ["Case00.nii.gz", "Case00_segmentation.nii.gz"]


def test_write_dataset_counts_per_site_and_defaults(tmp_path):
    records = write_phantom_dataset(tmp_path / "a", cases_per_site={"BIDMC": 2, "UCL": 0}, size=(16, 16, 8), zones=True)
    assert [(r["site"], r["case_id"]) for r in records] == [("BIDMC", "Case00"), ("BIDMC", "Case01")]
    assert set(np.unique(array(sitk.ReadImage(records[0]["label"])))) <= {0, 1, 2}
    records = write_phantom_dataset(tmp_path / "b", cases_per_site=1, size=(16, 16, 8))
    assert [r["site"] for r in records] == list(SITES)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"cases_per_site": -1}, "cases_per_site must be a non-negative integer"),
        ({"cases_per_site": {"RUNMC": -2}}, "cases_per_site must be a non-negative integer"),
        ({"sites": ["RUNMC", "MARS"]}, "unknown site 'MARS' \\(known sites: RUNMC, BMC"),
        ({"sites": "RUNMC"}, "sites must be a list of site names"),
        ({"cases_per_site": {"RUNMC": 1}, "sites": ["HK"]}, "no count for site 'HK'"),
        ({"size": (16, 0, 8)}, "size must be three integers"),
        ({"seed": -5}, "seed must be a non-negative integer"),
    ],
)
def test_write_dataset_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_phantom_dataset(tmp_path / "out", **{"cases_per_site": 1, "size": (16, 16, 8), **kwargs})
    assert not (tmp_path / "out").exists()
