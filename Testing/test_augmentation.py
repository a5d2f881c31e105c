"""Training augmentation: config checks, voxel-exact alignment of image, label and teacher map, resume."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ProstateKDLib.errors import ConfigError
from training.config import config_from_dict
from training.augmentation import DEFAULTS, augment, build_augmentation, check_augmentation, crop_size
from training.sampling import PatchSampler

PATCH = (24, 24, 10)


def only(*names: str, **changes) -> dict:
    """Every transform off except ``names`` (at probability 1), with option ``changes``."""
    section = {name: {"prob": 1.0 if name in names else 0.0} for name in DEFAULTS}
    for name, values in changes.items():
        section[name].update(values)
    return check_augmentation(section)


def coordinate_sample(shape=(48, 48, 20), seed=0) -> dict:
    """image and teacher: 3 channels holding each voxel's (i, j, k); label: a random blob."""
    grids = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    rng = np.random.default_rng(seed)
    label = torch.from_numpy(rng.random(shape) < 0.5).float()[None]
    label = torch.nn.functional.avg_pool3d(label[None], 3, 1, 1)[0].gt(0.5).float()  # blobs, not noise
    return {"image": grids.clone(), "label": label, "teacher": grids.clone()}


@pytest.mark.parametrize("names", [("affine",), ("elastic",), ("flip",), ("affine", "flip")])
def test_spatial_transforms_keep_image_label_and_teacher_aligned(names):
    """Linear ramps survive trilinear interpolation exactly, so the image says where each voxel came from.

    The teacher map must equal the image (same interpolation), and the label must
    equal the source label at the nearest voxel of that position: voxel for voxel.
    """
    aug = only(*names, flip={"axes": [0, 1]})
    cropped = coordinate_sample()  # what the sampler's (larger) crop hands the transform
    assert all(have >= want for have, want in zip(cropped["label"].shape[1:], crop_size(aug, PATCH)[:2]))
    transform = build_augmentation(aug, PATCH, keys=("image", "label", "teacher"))
    checked = 0
    for seed in range(4):
        out = augment(transform, copy.deepcopy(cropped), seed)
        assert tuple(out["image"].shape[1:]) == PATCH == tuple(out["label"].shape[1:])
        assert torch.equal(out["image"], out["teacher"])
        source = out["image"].numpy()
        shape = np.array(cropped["label"].shape[1:])
        rounded = np.rint(source).astype(int)
        # border padding clamps positions outside the crop onto its edge: keep clearly interior ones
        inside = np.all((source > 0.5) & (source < shape[:, None, None, None] - 1.5), axis=0)
        # positions within 0.05 voxel of a rounding tie may round either way
        clear = np.all(np.abs(source - np.floor(source) - 0.5) > 0.05, axis=0)
        keep = inside & clear
        expected = cropped["label"][0].numpy()[tuple(np.clip(rounded[a], 0, shape[a] - 1) for a in range(3))]
        mismatch = float(np.mean(out["label"][0].numpy()[keep] != expected[keep]))
        # elastic (off by default): its smoothed float32 displacement field can flip the nearest
        # neighbour of a few positions near a tie; every other transform is exact
        assert mismatch <= (0.02 if "elastic" in names else 0.0), f"seed {seed}: {mismatch:.4f}"
        checked += int(keep.sum())
    assert checked > 0.5 * 4 * np.prod(PATCH)  # most voxels are checked, not just a few


def test_affine_really_rotates_and_scales():
    out = augment(build_augmentation(only("affine"), PATCH), coordinate_sample(), seed=3)
    step_i = out["image"][:, 1:, :, :] - out["image"][:, :-1, :, :]  # source displacement per output voxel along i
    assert not torch.allclose(step_i[:, :, 0, 0].mean(1), torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)


def test_intensity_transforms_leave_the_label_alone():
    aug = check_augmentation({name: {"prob": 1.0} for name in DEFAULTS if name not in ("affine", "elastic", "flip")}
                             | {"affine": {"prob": 0.0}, "flip": {"prob": 0.0}})
    sample = coordinate_sample((24, 24, 10))
    out = augment(build_augmentation(aug, PATCH, keys=("image", "label", "teacher")), copy.deepcopy(sample), 1)
    assert torch.equal(out["label"], sample["label"])
    assert torch.equal(out["teacher"], sample["teacher"])
    assert not torch.allclose(out["image"], sample["image"])


def volumes(n=3, shape=(40, 36, 14)):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        image = torch.from_numpy(rng.normal(size=(1, *shape)).astype(np.float32))
        label = torch.zeros(1, *shape, dtype=torch.uint8)
        label[:, 12:26, 10:24, 4:10] = 1
        out.append((image, label))
    return out


def test_resumed_sampler_draws_the_same_augmented_patches():
    aug = check_augmentation({})
    first = PatchSampler(volumes(), PATCH, 0.5, seed=[0, 1], augmentation=aug)
    list(first.epoch(2, 2))
    state = first.state_dict()
    uninterrupted = list(first.epoch(2, 2))
    resumed = PatchSampler(volumes(), PATCH, 0.5, seed=[0, 1], augmentation=aug)
    resumed.load_state_dict(state)
    again = list(resumed.epoch(2, 2))
    assert len(again) == len(uninterrupted) == 3
    for (ia, la), (ib, lb) in zip(uninterrupted, again):
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    assert ia.shape == (2, 1, *PATCH) and la.dtype == torch.uint8


def test_positive_patches_are_centred_anywhere_in_the_volume():
    """The crop margin is padding, so patch centres still follow the gland (not the volume centre)."""
    sampler = PatchSampler(volumes(1), PATCH, 1.0, seed=0, augmentation=only())  # every transform off
    fractions = [float(label.float().mean()) for _, label in sampler.epoch(8, 1)]
    assert min(fractions) > 0.05


@pytest.mark.parametrize(
    "section, message",
    [
        ({"rotate": {}}, "key 'augmentation.rotate' is not a known augmentation (known: affine, elastic,"),
        ({"affine": {"prob": 2}}, "key 'augmentation.affine.prob' must be in [0, 1], got 2"),
        ({"affine": {"scale": [1.4, 0.7]}}, "key 'augmentation.affine.scale' must be [low, high] with low <= high"),
        ({"affine": {"rotate_deg": [1, 2]}}, "key 'augmentation.affine.rotate_deg' must be 3 angles in degrees"),
        ({"flip": {"axes": [3]}}, "key 'augmentation.flip.axes' must list axes among 0, 1, 2, got [3]"),
        ({"noise": {"sigma": 1}}, "key 'augmentation.noise.sigma' is unknown (known: prob, std)"),
        ({"gamma": "on"}, "key 'augmentation.gamma' must be a mapping, got 'on'"),
    ],
)
def test_config_errors_name_the_key(section, message):
    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "training/configs/smoke.yaml").read_text())
    data["data"]["root"] = "/nowhere"
    data["augmentation"] = section
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, "x.yaml")
    assert str(err.value).startswith(f"config x.yaml: {message}")


def test_defaults_round_trip_through_the_config(tmp_path):
    from training.config import load_config, write_config

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "training/configs/smoke.yaml").read_text())
    data["data"]["root"] = str(tmp_path)
    data["augmentation"] = {"noise": {"std": 0.2}}
    config = config_from_dict(data, "x.yaml")
    assert config.augmentation["noise"] == {"prob": 0.15, "std": 0.2}
    assert config.augmentation["affine"] == DEFAULTS["affine"]
    write_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    del data["augmentation"]
    assert "augmentation" not in config_from_dict(data, "x.yaml").to_dict()
