"""``ta_ensemble``: weighted TA target, differential-evolution weight search, prepare, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import FixedTeacher, batch, unet
from training.distillers import DISTILLERS, TrainingContext, build_distiller
from training.distillers import ta_ensemble
from training.distillers.ta_ensemble import fit_ensemble_weights, weighted_teacher_logits

PATCH = (16, 16, 8)


def volumes(count: int = 2, shape=(20, 20, 10)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Validation volumes (1, X, Y, Z): a bright box labelled as gland."""
    g = torch.Generator().manual_seed(7)
    out = []
    for v in range(count):
        label = torch.zeros(1, *shape)
        label[:, 4 + v:14, 5:15 - v, 2:8] = 1
        out.append((label * 2 - 1 + 0.2 * torch.randn(1, *shape, generator=g), label))
    return out


def context(vols, resumed: bool = False) -> TrainingContext:
    return TrainingContext(val_volumes=vols, patch_size=PATCH, batch_size=2, epochs=3,
                           device=torch.device("cpu"), seed=0, resumed=resumed)


def test_registered_with_formula_and_reference():
    cls = DISTILLERS.get("ta_ensemble")
    assert cls.name == "ta_ensemble" and list(cls.loss_names) == ["dice", "lovasz", "kl"]
    assert cls.needs_validation_data and cls.__doc__
    assert "L = " in ta_ensemble.__doc__ and "Mirzadeh" in ta_ensemble.__doc__


def test_weighted_target_is_the_weighted_average_of_softened_probabilities():
    from training.distillers.parts import mean_teacher_logits

    logits = [torch.randn(2, 2, 4, 4, 2) * 3 for _ in range(3)]
    w = torch.tensor([0.5, 0.3, 0.2])
    mixed = weighted_teacher_logits(logits, w, 2.0)
    expected = sum(wa * torch.softmax(z / 2.0, 1) for wa, z in zip(w, logits))
    assert torch.allclose(torch.softmax(mixed / 2.0, 1), expected, atol=1e-6)
    uniform = weighted_teacher_logits(logits, torch.full((3,), 1 / 3), 2.0)
    assert torch.allclose(torch.softmax(uniform / 2, 1), torch.softmax(mean_teacher_logits(logits, 2.0) / 2, 1),
                          atol=1e-6)
    dropped = weighted_teacher_logits(logits, torch.tensor([1.0, 0.0, 0.0]), 2.0)  # a zero weight drops a TA
    assert torch.allclose(torch.softmax(dropped / 2, 1), torch.softmax(logits[0] / 2, 1), atol=1e-6)
    with pytest.raises(ValueError, match="need one weight per teacher: 3 teachers, 2 weights"):
        weighted_teacher_logits(logits, torch.tensor([0.5, 0.5]), 2.0)


def test_search_beats_uniform_and_favours_the_best_assistant():
    g = torch.Generator().manual_seed(0)
    labels = [v[1] for v in volumes(3)]
    good, inverted, noisy = [], [], []
    for label in labels:
        y = label[0]
        good.append(torch.stack([0.9 - 0.8 * y, 0.1 + 0.8 * y]))      # right, fairly confident
        inverted.append(torch.stack([0.2 + 0.6 * y, 0.8 - 0.6 * y]))  # the complement
        r = torch.rand(y.shape, generator=g)
        noisy.append(torch.stack([1 - r, r]))                          # random
    probabilities = [inverted, good, noisy]
    weights, dice, uniform_dice = fit_ensemble_weights(probabilities, labels, seed=0, maxiter=10, popsize=6)
    assert weights.shape == (3,) and math.isclose(weights.sum(), 1.0) and (weights >= 0).all()
    assert dice > uniform_dice + 0.2 and dice > 0.99
    assert int(np.argmax(weights)) == 1
    again = fit_ensemble_weights(probabilities, labels, seed=0, maxiter=10, popsize=6)
    assert np.array_equal(again[0], weights)  # seeded
    with pytest.raises(ValueError, match="at least 2 assistants"):
        fit_ensemble_weights([good], labels)
    with pytest.raises(ValueError, match=r"one probability map per volume \(3\), got \[3, 2\]"):
        fit_ensemble_weights([good, noisy[:2]], labels)


def test_prepare_fits_weights_that_favour_the_right_assistant():
    teachers = [FixedTeacher(-1.0), FixedTeacher(1.0), FixedTeacher(-1.0)]  # only the second is right
    image, _ = batch()
    distiller = build_distiller("ta_ensemble", unet(), teachers, example_input=image[:1],
                                search_maxiter=5, search_popsize=5)
    assert torch.allclose(distiller.ensemble_weights, torch.full((3,), 1 / 3))
    distiller.prepare(context(volumes()))
    info = distiller.describe()["ensemble"]
    assert info["source"] == "fitted" and distiller.source == "fitted"
    assert info["val_dice_fitted"] > 0.95 and info["val_dice_uniform"] < 0.1
    w = distiller.ensemble_weights
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6) and int(w.argmax()) == 1 and float(w[1]) > 0.5


