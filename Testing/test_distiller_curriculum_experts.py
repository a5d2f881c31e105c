"""``curriculum_experts``: expert ladder order, difficulty, curriculum selection, a real step."""

from __future__ import annotations

import pytest
import torch

from conftest import batch, unet
from training.distillers import DISTILLERS, build_distiller
from training.distillers import curriculum_experts
from training.distillers.curriculum_experts import (
    disagreement_difficulty,
    select_experts,
    student_loss_difficulty,
    unlocked_experts,
)
from training.losses import SoftmaxKLDivLoss

PATCH = (16, 16, 8)


class Expert(torch.nn.Module):
    """Confident logits from a 1x1x1 convolution of a {-1, +1} image (the label, up to noise).

    ``shift``: on sample 1 only, the prediction is rolled by (x, y) voxels (a disagreeing
    expert); ``extra`` unused parameters set the expert's size on the ladder.
    """

    def __init__(self, extra: int, shift: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)
        self.size = torch.nn.Parameter(torch.zeros(extra))
        self.shift = shift
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([-4.0, 4.0]).view(2, 1, 1, 1, 1)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return torch.cat([out[:1], torch.roll(out[1:], self.shift, dims=(2, 3))])


def experts_distiller(teachers, **options):
    image, _ = batch()
    return build_distiller("curriculum_experts", unet(), teachers, example_input=image[:1],
                           student_layers=["model.1.submodule"], teacher_layers=["conv"], **options).train()


def test_registered_with_formula_and_reference():
    cls = DISTILLERS.get("curriculum_experts")
    assert cls.name == "curriculum_experts" and list(cls.loss_names) == ["dice", "lovasz", "kl", "feature"]
    assert cls.__doc__ and "L = " in curriculum_experts.__doc__ and "Bengio" in curriculum_experts.__doc__


def test_selection_sends_easy_samples_to_small_and_hard_to_large_experts():
    difficulty = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0])
    assert select_experts(difficulty, 1.0, 3, ramp=0.5).tolist() == [0, 0, 1, 2, 2]
    assert select_experts(difficulty, 0.0, 3, ramp=0.5).tolist() == [0, 0, 0, 0, 0]  # only the smallest yet
    assert select_experts(difficulty, 0.0, 3, ramp=0.5, start_experts=2).tolist() == [0, 0, 1, 1, 1]
    assert select_experts(difficulty, 0.0, 3, ramp=0.0).tolist() == [0, 0, 1, 2, 2]  # no ramp: all unlocked
    counts = [unlocked_experts(p / 20, 4, ramp=0.5) for p in range(21)]
    assert counts[0] == 1 and counts[10] == 4 and counts[-1] == 4
    assert all(a <= b for a, b in zip(counts, counts[1:])) and set(counts) == {1, 2, 3, 4}
    with pytest.raises(ValueError, match=r"start_experts must be in \[1, 3\], got 4"):
        unlocked_experts(0.5, 3, 0.5, 4)


def test_difficulties():
    _, label = batch()
    onehot = torch.cat([1 - label, label], 1).float()
    good = 6 * onehot - 3
    assert torch.allclose(disagreement_difficulty([good, good.clone()]), torch.zeros(2), atol=1e-6)
    half_wrong = good.clone()
    half_wrong[1] = -good[1]
    d = disagreement_difficulty([good, half_wrong])
    assert d[0] < 1e-6 and d[1] > 0.95
    s = student_loss_difficulty(torch.cat([good[:1], -good[1:]]), label)
    assert s[0] < 0.01 and s[1] > 0.95


def test_experts_are_sorted_by_size_whatever_the_config_order():
    teachers = [unet((8, 16, 32), seed=1), unet((4, 8, 16), seed=2), unet((6, 12, 24), seed=3)]
    image, _ = batch()
    distiller = build_distiller("curriculum_experts", unet(), teachers, example_input=image[:1])
    assert distiller.expert_order == [1, 2, 0]
    assert distiller.expert_sizes == sorted(distiller.expert_sizes)
    assert [id(t) for t in distiller.teachers] == [id(teachers[i]) for i in (1, 2, 0)]
    assert [e["teacher"] for e in distiller.describe()["experts"]] == [1, 2, 0]


