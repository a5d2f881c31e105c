"""External (cached) teachers: the map-folder reader, cached teachers in distillers, maps in the sampler,
unlabelled images in training, and ``prostatekd teach-cache``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from conftest import unet
from ProstateKDLib.errors import ConfigError, DataError
from training.cached_teacher import CachedTeacher, probability_logits
from training.cli import main
from training.external_teacher import read_external_teacher, write_teacher_json
from training.sampling import PatchSampler

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"


def reference_image(size=(20, 16, 8), spacing=(0.8, 0.8, 3.0), origin=(10.0, -5.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=size[::-1]).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def write_map(folder: Path, case_id: str, values: np.ndarray, like: sitk.Image) -> Path:
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(like)
    path = folder / f"{case_id}.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(path))
    return path


def tiny_teacher(tmp_path: Path, scale: int = 255) -> tuple[Path, sitk.Image, np.ndarray]:
    """A teacher folder with one uint8 map of a box (probability 200/255 inside) for case SITE/Case01."""
    image = reference_image()
    values = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    values[2:6, 4:12, 5:15] = 200
    folder = tmp_path / "teacher"
    write_teacher_json(folder, {"name": "box", "version": "1", "license": "MIT", "scale": scale})
    write_map(folder, "SITE/Case01", values, image)
    return folder, image, values


# ------------------------------------------------------------------ the reader
def test_reader_returns_probabilities_on_the_case_grid(tmp_path):
    folder, image, values = tiny_teacher(tmp_path)
    teacher = read_external_teacher(folder)
    prob = teacher.read_map("SITE/Case01", image)
    array = sitk.GetArrayFromImage(prob)
    np.testing.assert_allclose(array, values / 255.0, atol=1e-6)
    assert prob.GetSpacing() == image.GetSpacing() and prob.GetOrigin() == image.GetOrigin()
    assert teacher.missing(["SITE/Case01", "SITE/Case02"]) == ["SITE/Case02"]
    assert teacher.describe()["license"] == "MIT" and teacher.describe()["kind"] == "external"


def test_reader_refuses_a_map_on_another_grid(tmp_path):
    folder, image, values = tiny_teacher(tmp_path)
    moved = reference_image(origin=(12.0, -5.0, 2.0))
    with pytest.raises(DataError, match=r"case SITE/Case01: teacher map .* is not on the case image's grid: origin"):
        read_external_teacher(folder).read_map("SITE/Case01", moved)
    smaller = reference_image(size=(20, 16, 7))
    with pytest.raises(DataError, match=r"size \(20, 16, 8\) vs \(20, 16, 7\)"):
        read_external_teacher(folder).read_map("SITE/Case01", smaller)


def test_reader_refuses_values_outside_the_scale_and_missing_maps(tmp_path):
    folder, image, values = tiny_teacher(tmp_path, scale=1)  # uint8 200 with scale 1: not a probability
    with pytest.raises(DataError, match=r"holds values 0\.\.200, outside \[0, 1\]"):
        read_external_teacher(folder).read_map("SITE/Case01", image)
    with pytest.raises(DataError, match=r"case SITE/Case09: teacher 'box' has no map"):
        read_external_teacher(folder).read_map("SITE/Case09", image)


def test_a_folder_without_a_valid_teacher_json_is_a_config_error(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "teacher.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="is not a 'prostatekd-external-teacher' file"):
        read_external_teacher(tmp_path / "t")
    write_teacher_json(tmp_path / "u", {"name": "x", "scale": 0})
    with pytest.raises(ConfigError, match="'scale' must be a number > 0, got 0"):
        read_external_teacher(tmp_path / "u")


# ------------------------------------------------------------------ cached teachers in distillers
def test_probability_logits_give_back_the_probabilities():
    p = torch.rand(2, 1, 4, 4, 2)
    soft = torch.softmax(probability_logits(p), dim=1)
    torch.testing.assert_close(soft[:, 1:], p.clamp(1e-4, 1 - 1e-4), atol=1e-5, rtol=0)


def test_logit_kd_with_a_cached_teacher_equals_a_network_teacher_with_those_outputs():
    from training.distillers import build_distiller

    torch.manual_seed(0)
    image = torch.randn(2, 1, 16, 16, 8)
    label = (torch.rand(2, 1, 16, 16, 8) > 0.7).long()
    network_teacher = unet(seed=3).eval()
    with torch.no_grad():
        teacher_p = torch.softmax(network_teacher(image), 1)[:, 1:]
    student = unet(seed=1)
    cached = build_distiller("logit_kd", student, [CachedTeacher("t", 0)])
    cached.teacher_maps = teacher_p
    _, terms_cached = cached.forward_train(image, label)
    net = build_distiller("logit_kd", student, [network_teacher])
    _, terms_net = net.forward_train(image, label)
    torch.testing.assert_close(terms_cached["kl"], terms_net["kl"], atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(terms_cached["dice"], terms_net["dice"])


def test_feature_distillers_need_weight_feature_zero_with_a_cached_teacher():
    from training.distillers import build_distiller

    example = torch.zeros(1, 1, 16, 16, 8)
    with pytest.raises(ValueError, match="a cached \\(external\\) teacher has no features: set distiller.weights.feature to 0"):
        build_distiller("seed_kd", unet(), [CachedTeacher("t", 0)], example_input=example)
    kd = build_distiller("seed_kd", unet(), [CachedTeacher("t", 0)], {"feature": 0.0}, example_input=example)
    kd.teacher_maps = torch.full((2, 1, 16, 16, 8), 0.3)
    _, terms = kd.forward_train(torch.randn(2, 1, 16, 16, 8), torch.zeros(2, 1, 16, 16, 8, dtype=torch.long))
    assert float(terms["feature"].detach()) == 0.0 and float(terms["kl"].detach()) > 0
    with pytest.raises(ValueError, match="needs network teachers"):
        build_distiller("ctkd", unet(), [CachedTeacher("t", 0)], example_input=example)


def test_label_terms_skip_unlabelled_samples():
    from training.distillers import build_distiller

    torch.manual_seed(0)
    image, label = torch.randn(2, 1, 16, 16, 8), (torch.rand(2, 1, 16, 16, 8) > 0.7).long()
    kd = build_distiller("logit_kd", unet(), [CachedTeacher("t", 0)])
    kd.teacher_maps = torch.rand(2, 1, 16, 16, 8)
    kd.batch_labelled = torch.tensor([True, False])
    _, mixed = kd.forward_train(image, label)
    kd.teacher_maps, kd.batch_labelled = kd.teacher_maps[:1], None
    _, first = kd.forward_train(image[:1], label[:1])
    torch.testing.assert_close(mixed["dice"], first["dice"])  # the unlabelled sample's zero label is ignored
    kd.teacher_maps, kd.batch_labelled = torch.rand(2, 1, 16, 16, 8), torch.tensor([False, False])
    _, none = kd.forward_train(image, label)
    assert float(none["dice"]) == 0.0 and float(none["ce"]) == 0.0 and float(none["kl"]) > 0


# ------------------------------------------------------------------ maps in the sampler
def box_volume(shift: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = torch.randn(1, 48, 48, 20)
    label = torch.zeros(1, 48, 48, 20, dtype=torch.uint8)
    label[:, 14 + shift : 30 + shift, 16:34, 6:14] = 1
    return image, label, label.float()


def test_teacher_maps_stay_aligned_with_the_label_under_augmentation():
    from training.augmentation import check_augmentation

    aug = check_augmentation({})
    sampler = PatchSampler([box_volume(), box_volume(4)], (32, 32, 12), 1.0, seed=0, augmentation=aug)
    checked = 0
    for batch in sampler.batches(6, 3):
        assert set(batch) == {"image", "label", "teacher", "labelled"} and batch["teacher"].shape[1] == 1
        for label, teacher in zip(batch["label"], batch["teacher"]):
            if label.sum() < 50:
                continue
            a, b = label.bool(), teacher > 0.5
            assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9
            checked += 1
    assert checked >= 6


def test_unlabelled_volumes_draw_gland_patches_from_the_teacher_map():
    image, _, teacher = box_volume()
    empty = torch.zeros(1, 48, 48, 20, dtype=torch.uint8)
    sampler = PatchSampler([box_volume(), (image, empty, teacher)], (16, 16, 8), 1.0, seed=0, labelled=[True, False])
    seen = 0
    for batch in sampler.batches(4, 2):
        for flag, index, t in zip(batch["labelled"], sampler.last_indices, batch["teacher"]):
            assert bool(flag) == (index == 0)
            if index == 1:
                assert float(t.max()) > 0.5  # centred on the teacher's gland
                seen += 1
    assert seen == 4
    with pytest.raises(ValueError, match="unlabelled volumes need teacher maps"):
        PatchSampler([box_volume()[:2], (image, empty)], (16, 16, 8), 1.0, seed=0, labelled=[True, False])


# ------------------------------------------------------------------ training with cached teachers and unlabelled images
@pytest.fixture(scope="module")
def cached_setup(tmp_path_factory):
    """A phantom index, a teacher folder made from the labels (every case), and an unlabelled image folder."""
    from ProstateKDLib.phantom import write_phantom_dataset
    from training.prepare import prepare_index

    root = tmp_path_factory.mktemp("cached")
    write_phantom_dataset(root / "data", cases_per_site=3, sites=["RUNMC", "BMC"], size=(48, 48, 12))
    prepare_index(root / "data", root / "index.json", folds=1, test_fraction=0.34, progress=False)
    teacher = root / "teacher"
    write_teacher_json(teacher, {"name": "label-copy", "version": "0", "license": "CC0-1.0", "scale": 1})
    unlabelled = root / "unlabelled" / "RUNMC"
    unlabelled.mkdir(parents=True)
    for label_file in sorted((root / "data").glob("*/*_segmentation.nii.gz")):
        site, stem = label_file.parent.name, label_file.name.replace("_segmentation.nii.gz", "")
        mask = sitk.Cast(sitk.ReadImage(str(label_file)), sitk.sitkFloat32)
        (teacher / site).mkdir(exist_ok=True)
        sitk.WriteImage(sitk.SmoothingRecursiveGaussian(mask, 2.0) > 0.5, str(teacher / site / f"{stem}.nii.gz"))
        if site == "RUNMC":
            shutil.copy(label_file.parent / f"{stem}.nii.gz", unlabelled / f"Extra{stem[-2:]}.nii.gz")
            shutil.copy(teacher / site / f"{stem}.nii.gz", teacher / "RUNMC" / f"Extra{stem[-2:]}.nii.gz")
    return root


def kd_config(tmp_path: Path, root: Path, distiller: dict | None = None, **data) -> Path:
    config = yaml.safe_load(SMOKE.read_text())
    config["data"] = {"index": str(root / "index.json"), **data}
    config["train"].update({"epochs": 1, "num_threads": 1})
    config["distiller"] = distiller or {"name": "logit_kd", "weights": {"dice": 1.0, "ce": 1.0, "kl": 1.0}}
    config["teachers"] = [str(root / "teacher")]
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_distill_from_a_cached_teacher_with_unlabelled_images(cached_setup, tmp_path, capsys):
    run = tmp_path / "run"
    config = kd_config(tmp_path, cached_setup, unlabelled=str(cached_setup / "unlabelled"))
    code = main(["distill", str(config), "--run-dir", str(run), "--quiet"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["unlabelled_cases"] == sorted(p.name[:-7] and f"RUNMC/{p.name[:-7]}"
                                                      for p in (cached_setup / "unlabelled" / "RUNMC").iterdir())
    assert info["teachers"][0]["kind"] == "external" and info["teachers"][0]["name"] == "label-copy"
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,loss,dice,ce,kl") and len(log) == 2


def test_a_missing_map_is_a_data_error_before_anything_is_written(cached_setup, tmp_path, capsys):
    teacher = tmp_path / "partial"
    shutil.copytree(cached_setup / "teacher", teacher)
    gone = sorted(teacher.glob("BMC/*.nii.gz"))[0]
    gone.unlink()
    config = yaml.safe_load(kd_config(tmp_path, cached_setup).read_text())
    config["teachers"] = [str(teacher)]
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    code = main(["distill", str(tmp_path / "kd.yaml"), "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    index = json.loads((cached_setup / "index.json").read_text())
    used = index["splits"]["folds"][0]["train"]
    if f"BMC/{gone.name[:-7]}" in used:
        assert code == 8 and "has no map for 1 training case, e.g. BMC/" in err
        assert not run.exists()
    else:  # the removed map was a validation or test case: not needed
        assert code == 0, err


def test_unlabelled_images_need_a_method_that_can_use_them(cached_setup, tmp_path, capsys):
    config = kd_config(tmp_path, cached_setup, {"name": "none", "weights": {"dice": 1.0, "ce": 1.0}},
                       unlabelled=str(cached_setup / "unlabelled"))
    data = yaml.safe_load(config.read_text())
    data.pop("teachers")
    config.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    code = main(["train", str(config), "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 7 and err.endswith("key 'data.unlabelled' is set but distiller 'none' cannot train on unlabelled images")
    assert not run.exists()


def test_an_unlabelled_image_that_is_a_test_case_is_refused(cached_setup, tmp_path, capsys):
    index = json.loads((cached_setup / "index.json").read_text())
    test_case = index["splits"]["test"][0]
    folder = tmp_path / "unl" / test_case.split("/")[0]
    folder.mkdir(parents=True)
    shutil.copy(cached_setup / "data" / f"{test_case}.nii.gz", folder)
    run = tmp_path / "run"
    code = main(["distill", str(kd_config(tmp_path, cached_setup, unlabelled=str(tmp_path / "unl"))),
                 "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 8 and f"case {test_case} is in the test split" in err
    assert not run.exists()


# ------------------------------------------------------------------ prostatekd teach-cache
def test_teach_cache_writes_a_teacher_folder_that_distill_reads(cached_setup, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "cache"
    code = main(["teach-cache", str(tiny_bundle.path), str(cached_setup / "index.json"), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    index = json.loads((cached_setup / "index.json").read_text())
    dev = [c["case_id"] for c in index["cases"] if c["case_id"] not in index["splits"]["test"]]
    teacher = read_external_teacher(out)
    assert teacher.missing(dev) == [] and all(not teacher.map_path(c).exists() for c in index["splits"]["test"])
    assert teacher.meta["name"] == tiny_bundle.meta.name and teacher.scale == 255
    record = next(c for c in index["cases"] if c["case_id"] == dev[0])
    image = sitk.ReadImage(str(cached_setup / "data" / record["image"]))
    prob = sitk.GetArrayFromImage(teacher.read_map(dev[0], image))
    assert prob.min() >= 0 and prob.max() <= 1 and prob.std() > 0
    before = teacher.map_path(dev[0]).stat().st_mtime_ns
    assert main(["teach-cache", str(tiny_bundle.path), str(cached_setup / "index.json"), "--out", str(out)]) == 0
    assert "cached 0 maps" in capsys.readouterr().out and teacher.map_path(dev[0]).stat().st_mtime_ns == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code = main(["teach-cache", str(tiny_bundle.path), str(cached_setup / "index.json"), "--out", str(other)])
    assert code == 7 and "is not a teacher cache" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_evaluate_scores_an_external_teacher_from_its_maps(cached_setup, tiny_bundle, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(cached_setup / "teacher"), "--model", str(tiny_bundle.path), "--index",
                 str(cached_setup / "index.json"), "--split", "test", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    maps = summary["models"]["label-copy"]
    assert maps["bundle"] == str(cached_setup / "teacher") and maps["overall"]["dice"]["mean"] > 0.9  # maps made from the labels
    assert len(summary["models"]) == 2
