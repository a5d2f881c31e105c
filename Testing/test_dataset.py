"""Training data: indexing the multi-site layout, CSV lists, splits, loading and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.datasets import (
    CaseRecord,
    index_cases,
    index_multisite,
    limit_cases,
    load_case,
    read_case_csv,
    split_cases,
)
from ProstateKDLib.errors import DataError

NORM = {"name": "zscore", "clip_percentiles": [0.5, 99.5]}
GRID = ("RAS", (4.0, 4.0, 6.0))


def ellipsoid_case(size=(24, 20, 8), spacing=(2.0, 2.0, 5.0), seed=0, values=(1,)):
    """(image float32, label uint8): an ellipsoid in noise; the label holds ``values`` in slabs."""
    rng = np.random.default_rng(seed)
    x, y, z = size
    kk, jj, ii = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    inside = ((ii - x / 2) / (x / 4)) ** 2 + ((jj - y / 2) / (y / 4)) ** 2 + ((kk - z / 2) / (z / 3)) ** 2 < 1
    image = sitk.GetImageFromArray((100 + 200 * inside + rng.normal(0, 10, inside.shape)).astype(np.float32))
    label_array = np.zeros(inside.shape, np.uint8)
    for index, value in enumerate(values):  # value k on the k-th slab of x
        slab = inside & (ii % len(values) == index)
        label_array[slab] = value
    label = sitk.GetImageFromArray(label_array)
    for im in (image, label):
        im.SetSpacing(spacing)
        im.SetOrigin((-20.0, 10.0, 3.0))
    return image, label


def write_case(folder, stem="Case00", image=None, label=None, label_name=None):
    folder.mkdir(parents=True, exist_ok=True)
    if image is None:
        image, label = ellipsoid_case()
    sitk.WriteImage(image, str(folder / f"{stem}.nii.gz"))
    if label is not None:
        sitk.WriteImage(label, str(folder / (label_name or f"{stem}_segmentation.nii.gz")))
    return folder / f"{stem}.nii.gz"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Two sites x 3 small phantoms (labels merged), and the same with zone labels 1/2."""
    from ProstateKDLib.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root / "gland", cases_per_site=3, sites=["RUNMC", "BMC"], size=(48, 48, 12))
    write_phantom_dataset(root / "zones", cases_per_site=1, sites=["RUNMC"], size=(48, 48, 12), zones=True)
    return root


def test_index_multisite_lists_cases_per_site(phantoms):
    cases = index_multisite(phantoms / "gland")
    assert [c.case_id for c in cases] == [
        "BMC/Case00", "BMC/Case01", "BMC/Case02", "RUNMC/Case00", "RUNMC/Case01", "RUNMC/Case02"
    ]
    first = cases[0]
    assert first.site == "BMC"
    assert first.image == phantoms / "gland" / "BMC" / "Case00.nii.gz"
    assert first.label == phantoms / "gland" / "BMC" / "Case00_segmentation.nii.gz"
    with pytest.raises(Exception):
        first.site = "other"  # frozen
    assert index_cases(phantoms / "gland") == cases


def test_index_accepts_capitalised_segmentation_suffix(tmp_path):
    write_case(tmp_path / "HK", "Case07", *ellipsoid_case(), label_name="Case07_Segmentation.nii.gz")
    (case,) = index_multisite(tmp_path)
    assert case.case_id == "HK/Case07" and case.label.name == "Case07_Segmentation.nii.gz"


