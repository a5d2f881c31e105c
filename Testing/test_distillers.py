"""Distillers: registry, loss terms of a real step, adaptive teacher weights, adapters, config errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FixedTeacher, batch, unet
from training.distillers import DISTILLERS, build_distiller
from ProstateKDLib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"
PATCH = (16, 16, 8)
TERMS = {
    "none": ["dice", "ce"],
    "logit_kd": ["dice", "ce", "kl"],
    "seed_kd": ["dice", "lovasz", "kl", "feature"],
    "multi_teacher_mean": ["dice", "lovasz", "kl", "feature"],
    "multi_teacher_adaptive": ["dice", "lovasz", "kl", "feature"],
}
N_TEACHERS = {"none": 0, "logit_kd": 2, "seed_kd": 1, "multi_teacher_mean": 2, "multi_teacher_adaptive": 3}


def make(name: str, student: torch.nn.Module | None = None, **options) -> "torch.nn.Module":
    teachers = [unet((8, 16, 32), seed=10 + i) for i in range(N_TEACHERS[name])]
    return build_distiller(name, student or unet(), teachers, example_input=batch()[0][:1], **options)


# ------------------------------------------------------------------ registry and documentation
def test_registry_lists_every_method_with_documented_formula():
    assert DISTILLERS.names() == ["amal", "cross_modality", "ctkd", "curriculum_experts", "logit_kd",
                                  "multi_teacher_adaptive",
                                  "multi_teacher_mean", "none", "seed_kd", "self_distill", "ta_ensemble"]
    for name in DISTILLERS.names():  # methods beyond TERMS: Testing/test_distiller_<name>.py
        cls = DISTILLERS.get(name)
        module = __import__(cls.__module__, fromlist=["x"])
        assert cls.name == name and list(cls.loss_names) == TERMS.get(name, list(cls.loss_names))
        assert "L = " in module.__doc__ and cls.__doc__, name  # formula and class docstring
    for name in ("logit_kd",):
        assert "Hinton" in __import__(DISTILLERS.get(name).__module__, fromlist=["x"]).__doc__
    for name in ("seed_kd", "multi_teacher_adaptive"):
        assert "Ben Loussaief" in __import__(DISTILLERS.get(name).__module__, fromlist=["x"]).__doc__


@pytest.mark.parametrize("name", sorted(TERMS))
def test_every_distiller_trains_a_step_with_finite_named_terms(name):
    distiller = make(name).train()
    image, label = batch()
    if distiller.needs_validation_data:  # as the training loop does: held-out reliability, meta data
        from training.distillers import TrainingContext

        distiller.prepare(TrainingContext(val_volumes=[(image[0], label[0])], patch_size=PATCH, batch_size=2,
                                          epochs=1, device=torch.device("cpu"), train_sites=["A"], val_sites=["A"]))
    params = distiller.trainable_parameters()
    optimizer = torch.optim.Adam(params, lr=0.01)
    before = {k: v.clone() for k, v in distiller.state_dict().items()}
    logits, terms = distiller.forward_train(image, label)
    assert logits.shape == (2, 2, *PATCH)
    assert list(terms) == TERMS[name]
    assert all(t.ndim == 0 and torch.isfinite(t) and t.requires_grad for t in terms.values())
    loss = distiller.total_loss(terms)
    loss.backward()
    optimizer.step()
    after = distiller.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert any(k.startswith("student.") for k in changed)
    assert not any(k.startswith("teachers.") for k in changed)
    assert sorted(distiller.stat_names()) == sorted(distiller.stats)
    if name == "multi_teacher_adaptive":
        assert distiller.stat_names() == ["weight_t0", "weight_t1", "weight_t2",
                                          "reliability_t0", "reliability_t1", "reliability_t2"]
        assert torch.allclose(distiller.last_weights.sum(1), torch.ones(2))


def test_teacher_count_and_option_checks():
    with pytest.raises(ValueError, match=r"^distiller 'seed_kd' needs exactly 1 teacher, got 2$"):
        build_distiller("seed_kd", unet(), [unet(), unet()], example_input=batch()[0][:1])
    with pytest.raises(ValueError, match=r"^distiller 'multi_teacher_adaptive' needs at least 2 teachers, got 1$"):
        build_distiller("multi_teacher_adaptive", unet(), [unet()], example_input=batch()[0][:1])
    with pytest.raises(ValueError, match=r"^distiller 'logit_kd' needs at least 1 teacher, got 0$"):
        build_distiller("logit_kd", unet(), [])
    with pytest.raises(ValueError, match=r"^option 'temperature' must be a number > 0, got -1$"):
        build_distiller("logit_kd", unet(), [unet()], temperature=-1)
    with pytest.raises(ValueError, match=r"^unknown option 'tau' for distiller 'seed_kd' \(known: feature_layers, "):
        build_distiller("seed_kd", unet(), [unet()], example_input=batch()[0][:1], tau=0.1)
    with pytest.raises(ValueError, match=r"needs example_input, one \(1, C, X, Y, Z\) patch"):
        build_distiller("seed_kd", unet(), [unet()])
    with pytest.raises(ValueError, match=r"^loss weight 'kl' must be a number >= 0, got -1$"):
        build_distiller("logit_kd", unet(), [unet()], {"kl": -1})


# ------------------------------------------------------------------ teacher targets
def test_mean_teacher_target_is_the_average_of_softened_probabilities():
    from training.distillers.parts import mean_teacher_logits

    logits = [torch.randn(2, 2, 4, 4, 2) * 3 for _ in range(3)]
    mixed = mean_teacher_logits(logits, 2.0)
    expected = torch.stack([torch.softmax(z / 2.0, 1) for z in logits]).mean(0)
    assert torch.allclose(torch.softmax(mixed / 2.0, 1), expected, atol=1e-6)
    distiller = make("multi_teacher_mean")
    student = torch.randn(2, 2, 4, 4, 2)
    from training.losses import SoftmaxKLDivLoss

    weights = torch.full((2, 3), 1 / 3)
    assert torch.allclose(distiller.kl_term(student, logits[:2], weights[:, :2]),
                          SoftmaxKLDivLoss(2.0)(student, mean_teacher_logits(logits[:2], 2.0)))


def test_adaptive_weights_follow_each_teachers_reliability_per_sample():
    from training.distillers.multi_teacher_adaptive import adaptive_teacher_weights

    _, label = batch()
    onehot = torch.cat([1 - label, label], 1).float()
    good = 6 * onehot - 3  # confident and right
    wrong_on_0 = good.clone()
    wrong_on_0[0] = -good[0]  # the complement on sample 0, right on sample 1
    out = adaptive_teacher_weights([good, good.clone(), wrong_on_0], label, tau=0.1, confidence_weight=0.2)
    w = out["weights"]
    assert w.shape == (2, 3) and torch.allclose(w.sum(1), torch.ones(2))
    assert w[0, 2] < 1e-3 and w[0, 0] > 0.49 and w[0, 1] > 0.49  # down-weighted where it is wrong
    assert torch.allclose(w[1], torch.full((3,), 1 / 3), atol=1e-5)  # equal where all are right
    assert out["reliability"][0, 2] < 0.05 and out["reliability"][1, 2] > 0.99
    # by hand: hard Dice (eps 1) + 0.2 * confidence, softmax over teachers at tau 0.1
    conf = out["confidence"][0, 0]
    s_good, s_bad = 1.0 + 0.2 * conf, out["reliability"][0, 2] + 0.2 * out["confidence"][0, 2]
    expected = torch.softmax(torch.stack([s_good, s_good, s_bad]) / 0.1, 0)
    assert torch.allclose(w[0], expected, atol=1e-6)
    ce = adaptive_teacher_weights([good, wrong_on_0], label, reliability="ce")["weights"]
    assert ce[0, 1] < ce[0, 0] and torch.allclose(ce[1], torch.full((2,), 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="tau must be > 0"):
        adaptive_teacher_weights([good], label, tau=0)


def test_adaptive_student_down_weights_an_inverted_teacher_in_training():
    image, label = batch()
    teachers = [FixedTeacher(1.0), FixedTeacher(1.0), FixedTeacher(-1.0)]  # the third is inverted
    distiller = build_distiller(
        "multi_teacher_adaptive", unet(), teachers, example_input=image[:1],
        student_layers=["model.1.submodule"], teacher_layers=["conv"], reliability="dice",
    ).train()
    _, terms = distiller.forward_train(image, label)
    w = distiller.last_weights
    assert (w[:, 2] < 1e-3).all() and (w[:, :2] > 0.49).all()
    assert float(distiller.stats["weight_t2"]) < 1e-3 and float(distiller.stats["reliability_t0"]) > 0.99
    # the KL term is the weighted sum of per-teacher KLs: about the KL to the good teachers only
    from training.losses import SoftmaxKLDivLoss

    logits = distiller.student(image)
    kl_good = SoftmaxKLDivLoss(2.0)(logits, teachers[0](image))
    assert math.isclose(float(terms["kl"].detach()), float(kl_good.detach()), rel_tol=1e-2)


# ------------------------------------------------------------------ adapters vs teachers
def test_feature_adapters_are_trained_and_teachers_are_not():
    distiller = make("seed_kd").train()
    teacher = distiller.teachers[0]
    adapter_names = [n for n, _ in distiller.named_learned_parameters()]
    assert adapter_names and all(n.startswith("feature_losses.") for n in adapter_names)
    params = distiller.trainable_parameters()
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not any(id(p) in teacher_ids for p in params)
    assert not any(p.requires_grad for p in teacher.parameters())
    adapters = {n: p.detach().clone() for n, p in distiller.named_learned_parameters()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD(params, lr=0.5)
    image, label = batch()
    _, terms = distiller.forward_train(image, label)
    terms["feature"].backward()  # the feature term alone reaches the adapters
    optimizer.step()
    moved = dict(distiller.named_learned_parameters())
    assert all(not torch.equal(adapters[n], moved[n]) for n in adapters)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    learned = distiller.learned_state_dict()
    assert learned and not any(k.startswith(("student.", "teachers.")) for k in learned)
    other = make("seed_kd")
    other.load_learned_state_dict(learned)
    assert all(torch.equal(v, other.learned_state_dict()[k]) for k, v in learned.items())
    with pytest.raises(ValueError, match="learned state does not match distiller 'seed_kd'"):
        other.load_learned_state_dict({})


# ------------------------------------------------------------------ configuration errors
@pytest.fixture
def smoke() -> dict:
    data = yaml.safe_load(SMOKE.read_text())
    data["data"]["root"] = "/nonexistent/data"
    return data


def with_distiller(data: dict, teachers: list[str] | None = None, **distiller) -> dict:
    data = copy.deepcopy(data)
    data["distiller"] = distiller
    if teachers is not None:
        data["teachers"] = teachers
    return data


@pytest.mark.parametrize(
    "distiller, teachers, message",
    [
        ({"name": "fitnet"}, None,
         "key 'distiller.name' names unknown distiller 'fitnet' "
         f"(known: {', '.join(DISTILLERS.names())})"),  # every registered method, sorted
        ({"name": "seed_kd", "weights": {"ce": 1.0}}, ["/t/a"],
         "unknown key 'distiller.weights.ce' (known: dice, feature, kl, lovasz)"),
        ({"name": "seed_kd", "weights": {"kl": "high"}}, ["/t/a"],
         "key 'distiller.weights.kl' must be a number >= 0, got 'high'"),
        ({"name": "logit_kd", "weights": {"kl": -0.5}}, ["/t/a"],
         "key 'distiller.weights.kl' must be a number >= 0, got -0.5"),
        ({"name": "seed_kd", "tau": 0.1}, ["/t/a"],
         "unknown key 'distiller.tau' (known: feature_layers, feature_normalize, name, student_layers, "
         "teacher_layers, temperature, weights)"),
        ({"name": "logit_kd", "temperature": 0}, ["/t/a"], "key 'distiller.temperature' must be a number > 0, got 0"),
        ({"name": "multi_teacher_adaptive", "tau": -1}, ["/t/a", "/t/b"],
         "key 'distiller.tau' must be a number > 0, got -1"),
        ({"name": "multi_teacher_adaptive", "reliability": "iou"}, ["/t/a", "/t/b"],
         "key 'distiller.reliability' must be one of held_out, dice, ce, got 'iou'"),
        ({"name": "seed_kd", "feature_layers": "head"}, ["/t/a"],
         "key 'distiller.feature_layers' must be one of all, bottleneck, decoder, got 'head'"),
        ({"name": "seed_kd", "student_layers": "model"}, ["/t/a"],
         "key 'distiller.student_layers' must be null or a non-empty list of unique module names, got 'model'"),
        ({"name": "seed_kd"}, ["/t/a", "/t/b"],
         "key 'teachers' lists 2 teachers but distiller 'seed_kd' needs exactly 1 teacher"),
        ({"name": "seed_kd"}, None, "key 'teachers' lists 0 teachers but distiller 'seed_kd' needs exactly 1 teacher"),
        ({"name": "multi_teacher_mean"}, ["/t/a"],
         "key 'teachers' lists 1 teacher but distiller 'multi_teacher_mean' needs at least 2 teachers"),
        ({"name": "none"}, ["/t/a"], "key 'teachers' lists 1 teacher but distiller 'none' takes no teachers"),
        ({"name": "logit_kd"}, ["/t/a", "/t/a"], "key 'teachers' names the same teacher twice: ['/t/a', '/t/a']"),
    ],
)
def test_distiller_config_errors(smoke, distiller, teachers, message):
    from training.config import config_from_dict

    with pytest.raises(ConfigError) as error:
        config_from_dict(with_distiller(smoke, teachers, **distiller), "kd.yaml")
    assert str(error.value) == f"config kd.yaml: {message}"
    assert error.value.exit_code == 7


def test_distiller_options_round_trip_through_yaml(smoke, tmp_path):
    from training.config import config_from_dict, load_config, write_config

    data = with_distiller(smoke, ["/t/a", "/t/b"], name="multi_teacher_adaptive",
                          weights={"kl": 2.0}, tau=0.5, temperature=3)
    config = config_from_dict(data, "kd.yaml")
    assert dict(config.distiller.options) == {"tau": 0.5, "temperature": 3}
    assert config.distiller.resolved_options()["confidence_weight"] == 0.2
    write_config(config, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "tau: 0.5" in text and "teachers:" in text and "options" not in text
    assert load_config(tmp_path / "config.yaml") == config


def test_teacher_on_another_grid_is_refused(smoke, tmp_path, model_json):
    """Voxel-wise KD needs the same grid: spacing, orientation, normalisation are checked at load."""
    from conftest import make_bundle
    from training.config import config_from_dict
    from training.teachers import load_teachers

    def bundle(name: str, **changes) -> str:
        data = copy.deepcopy(model_json)
        data["input"].update(spacing=[4.0, 4.0, 6.0], patch_size=[32, 32, 16])
        data["input"].update(changes)
        make_bundle(tmp_path / name, data)
        return str(tmp_path / name)

    good = bundle("good")
    config = config_from_dict(with_distiller(smoke, [good], name="seed_kd"), "kd.yaml")
    (teacher,) = load_teachers(config)
    assert teacher.describe()["name"] == "tiny-test-model" and not teacher.network.training
    cases = [
        (bundle("spacing", spacing=[1.0, 1.0, 3.0]), "preprocessing.spacing", "[4.0, 4.0, 6.0]", "[1.0, 1.0, 3.0]"),
        (bundle("orient", orientation="LPS"), "preprocessing.orientation", "'RAS'", "'LPS'"),
        (bundle("norm", normalization={"name": "none"}), "preprocessing.normalization",
         "{'name': 'zscore', 'clip_percentiles': [0.5, 99.5]}", "{'name': 'none'}"),
    ]
    for path, key, mine, theirs in cases:
        config = config_from_dict(with_distiller(smoke, [path], name="seed_kd"), "kd.yaml")
        with pytest.raises(ConfigError) as error:
            load_teachers(config)
        assert str(error.value) == (
            f"config kd.yaml: key '{key}' is {mine} but teacher 'tiny-test-model' ({path}) was trained with "
            f"{theirs}; teacher and student must share orientation, spacing and normalization for voxel-wise "
            "distillation"
        )
    config = config_from_dict(with_distiller(smoke, [str(tmp_path / "missing")], name="seed_kd"), "kd.yaml")
    with pytest.raises(ConfigError) as error:
        load_teachers(config)
    assert str(error.value) == f"config kd.yaml: key 'teachers': model bundle not found: {tmp_path / 'missing'}"