def test_training_step_with_tiny_unets_through_prepare():
    image, label = batch()
    teachers = [unet((6, 12, 24), seed=1), unet((8, 16, 32), seed=2)]
    distiller = build_distiller("ta_ensemble", unet(), teachers, example_input=image[:1],
                                search_maxiter=3, search_popsize=4)
    distiller.prepare(context(volumes(1)))
    assert distiller.source == "fitted"
    assert distiller.describe()["ensemble"]["val_dice_fitted"] >= distiller.describe()["ensemble"]["val_dice_uniform"]
    distiller.train()
    optimizer = torch.optim.Adam(distiller.trainable_parameters(), lr=0.01)
    before = {k: v.clone() for k, v in distiller.state_dict().items()}
    logits, terms = distiller.forward_train(image, label)
    assert logits.shape == (2, 2, *PATCH) and list(terms) == ["dice", "lovasz", "kl"]
    assert all(t.ndim == 0 and torch.isfinite(t) and t.requires_grad for t in terms.values())
    distiller.total_loss(terms).backward()
    optimizer.step()
    after = distiller.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert any(k.startswith("student.") for k in changed)
    assert not any(k.startswith("teachers.") for k in changed)
    assert distiller.stat_names() == ["ensemble_w0", "ensemble_w1"] and sorted(distiller.stats) == sorted(
        distiller.stat_names())
    assert math.isclose(sum(float(v) for v in distiller.stats.values()), 1.0, rel_tol=1e-5)


def test_explicit_weights_are_normalised_and_checked():
    image, _ = batch()
    teachers = [FixedTeacher(1.0), FixedTeacher(-1.0)]
    with pytest.raises(ValueError, match=r"'ensemble_weights' needs one weight per teaching assistant \(2\), got 3"):
        build_distiller("ta_ensemble", unet(), teachers, example_input=image[:1], ensemble_weights=[1, 1, 1])
    with pytest.raises(ValueError, match=r"^option 'ensemble_weights' must be null or a non-empty list"):
        build_distiller("ta_ensemble", unet(), teachers, example_input=image[:1], ensemble_weights=[1, -1])
    with pytest.raises(ValueError, match=r"^option 'search_popsize' must be an integer >= 1, got 0$"):
        build_distiller("ta_ensemble", unet(), teachers, example_input=image[:1], search_popsize=0)
    distiller = build_distiller("ta_ensemble", unet(), teachers, example_input=image[:1], ensemble_weights=[3, 1])
    distiller.prepare(context(volumes()))  # no search: the given weights stay
    assert distiller.source == "explicit"
    assert torch.allclose(distiller.ensemble_weights, torch.tensor([0.75, 0.25]))
    assert distiller.describe()["ensemble"]["val_dice_fitted"] is None


def test_without_validation_volumes_the_weights_stay_uniform_with_a_warning():
    image, _ = batch()
    distiller = build_distiller("ta_ensemble", unet(), [FixedTeacher(1.0), FixedTeacher(-1.0)],
                                example_input=image[:1])
    with pytest.warns(UserWarning, match="no validation volumes"):
        distiller.prepare(context([]))
    assert distiller.source == "uniform" and torch.allclose(distiller.ensemble_weights, torch.full((2,), 0.5))


def test_fitted_weights_survive_a_checkpoint_and_are_not_refitted(monkeypatch):
    image, _ = batch()

    def make() -> torch.nn.Module:
        return build_distiller("ta_ensemble", unet(), [FixedTeacher(-1.0), FixedTeacher(1.0)],
                               example_input=image[:1], search_maxiter=3, search_popsize=4)

    first = make()
    first.prepare(context(volumes(1)))
    state = first.learned_state_dict()
    assert set(state) == {"ensemble_weights", "weights_source", "fitted_dice", "uniform_dice"}
    second = make()
    second.load_learned_state_dict({k: v.clone() for k, v in state.items()})

    def no_search(*args, **kwargs):
        raise AssertionError("a resumed run must not search again")

    monkeypatch.setattr(ta_ensemble, "fit_ensemble_weights", no_search)
    second.prepare(context(volumes(1), resumed=True))
    assert torch.equal(second.ensemble_weights, first.ensemble_weights) and second.source == "fitted"
    assert second.describe()["ensemble"] == first.describe()["ensemble"]