def test_index_errors(tmp_path):
    with pytest.raises(DataError) as error:
        index_multisite(tmp_path / "nowhere")
    assert str(error.value) == f"data folder not found: {tmp_path / 'nowhere'}"
    with pytest.raises(DataError) as error:
        index_multisite(tmp_path)
    assert str(error.value) == (
        f"no cases found in {tmp_path} (expected <SITE>/CaseNN.nii.gz + CaseNN_segmentation.nii.gz)"
    )
    write_case(tmp_path / "UCL", "Case03", ellipsoid_case()[0], None)
    with pytest.raises(DataError) as error:
        index_multisite(tmp_path)
    assert str(error.value) == "case UCL/Case03: label file missing (expected UCL/Case03_segmentation.nii.gz)"
    (tmp_path / "UCL" / "Case03.nii.gz").unlink()
    sitk.WriteImage(ellipsoid_case()[1], str(tmp_path / "UCL" / "Case04_segmentation.nii.gz"))
    with pytest.raises(DataError) as error:
        index_multisite(tmp_path)
    assert str(error.value) == "label UCL/Case04_segmentation.nii.gz has no image (expected UCL/Case04.nii.gz)"


def test_load_case_shapes_and_normalisation(phantoms):
    case = index_multisite(phantoms / "gland")[0]
    image, label = load_case(case, *GRID, NORM)
    assert str(image.dtype) == "torch.float32" and str(label.dtype) == "torch.uint8"
    assert image.ndim == 4 and image.shape == label.shape and image.shape[0] == 1
    assert set(np.unique(label.numpy())) == {0, 1}
    assert abs(float(image.mean())) < 0.05 and abs(float(image.std()) - 1) < 0.05
    assert type(image).__name__ == "Tensor"  # plain tensors, not MetaTensors


def test_load_case_preprocesses_like_inference(phantoms):
    from ProstateKDLib.image_io import read_volume
    from ProstateKDLib.preprocessing import preprocess_image

    case = index_multisite(phantoms / "gland")[3]
    image, _ = load_case(case, *GRID, NORM)
    expected, _ = preprocess_image(read_volume(case.image), *GRID, NORM)
    assert np.array_equal(image.numpy(), expected.as_tensor().numpy())


def test_zone_labels_are_merged(phantoms):
    zones = index_multisite(phantoms / "zones")[0]
    values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(zones.label))))
    assert list(values) == [0, 1, 2]
    gland = index_multisite(phantoms / "gland")[3]  # RUNMC/Case00: the same phantom without zones
    assert gland.case_id == "RUNMC/Case00"
    _, merged = load_case(zones, *GRID, NORM)
    _, plain = load_case(gland, *GRID, NORM)
    assert np.array_equal(merged.numpy(), plain.numpy())


def test_load_case_label_value_error(tmp_path):
    write_case(tmp_path / "RUNMC", "Case00", *ellipsoid_case(values=(1, 5)))
    (case,) = index_multisite(tmp_path)
    with pytest.raises(DataError) as error:
        load_case(case, *GRID, NORM)
    assert str(error.value) == "case RUNMC/Case00: label values must be 0, 1 or 2, found 0, 1, 5"


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda lb: lb.SetSpacing((2.0, 2.0, 4.0)), "spacing (2, 2, 5) vs (2, 2, 4)"),
        (lambda lb: lb.SetOrigin((-20.0, 10.0, 4.5)), "origin (-20, 10, 3) vs (-20, 10, 4.5)"),
        (lambda lb: lb.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, -1)),
         "direction (1, 0, 0, 0, 1, 0, 0, 0, 1) vs (1, 0, 0, 0, -1, 0, 0, 0, -1)"),
    ],
)
def test_load_case_geometry_mismatch(tmp_path, change, problem):
    image, label = ellipsoid_case()
    change(label)
    write_case(tmp_path / "BMC", "Case01", image, label)
    (case,) = index_multisite(tmp_path)
    with pytest.raises(DataError) as error:
        load_case(case, *GRID, NORM)
    assert str(error.value) == f"case BMC/Case01: image and label geometry differ ({problem})"


def test_load_case_size_mismatch(tmp_path):
    image, _ = ellipsoid_case()
    _, label = ellipsoid_case(size=(24, 20, 9))
    write_case(tmp_path / "BMC", "Case01", image, label)
    (case,) = index_multisite(tmp_path)
    with pytest.raises(DataError) as error:
        load_case(case, *GRID, NORM)
    assert str(error.value) == "case BMC/Case01: image and label geometry differ (size 24x20x8 vs 24x20x9)"


