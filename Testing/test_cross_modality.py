"""Cross-modality distillation: T2+ADC teacher, T2-only student; two-channel (T2, ADC) phantoms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import unet
from training.distillers import DISTILLERS, build_distiller

PATCH = (16, 16, 8)


def batch(channels: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two patches: a bright cube (channel 0, T2-like) that is dark in channel 1 (ADC-like)."""
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(2, 1, *PATCH, dtype=torch.uint8)
    label[0, :, 4:12, 4:12, 2:6] = 1
    label[1, :, 2:8, 6:14, 1:5] = 1
    fg = label.float()
    planes = [fg * 2 - 1, 1 - fg * 2] + [torch.zeros_like(fg)] * (channels - 2)
    image = torch.cat(planes[:channels], 1) + 0.3 * torch.randn(2, channels, *PATCH, generator=g)
    return image, label


def make(student=None, teacher_channels: int = 2, **options):
    return build_distiller(
        "cross_modality", student or unet(in_channels=1), [unet(in_channels=teacher_channels, seed=10)],
        example_input=torch.zeros(1, 1, *PATCH), **options,
    )


# ------------------------------------------------------------------ registry
def test_registered_with_formula_and_terms():
    cls = DISTILLERS.get("cross_modality")
    module = __import__(cls.__module__, fromlist=["x"])
    assert cls.loss_names == ("dice", "ce", "kl") and "L = " in module.__doc__ and "CMEDL" in module.__doc__
    assert (cls.min_teachers, cls.max_teachers) == (1, 1)
    assert make().settings == {"temperature": 2.0, "student_channels": [0]}


