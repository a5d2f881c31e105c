"""``ctkd``: gradient reversal of the learned temperature, its range, per-class mode, option checks,
a real training run logging the temperature, and the log plot helper."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from conftest import batch, unet
from training.distillers import DISTILLERS, build_distiller
from training.distillers.ctkd import cosine_lambda, reverse_gradient, tensor_temperature_kl
from ProstateKDLib.errors import ConfigError, InputError
from training.losses import SoftmaxKLDivLoss

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"
PATCH = (16, 16, 8)


def make(n_teachers: int = 1, **options) -> torch.nn.Module:
    teachers = [unet((8, 16, 32), seed=10 + i) for i in range(n_teachers)]
    return build_distiller("ctkd", unet(), teachers, example_input=batch()[0][:1], **options)


# ------------------------------------------------------------------ registry, parameters, one step
def test_registered_with_documented_formula_and_learned_temperature():
    cls = DISTILLERS.get("ctkd")
    module = __import__(cls.__module__, fromlist=["x"])
    assert "L = " in module.__doc__ and "Curriculum Temperature" in module.__doc__ and cls.__doc__
    assert cls.loss_names == ("dice", "ce", "kl") and cls.min_teachers == 1 and cls.max_teachers is None
    distiller = make(2).train()
    assert any(p is distiller.theta for p in distiller.trainable_parameters())
    assert list(distiller.learned_state_dict()) == ["theta"]
    assert torch.allclose(distiller.temperature(), torch.tensor([4.0]))  # t_init
    image, label = batch()
    logits, terms = distiller.forward_train(image, label)
    assert logits.shape == (2, 2, *PATCH) and list(terms) == ["dice", "ce", "kl"]
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values()) and terms["kl"] > 0
    assert distiller.stat_names() == ["temperature", "grl_lambda"] and sorted(distiller.stats) == sorted(
        distiller.stat_names())
    assert float(distiller.stats["temperature"]) == pytest.approx(4.0) and float(distiller.stats["grl_lambda"]) == 0


def test_cosine_lambda_schedule():
    assert cosine_lambda(0.0, 2.0, 0.5) == 0.0
    assert cosine_lambda(0.25, 2.0, 0.5) == pytest.approx(1.0)
    assert cosine_lambda(0.5, 2.0, 0.5) == pytest.approx(2.0) == cosine_lambda(1.0, 2.0, 0.5)
    distiller = make(lambda_max=0.8, ramp=1.0)
    values = []
    for epoch in range(1, 6):
        distiller.start_epoch(epoch, 5)
        values.append(distiller.grl_lambda())
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.8) and values == sorted(values)


# ------------------------------------------------------------------ gradient reversal
def test_gradient_reversal_layer():
    x = torch.tensor([1.5, -2.0], requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.tensor([2.0, 5.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.6, -1.5]))


def test_temperature_gets_the_reversed_kl_gradient():
    distiller = make(lambda_max=0.7).train()
    distiller.start_epoch(3, 3)  # progress 1: λ = λ_max
    image, label = batch()
    _, terms = distiller.forward_train(image, label)
    terms["kl"].backward()
    reversed_grad = distiller.theta.grad.clone()

    distiller.zero_grad()
    with torch.no_grad():
        student, teacher = distiller.student(image), distiller.teachers[0](image)
    tensor_temperature_kl(student, [teacher], distiller.temperature()).backward()
    plain_grad = distiller.theta.grad.clone()
    assert plain_grad.abs().sum() > 0
    assert torch.allclose(reversed_grad, -0.7 * plain_grad, rtol=1e-4, atol=1e-8)

    distiller.zero_grad()
    distiller.start_epoch(1, 3)  # λ = 0: the temperature does not move in the first epoch
    distiller.forward_train(image, label)[1]["kl"].backward()
    assert torch.count_nonzero(distiller.theta.grad) == 0


def test_temperature_stays_in_range_under_big_steps():
    distiller = make(t_min=2.0, t_max=5.0, t_init=3.0, lambda_max=1.0).train()
    distiller.start_epoch(2, 2)
    optimizer = torch.optim.SGD([distiller.theta], lr=1e4)
    image, label = batch()
    seen = []
    for _ in range(20):
        optimizer.zero_grad()
        distiller.forward_train(image, label)[1]["kl"].backward()
        optimizer.step()
        seen.append(float(distiller.temperature().detach()))
    assert all(2.0 <= t <= 5.0 for t in seen)
    assert max(abs(t - 3.0) for t in seen) > 0.5  # it did move


# ------------------------------------------------------------------ per-class temperature
def test_per_class_temperature():
    distiller = make(temperature_mode="class", t_init=3.0)
    assert distiller.theta.shape == (2,) and distiller.temperature().shape == (2,)
    student, teacher = torch.randn(2, 2, 4, 4, 2) * 3, torch.randn(2, 2, 4, 4, 2) * 3
    t = torch.tensor([2.0, 5.0])
    scale = t.reshape(1, 2, 1, 1, 1)
    log_s, log_t = torch.log_softmax(student / scale, 1), torch.log_softmax(teacher / scale, 1)
    expected = (log_t.exp() * (log_t - log_s)).sum(1).mean() * (t ** 2).mean()
    assert torch.allclose(tensor_temperature_kl(student, [teacher], t), expected)
    same = tensor_temperature_kl(student, [teacher], torch.tensor([3.0, 3.0]))
    assert torch.allclose(same, SoftmaxKLDivLoss(3.0)(student, teacher), atol=1e-6)
    assert torch.allclose(tensor_temperature_kl(student, [teacher], torch.tensor([3.0])), same, atol=1e-6)
    image, label = batch()
    distiller.forward_train(image, label)
    assert float(distiller.stats["temperature"]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"temperature must have shape \(1,\) or \(2,\), got \(3,\)"):
        tensor_temperature_kl(student, [teacher], torch.ones(3))


# ------------------------------------------------------------------ option checks
@pytest.mark.parametrize("options, message", [
    ({"t_min": 5.0, "t_max": 5.0}, r"^option 't_min' must be less than t_max \(5\), got 5$"),
    ({"t_init": 10.0}, r"^option 't_init' must lie strictly between t_min \(1\) and t_max \(10\), got 10$"),
    ({"t_init": 0.5}, r"^option 't_init' must lie strictly between t_min \(1\) and t_max \(10\), got 0.5$"),
    ({"t_min": 0}, r"^option 't_min' must be a number > 0, got 0$"),
    ({"temperature_mode": "voxel"}, r"^option 'temperature_mode' must be one of global, class, got 'voxel'$"),
    ({"ramp": 0}, r"^option 'ramp' must be a number in \(0, 1\], got 0$"),
    ({"lambda_max": -1}, r"^option 'lambda_max' must be a number >= 0, got -1$"),
    ({"temperature": 2}, r"^unknown option 'temperature' for distiller 'ctkd' \(known: lambda_max, ramp, "),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        make(**options)


def test_bad_option_in_a_config(tmp_path):
    from training.config import config_from_dict

    data = yaml.safe_load(SMOKE.read_text())
    data["distiller"] = {"name": "ctkd", "ramp": 2}
    data["teachers"] = [str(tmp_path / "teacher")]
    with pytest.raises(ConfigError, match=r"key 'distiller.ramp' must be a number in \(0, 1\], got 2$"):
        config_from_dict(data, "ctkd.yaml")


# ------------------------------------------------------------------ a real run and its temperature curve
@pytest.fixture(scope="module")
def ctkd_run(tmp_path_factory) -> Path:
    """3 epochs of ``ctkd`` on tiny phantoms with a random teacher on the smoke grid."""
    from conftest import MODEL_JSON, make_bundle
    from ProstateKDLib.phantom import write_phantom_dataset
    from training.config import config_from_dict
    from training.train import train

    work = tmp_path_factory.mktemp("ctkd")
    write_phantom_dataset(work / "data", cases_per_site=3, sites=["RUNMC", "BMC"], size=(48, 48, 12))
    teacher = dict(MODEL_JSON, input={**MODEL_JSON["input"], "spacing": [4.0, 4.0, 6.0], "patch_size": [16, 16, 8]})
    make_bundle(work / "teacher", teacher, seed=1)
    data = yaml.safe_load(SMOKE.read_text())
    data["data"]["root"] = str(work / "data")
    data["preprocessing"]["patch_size"] = [16, 16, 8]
    data["train"].update(epochs=3, patches_per_volume=2)
    data["distiller"] = {"name": "ctkd", "weights": {"dice": 1, "ce": 1, "kl": 1}, "ramp": 0.5}
    data["teachers"] = [str(work / "teacher")]
    return train(config_from_dict(data, "ctkd.yaml"), work / "run", progress=False)


def test_training_logs_a_changing_temperature(ctkd_run):
    from training.checkpoint import LAST, load_checkpoint

    rows = list(csv.DictReader(open(ctkd_run / "log.csv", newline="")))
    assert len(rows) == 3 and {"temperature", "grl_lambda", "kl"} <= set(rows[0])
    temperatures = [float(r["temperature"]) for r in rows]
    assert temperatures[0] == pytest.approx(4.0)  # λ = 0 in the first epoch: T stays at t_init
    assert temperatures[2] != pytest.approx(temperatures[0], abs=1e-4)
    assert all(1.0 <= t <= 10.0 for t in temperatures)
    assert [float(r["grl_lambda"]) for r in rows] == pytest.approx([0.0, 1.0, 1.0])
    state = load_checkpoint(ctkd_run / LAST)["distiller"]
    assert list(state) == ["theta"] and state["theta"].shape == (1,)


def test_plot_log_columns(ctkd_run, tmp_path):
    from training.plot_log import plot_log_columns

    png = plot_log_columns(ctkd_run / "log.csv", ["temperature"], tmp_path / "plots" / "temperature.png",
                           title="ctkd temperature")
    assert png == tmp_path / "plots" / "temperature.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    two = plot_log_columns(ctkd_run / "log.csv", ["temperature", "grl_lambda"], tmp_path / "both.png")
    assert two.stat().st_size > 0
    with pytest.raises(InputError, match=r"has no column 'tau' \(columns: epoch, loss, dice, ce, kl, temperature"):
        plot_log_columns(ctkd_run / "log.csv", ["tau"], tmp_path / "x.png")
    with pytest.raises(InputError, match="log file not found"):
        plot_log_columns(tmp_path / "missing.csv", ["temperature"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="columns must be a non-empty list"):
        plot_log_columns(ctkd_run / "log.csv", [], tmp_path / "x.png")