def test_load_case_unreadable_image_names_case(tmp_path):
    write_case(tmp_path / "HK", "Case02", *ellipsoid_case())
    (tmp_path / "HK" / "Case02.nii.gz").write_bytes(b"not an image")
    (case,) = index_multisite(tmp_path)
    with pytest.raises(DataError, match=r"^case HK/Case02: "):
        load_case(case, *GRID, NORM)


def records(counts: dict[str, int]) -> list[CaseRecord]:
    return [
        CaseRecord(f"{site}/Case{i:02d}", site, f"{site}/Case{i:02d}.nii.gz", f"{site}/Case{i:02d}_segmentation.nii.gz")
        for site, n in counts.items()
        for i in range(n)
    ]


def test_split_is_stratified_and_reproducible():
    cases = records({"A": 6, "B": 6, "C": 5, "D": 2})
    train, val = split_cases(cases, 0.2, seed=3)
    assert split_cases(cases, 0.2, seed=3) == (train, val)
    assert sorted(train + val, key=lambda c: c.case_id) == sorted(cases, key=lambda c: c.case_id)
    assert not set(train) & set(val)
    per_site = {s: sum(c.site == s for c in val) for s in "ABCD"}
    assert per_site == {"A": 1, "B": 1, "C": 1, "D": 0}  # round(2 * 0.2) = 0
    assert all(any(c.site == s for c in train) for s in "ABCD")
    others = {tuple(c.case_id for c in split_cases(cases, 0.2, seed=s)[1]) for s in range(6)}
    assert len(others) > 1  # the seed matters
    assert train == sorted(train, key=lambda c: c.case_id)


def test_split_edge_cases():
    cases = records({"A": 2, "B": 1})
    assert split_cases(cases, 0.0, seed=0) == (sorted(cases, key=lambda c: c.case_id), [])
    train, val = split_cases(cases, 0.1, seed=0)  # rounds to none: the largest site gives one
    assert [c.site for c in val] == ["A"] and len(train) == 2
    train, val = split_cases(records({"A": 3}), 0.9, seed=0)  # a site keeps one training case
    assert len(train) == 1 and len(val) == 2
    with pytest.raises(ValueError):
        split_cases(cases, 1.0, seed=0)


def test_limit_cases_round_robin():
    cases = records({"A": 3, "B": 3, "C": 1})
    assert [c.case_id for c in limit_cases(cases, 4)] == ["A/Case00", "A/Case01", "B/Case00", "C/Case00"]
    assert limit_cases(cases, None) == cases


def test_read_case_csv(tmp_path):
    write_case(tmp_path / "imgs", "p1", *ellipsoid_case())
    write_case(tmp_path / "imgs", "p2", *ellipsoid_case(seed=1))
    listing = tmp_path / "cases.csv"
    listing.write_text(
        "image,label,site\n"
        "imgs/p1.nii.gz,imgs/p1_segmentation.nii.gz,X\n"
        f"{tmp_path / 'imgs/p2.nii.gz'},imgs/p2_segmentation.nii.gz,\n"
    )
    cases = read_case_csv(listing)
    assert [(c.case_id, c.site) for c in cases] == [("X/p1", "X"), ("default/p2", "default")]
    assert cases[0].image == tmp_path / "imgs" / "p1.nii.gz"
    assert index_cases(listing) == cases
    image, label = load_case(cases[0], *GRID, NORM)
    assert image.shape == label.shape

    bad = tmp_path / "bad.csv"
    bad.write_text("image,mask\na.nii.gz,b.nii.gz\n")
    with pytest.raises(DataError) as error:
        read_case_csv(bad)
    assert str(error.value) == "case list bad.csv: missing column 'label' (columns: image,label[,site])"
    bad.write_text("image,label\nimgs/p9.nii.gz,imgs/p1_segmentation.nii.gz\n")
    with pytest.raises(DataError) as error:
        read_case_csv(bad)
    assert str(error.value) == f"case default/p9: image file not found: {tmp_path / 'imgs/p9.nii.gz'}"
