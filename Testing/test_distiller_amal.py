"""``amal``: per-instance supervised/distillation mixing weights meta-learned by a look-ahead step."""

from __future__ import annotations

import pytest
import torch

from conftest import unet
from training.distillers import TrainingContext, build_distiller
from training.distillers.amal import per_sample_supervised_loss

PATCH = (16, 16, 8)


def cube_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright cube labelled as gland in noise: image (1, X, Y, Z), label (1, X, Y, Z)."""
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(1, *PATCH, dtype=torch.uint8)
    x, y = 2 + seed % 5, 3 + (seed * 3) % 5
    label[:, x : x + 8, y : y + 7, 2:6] = 1
    image = label.float() * 2 - 1 + 0.3 * torch.randn(1, *PATCH, generator=g)
    return image, label


class Oracle(torch.nn.Module):
    """A 'teacher' that reads the gland off the image (bright = gland): the right answer for every case."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([-4 * image, 4 * image], dim=1)


def make(student=None, **options):
    example = cube_case(0)[0][None]
    return build_distiller("amal", student or unet(), [Oracle()], example_input=example, **options)


def test_terms_are_mixed_per_sample_and_train_the_student():
    distiller = make().train()
    cases = [cube_case(s) for s in range(2)]
    distiller.prepare(TrainingContext(val_volumes=[cube_case(9)], patch_size=PATCH, batch_size=2, epochs=1,
                                      device=torch.device("cpu"), train_case_ids=["a", "b"]))
    image, label = torch.stack([c[0] for c in cases]), torch.stack([c[1] for c in cases])
    distiller.batch_case_index = torch.tensor([1, 0])
    before = distiller.instance_weights()
    assert torch.allclose(before, torch.full((2,), 0.5))
    logits, terms = distiller.forward_train(image, label)
    assert list(terms) == ["supervised", "kd"] and logits.shape == (2, 2, *PATCH)
    assert all(torch.isfinite(t) and t.requires_grad for t in terms.values())
    assert not torch.equal(distiller.instance_weights(), before)  # the look-ahead moved both instances
    distiller.total_loss(terms).backward()
    assert all(p.grad is not None for p in distiller.student.parameters())
    assert sorted(distiller.stats) == sorted(distiller.stat_names())


def test_per_sample_supervised_loss_is_low_for_the_right_answer():
    _, label = cube_case(1)
    good = torch.cat([(1 - label.float()) * 8 - 4, label.float() * 8 - 4])[None]
    bad = torch.cat([label.float() * 8 - 4, (1 - label.float()) * 8 - 4])[None]
    losses = per_sample_supervised_loss(torch.cat([good, bad]), torch.stack([label, label]))
    assert losses.shape == (2,) and losses[0] < 0.1 < 1.0 < losses[1]


def test_corrupted_label_ends_up_with_a_lower_supervised_weight():
    """Four training cases, case 2's label is inverted; held-out data and the teacher are right."""
    torch.manual_seed(0)
    distiller = make(unet(seed=1), meta_lr=0.2, lookahead_lr=0.5).train()
    cases = [cube_case(s) for s in range(4)]
    corrupted = 2
    cases[corrupted] = (cases[corrupted][0], 1 - cases[corrupted][1])
    distiller.prepare(TrainingContext(val_volumes=[cube_case(s) for s in (10, 11, 12)], patch_size=PATCH,
                                      batch_size=2, epochs=1, device=torch.device("cpu"),
                                      train_case_ids=[f"case{i}" for i in range(4)]))
    optimizer = torch.optim.Adam(distiller.trainable_parameters(), lr=0.01)
    pairs = [[0, 1], [2, 3], [0, 2], [1, 3], [0, 3], [1, 2]] * 2  # every case in 6 batches
    for pair in pairs:
        image = torch.stack([cases[i][0] for i in pair])
        label = torch.stack([cases[i][1] for i in pair])
        distiller.batch_case_index = torch.tensor(pair)
        optimizer.zero_grad()
        _, terms = distiller.forward_train(image, label)
        distiller.total_loss(terms).backward()
        optimizer.step()
    weights = distiller.instance_weights()
    clean = [weights[i] for i in range(4) if i != corrupted]
    assert weights[corrupted] < min(clean) - 0.05, weights  # measured: 0.16 vs 0.29
    assert weights[corrupted] < 0.5  # moved down from the prior


def test_mixing_weights_survive_a_checkpoint_and_resume():
    distiller = make()
    distiller.prepare(TrainingContext(val_volumes=[], patch_size=PATCH, batch_size=2, epochs=1,
                                      device=torch.device("cpu"), train_case_ids=["a", "b", "c"]))
    distiller.mix_logits[1] = -2.0
    state = distiller.learned_state_dict()
    other = make()
    other.load_learned_state_dict(state)
    other.prepare(TrainingContext(val_volumes=[], patch_size=PATCH, batch_size=2, epochs=1,
                                  device=torch.device("cpu"), resumed=True, train_case_ids=["a", "b", "c"]))
    assert torch.equal(other.mix_logits, distiller.mix_logits)


@pytest.mark.parametrize("options, message", [
    ({"initial_weight": 1.0}, r"option 'initial_weight' must be a number strictly between 0 and 1"),
    ({"meta_batch_size": 0}, r"option 'meta_batch_size' must be an integer >= 1"),
    ({"lookahead_lr": -1}, r"option 'lookahead_lr' must be a number > 0"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        make(**options)


def test_needs_a_teacher():
    with pytest.raises(ValueError, match=r"distiller 'amal' needs at least 1 teacher, got 0"):
        build_distiller("amal", unet(), [])