# ------------------------------------------------------------------ the student never sees ADC
def test_student_ignores_other_channels_teacher_does_not():
    distiller = make().eval()
    image, _ = batch()
    changed = image.clone()
    changed[:, 1] = torch.randn_like(changed[:, 1]) * 5
    with torch.no_grad():
        t_a, t_b = distiller.teacher_logits(image)[0], distiller.teacher_logits(changed)[0]
        s_a, s_b = distiller(image), distiller(changed)
        assert not torch.allclose(t_a, t_b)
        assert torch.equal(s_a, s_b)
        assert torch.equal(s_a, distiller(image[:, :1]))  # already-selected T2 passes through
        assert torch.equal(s_a, distiller.student(distiller.select_student_input(image)))
        logits_a, _ = distiller.forward_train(image, batch()[1])
        logits_b, _ = distiller.forward_train(changed, batch()[1])
        assert torch.equal(logits_a, logits_b) and torch.equal(logits_a, s_a)
    # changing T2 does change the student
    t2_changed = image.clone()
    t2_changed[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(distiller(t2_changed), s_a)


def test_student_channels_option_selects_other_channels():
    distiller = make(unet(in_channels=2), teacher_channels=3, student_channels=[2, 0])
    image, _ = batch(channels=3)
    assert torch.equal(distiller.select_student_input(image), image[:, [2, 0]])
    assert distiller.student_input(image[:, :2]).shape[1] == 2  # already selected


def test_student_input_hook_is_identity_for_other_methods():
    other = build_distiller("logit_kd", unet(in_channels=1), [unet(in_channels=1, seed=3)])
    image = torch.zeros(1, 2, *PATCH)
    assert other.student_input(image) is image


# ------------------------------------------------------------------ a real training step
def test_training_step_finite_terms_gradients_only_in_student():
    distiller = make(temperature=3.0, weights={"kl": 0.5}).train()
    image, label = batch()
    teacher_before = {k: v.clone() for k, v in distiller.teachers.state_dict().items()}
    student_before = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    optimizer = torch.optim.Adam(distiller.trainable_parameters(), lr=1e-2)
    logits, terms = distiller.forward_train(image, label)
    assert logits.shape == (2, 2, *PATCH) and set(terms) == {"dice", "ce", "kl"}
    assert all(math.isfinite(float(v.detach())) for v in terms.values()) and float(terms["kl"].detach()) >= 0
    loss = distiller.total_loss(terms)
    loss.backward()
    assert all(p.grad is None for p in distiller.teachers.parameters())
    grads = [p.grad for p in distiller.student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert not distiller.teachers[0].training
    optimizer.step()
    assert all(torch.equal(v, teacher_before[k]) for k, v in distiller.teachers.state_dict().items())
    assert any(not torch.equal(v, student_before[k]) for k, v in distiller.student.state_dict().items())
    assert {id(p) for p in distiller.trainable_parameters()} == {id(p) for p in distiller.student.parameters()}


def test_validate_runs_student_on_selected_channels():
    from training.train import validate

    distiller = make()
    image, label = batch()
    volumes = [(image[0], label[0])]
    scores = validate(distiller.student, volumes, PATCH, torch.device("cpu"), input_fn=distiller.student_input)
    assert len(scores) == 1 and (math.isnan(scores[0]) or 0.0 <= scores[0] <= 1.0)
    with pytest.raises(RuntimeError):  # without the hook the 1-channel student cannot take the 2-channel image
        validate(distiller.student, volumes, PATCH, torch.device("cpu"))


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    "student_ch, teacher_ch, options, message",
    [
        (1, 1, {}, "needs a teacher that sees several input channels"),
        (2, 2, {}, "the student takes 2 input channels but option 'student_channels' selects 1"),
        (1, 2, {"student_channels": [2]}, "out of range: the teacher takes 2 channels"),
        (2, 2, {"student_channels": [0, 1]}, "must select fewer channels than the teacher's 2"),
        (1, 2, {"student_channels": []}, "option 'student_channels' must be a non-empty list"),
        (1, 2, {"student_channels": [0, 0]}, "unique channel indices"),
        (1, 2, {"student_channels": 0}, "option 'student_channels' must be"),
    ],
)
def test_wrong_channel_counts_refused(student_ch, teacher_ch, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(unet(in_channels=student_ch), teacher_channels=teacher_ch, **options)


def test_wrong_teacher_count_and_image_channels_refused():
    with pytest.raises(ValueError, match="needs exactly 1 teacher, got 2"):
        build_distiller("cross_modality", unet(in_channels=1), [unet(in_channels=2), unet(in_channels=2, seed=1)])
    distiller = make()
    image, label = batch(channels=3)
    with pytest.raises(ValueError, match="needs the full 2-channel image .*got 3 channel"):
        distiller.forward_train(image, label)  # a teacher with fewer channels than the image
    with pytest.raises(ValueError, match="got 1 channel"):
        distiller.forward_train(image[:, :1], label)
    with pytest.raises(ValueError, match="got 3 channel"):
        distiller(image)


# ------------------------------------------------------------------ two-channel phantoms
def test_adc_phantom_lower_in_gland_and_same_grid():
    from ProstateKDLib.phantom import make_phantom
    from ProstateKDLib.phantom_adc import adc_from_phantom

    t2, label = make_phantom(3, "RUNMC", (48, 48, 12))
    adc = adc_from_phantom(t2, label, seed=3)
    assert adc.GetSize() == t2.GetSize() and adc.GetDirection() == t2.GetDirection()
    assert adc.GetOrigin() == t2.GetOrigin() and adc.GetPixelID() == sitk.sitkFloat32
    values, mask = sitk.GetArrayFromImage(adc), sitk.GetArrayFromImage(label) > 0
    inside, outside = values[mask].mean(), values[~mask].mean()
    assert inside < outside - 300  # ~0.9e-3 vs ~1.6e-3 mm²/s, scaled by 1e6
    assert 700 < inside < 1300 and 1400 < outside < 1800 and values.min() >= 0
    assert np.array_equal(values, sitk.GetArrayFromImage(adc_from_phantom(t2, label, seed=3)))
    assert not np.array_equal(values, sitk.GetArrayFromImage(adc_from_phantom(t2, label, seed=4)))


def test_two_channel_dataset_reads_per_channel_and_trains(tmp_path):
    from ProstateKDLib.datasets import read_case
    from ProstateKDLib.datasets import index_msd
    from ProstateKDLib.phantom_adc import write_two_channel_dataset

    records = write_two_channel_dataset(tmp_path, cases=1, seed=5, size=(48, 48, 12))
    raw = sitk.ReadImage(records[0]["image"])
    assert raw.GetDimension() == 4 and raw.GetSize() == (48, 48, 12, 2)
    assert index_msd(tmp_path)[0].channel == 0  # default: T2
    planes = []
    for channel in (0, 1):
        image, label = read_case(index_msd(tmp_path, channel=channel)[0])
        array, mask = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label) > 0
        planes.append((array - array.mean()) / array.std())
        if channel == 1:
            assert array[mask].mean() < array[~mask].mean()
    # two real steps on a crop of the (T2, ADC) phantom; arrays are (z, y, x)
    full = torch.from_numpy(np.stack(planes)).permute(0, 3, 2, 1)[None].float()  # (1, 2, x, y, z)
    lab = torch.from_numpy(mask.astype(np.uint8)).permute(2, 1, 0)[None, None]
    centre = [int(v.float().mean()) for v in torch.nonzero(lab[0, 0], as_tuple=True)]
    lo = [min(max(c - p // 2, 0), s - p) for c, p, s in zip(centre, PATCH, full.shape[2:])]
    crop = tuple(slice(a, a + p) for a, p in zip(lo, PATCH))
    image, label = full[(slice(None), slice(None), *crop)], lab[(slice(None), slice(None), *crop)]
    assert image.shape == (1, 2, *PATCH) and label.sum() > 0
    distiller = make().train()
    optimizer = torch.optim.Adam(distiller.trainable_parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        _, terms = distiller.forward_train(image, label)
        loss = distiller.total_loss(terms)
        assert math.isfinite(float(loss.detach()))
        loss.backward()
        optimizer.step()


# ------------------------------------------------------------------ end to end through the commands
def test_two_channel_teacher_distils_a_t2_student_end_to_end(tmp_path):
    """T2+ADC phantoms -> a 2-channel teacher -> ``cross_modality`` T2 student -> export -> segment T2."""
    import json
    from pathlib import Path

    import yaml

    from training.cli import main
    from ProstateKDLib.inference import Segmenter
    from ProstateKDLib.phantom_adc import write_two_channel_dataset

    data = tmp_path / "t2adc"
    write_two_channel_dataset(data, cases=4, seed=1, size=(48, 48, 12))
    smoke = yaml.safe_load((Path(__file__).resolve().parents[1] / "training" / "configs" / "smoke.yaml").read_text())
    smoke["data"].update(root=str(data), val_fraction=0.25, channels=[0, 1])
    teacher = {**smoke, "model": {**smoke["model"], "in_channels": 2,
                                  "kwargs": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0}},
               "export": {**smoke["export"], "name": "t2adc-teacher"}}
    student = {**smoke, "distiller": {"name": "cross_modality", "weights": {"dice": 1, "ce": 1, "kl": 1},
                                      "student_channels": [0]},
               "export": {**smoke["export"], "name": "t2-student"}}
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(student))
    assert main(["train", str(tmp_path / "teacher.yaml"), "--run-dir", str(tmp_path / "teacher"), "--quiet"]) == 0
    assert main(["export", str(tmp_path / "teacher"), str(tmp_path / "teacher_bundle")]) == 0
    meta = json.loads((tmp_path / "teacher_bundle" / "model.json").read_text())
    assert meta["input"]["channels"] == ["T2", "ADC"]
    assert main(["distill", str(tmp_path / "student.yaml"), "--run-dir", str(tmp_path / "student"),
                 "--teachers", str(tmp_path / "teacher_bundle"), "--quiet"]) == 0
    assert main(["export", str(tmp_path / "student"), str(tmp_path / "student_bundle")]) == 0
    meta = json.loads((tmp_path / "student_bundle" / "model.json").read_text())
    assert meta["input"]["channels"] == ["T2"]  # the deployed student needs T2 only
    assert meta["provenance"]["teachers"][0]["name"] == "t2adc-teacher"
    log = (tmp_path / "student" / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:5] == ["epoch", "loss", "dice", "ce", "kl"] and len(log) > 1
    t2 = sitk.ReadImage(str(next((data / "imagesTr").glob("*.nii.gz"))))[:, :, :, 0]  # channel 0 of the 4D file
    result = Segmenter(str(tmp_path / "student_bundle"), device="cpu").segment(t2)
    assert result.mask.GetSize() == t2.GetSize()


def test_a_one_channel_teacher_is_refused_when_two_channels_are_loaded(tmp_path):
    from ProstateKDLib.errors import ConfigError
    from training.config import config_from_dict
    from training.teachers import check_teacher_grid
    from ProstateKDLib.bundle import load_bundle
    from pathlib import Path

    import yaml

    smoke = yaml.safe_load((Path(__file__).resolve().parents[1] / "training" / "configs" / "smoke.yaml").read_text())
    smoke["data"].update(root=str(tmp_path), channels=[0, 1])
    smoke["preprocessing"].update(orientation="RAS", spacing=[1.0, 1.0, 3.0],  # the bundled model's grid
                                  normalization={"name": "zscore", "clip_percentiles": [0.5, 99.5]})
    config = config_from_dict(smoke, "kd.yaml")
    bundled = load_bundle(Path(__file__).resolve().parents[1] / "Resources" / "Models" / "prostatekd-student")
    with pytest.raises(ConfigError, match=r"key 'data.channels' is 2 but teacher 'prostatekd-student'"):
        check_teacher_grid(config, bundled)


def test_modality_recipe_tiny(tmp_path, capsys):
    """``compare_modality.py --scale tiny``: five models, the cross-modality student sees T2 only."""
    import json

    from training.recipes.compare_modality import ROWS, main

    out = tmp_path / "modality"
    assert main(["--out", str(out), "--scale", "tiny", "--quiet"]) == 0
    assert "| cross_modality | T2 |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    rows = {m["model"]: m for m in results["models"]}
    assert list(rows) == list(ROWS)
    assert rows["teacher_t2adc"]["inputs"] == "T2+ADC" and rows["cross_modality"]["inputs"] == "T2"
    assert rows["cross_modality"]["parameters"] == rows["student_t2"]["parameters"] < rows["teacher_t2"]["parameters"]
    assert all(0 <= m["dice_mean"] <= 1 for m in results["models"])
    provenance = json.loads((out / "models" / "cross_modality" / "bundle" / "model.json").read_text())["provenance"]
    assert provenance["teachers"][0]["name"] == "modality-recipe-teacher-t2adc"
    assert (out / "dice_per_model.png").stat().st_size > 0