def test_hard_samples_move_to_larger_experts_as_the_curriculum_unlocks_them():
    image, label = batch()
    # config order deliberately not by size; sample 0: all agree (easy); sample 1 (box x 2:8, y 6:14):
    # three disjoint predictions (hard, d close to 1)
    teachers = [Expert(30, shift=(6, 0)), Expert(10, shift=(0, 8)), Expert(0)]
    distiller = experts_distiller(teachers)
    assert distiller.expert_order == [2, 1, 0]
    chosen, unlocked = [], []
    for epoch in range(1, 6):  # ramp 0.5 of 5 epochs: all 3 unlocked from epoch 3
        distiller.start_epoch(epoch, 5)
        logits, terms = distiller.forward_train(image, label)
        chosen.append(distiller.last_experts.tolist())
        unlocked.append(int(distiller.stats["unlocked"]))
    assert [c[0] for c in chosen] == [0] * 5  # the easy sample stays with the smallest expert
    assert [c[1] for c in chosen] == [0, 1, 2, 2, 2]  # min(c - 1, floor(c · d))
    assert unlocked == [1, 2, 3, 3, 3]
    assert distiller.last_difficulty[0] < 1e-3 and distiller.last_difficulty[1] > 0.95
    assert float(distiller.stats["expert_mean"]) == 1.0
    # KL from the chosen expert only: expert 0 (smallest) on sample 0, expert 2 (largest) on sample 1
    z = [t(image) for t in distiller.teachers]
    target = torch.cat([z[0][:1], z[2][1:]])
    expected = SoftmaxKLDivLoss(2.0)(logits, target)
    assert float(terms["kl"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_student_loss_difficulty_through_the_distiller():
    image, label = batch()
    distiller = experts_distiller([Expert(0), Expert(5, shift=(0, 8))], difficulty="student_loss")
    distiller.start_epoch(5, 5)
    logits, terms = distiller.forward_train(image, label)
    expected = student_loss_difficulty(logits.detach(), label)
    assert torch.allclose(distiller.last_difficulty, expected)
    assert distiller.last_experts.tolist() == select_experts(expected, 1.0, 2).tolist()
    assert distiller._student_logits is None  # not kept after the step


def test_option_checks():
    image, _ = batch()
    with pytest.raises(ValueError, match=r"'start_experts' must be at most the number of teachers \(2\), got 3"):
        experts_distiller([Expert(0), Expert(5)], start_experts=3)
    with pytest.raises(ValueError, match=r"^option 'ramp' must be a number in \[0, 1\], got 2$"):
        experts_distiller([Expert(0), Expert(5)], ramp=2)
    with pytest.raises(ValueError, match=r"^option 'difficulty' must be one of disagreement, student_loss"):
        experts_distiller([Expert(0), Expert(5)], difficulty="entropy")
    with pytest.raises(ValueError, match=r"needs at least 2 teachers, got 1"):
        experts_distiller([Expert(0)])


@pytest.mark.parametrize("difficulty", ["disagreement", "student_loss"])
def test_training_step_with_tiny_unets(difficulty):
    image, label = batch()
    teachers = [unet((8, 16, 32), seed=1), unet((6, 12, 24), seed=2)]
    distiller = build_distiller("curriculum_experts", unet(), teachers, example_input=image[:1],
                                difficulty=difficulty).train()
    distiller.start_epoch(2, 3)
    optimizer = torch.optim.Adam(distiller.trainable_parameters(), lr=0.01)
    before = {k: v.clone() for k, v in distiller.state_dict().items()}
    logits, terms = distiller.forward_train(image, label)
    assert logits.shape == (2, 2, *PATCH) and list(terms) == ["dice", "lovasz", "kl", "feature"]
    assert all(t.ndim == 0 and torch.isfinite(t) and t.requires_grad for t in terms.values())
    distiller.total_loss(terms).backward()
    optimizer.step()
    after = distiller.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert any(k.startswith("student.") for k in changed)
    assert not any(k.startswith("teachers.") for k in changed)
    assert distiller.stat_names() == ["expert_mean", "unlocked", "difficulty"]
    assert sorted(distiller.stats) == sorted(distiller.stat_names())
    assert all(torch.isfinite(v) for v in distiller.stats.values())
