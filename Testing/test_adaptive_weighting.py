"""Adaptive multi-teacher weights measured where the teachers did not train (reliability ``held_out``)."""

from __future__ import annotations

import pytest
import torch

from conftest import PATCH, batch, unet
from ProstateKDLib.errors import DataError
from training.distillers import TrainingContext, build_distiller
from training.distillers.multi_teacher_adaptive import held_out_teacher_weights


class Memoriser(torch.nn.Module):
    """A teacher that has seen its training images: perfect on exactly those, all background elsewhere."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images.clone())
        self.register_buffer("labels", labels.clone())
        self.conv = torch.nn.Conv3d(1, 2, 1)  # a layer whose features the distiller reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        out = torch.tensor([4.0, -4.0]).view(1, 2, 1, 1, 1).expand_as(features).clone()
        for b in range(x.shape[0]):
            for image, label in zip(self.images, self.labels):
                if image.shape == x[b].shape and torch.equal(image, x[b]):
                    fg = label.float() * 2 - 1  # {-1, +1}
                    out[b] = torch.cat([-4 * fg, 4 * fg])
        return out + 0.0 * features


class Shifted(torch.nn.Module):
    """A teacher that generalises imperfectly: thresholds the image one voxel off (Dice about 0.8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([-4.0, 4.0]).view(2, 1, 1, 1, 1)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.roll(x, shifts=1, dims=2))


def adaptive(teachers, reliability: str, image: torch.Tensor):
    """The adaptive distiller over ``teachers`` (features read from each teacher's ``conv``)."""
    return build_distiller("multi_teacher_adaptive", unet(), teachers, example_input=image[:1],
                           student_layers=["model.1.submodule"], teacher_layers=["conv"], reliability=reliability)


def test_a_teacher_never_gets_the_top_weight_on_its_own_training_cases_for_having_seen_them():
    train_image, train_label = batch(0)  # site A's training cases: the memoriser trained on them
    val_image, val_label = batch(1)      # held-out validation cases of sites A and B
    memoriser, generalist = Memoriser(train_image, train_label), Shifted()
    teachers = [memoriser, generalist]

    label_based = adaptive(teachers, "dice", train_image).train()
    label_based.forward_train(train_image, train_label)
    assert (label_based.last_weights[:, 0] > label_based.last_weights[:, 1]).all()  # the old rule rewards having seen it

    fair = adaptive(teachers, "held_out", train_image).train()
    fair.prepare(TrainingContext(val_volumes=[(val_image[0], val_label[0]), (val_image[1], val_label[1])],
                                 patch_size=PATCH, batch_size=2, epochs=1, device=torch.device("cpu"),
                                 train_sites=["A", "A"], val_sites=["A", "B"]))
    fair.batch_case_index = torch.tensor([0, 1])
    fair.forward_train(train_image, train_label)
    assert (fair.last_weights[:, 1] > fair.last_weights[:, 0]).all()  # on the memoriser's own training cases
    table = fair.describe()
    assert table["held_out_dice"]["A"][0] == 0.0 and table["held_out_dice"]["A"][1] > 0.5
    assert set(table["site_weights"]) == {"*", "A", "B"}
    assert all(abs(sum(row) - 1) < 1e-3 for row in table["site_weights"].values())


def test_held_out_weights_stay_soft_at_the_documented_temperature():
    logits = [torch.zeros(1, 2, 4, 4, 2), torch.zeros(1, 2, 4, 4, 2)]  # equal confidence
    out = held_out_teacher_weights(logits, torch.tensor([[0.80, 0.75]]), tau=0.1, confidence_weight=0.2)
    assert out["weights"][0].tolist() == pytest.approx([0.6225, 0.3775], abs=1e-3)  # the docstring's example


def test_held_out_reliability_needs_prepare_and_validation_cases():
    image, label = batch(0)
    fair = adaptive([Shifted(), Shifted()], "held_out", image).train()
    with pytest.raises(RuntimeError, match="reliability 'held_out' is measured in prepare"):
        fair.forward_train(image, label)
    with pytest.raises(DataError, match="needs validation cases, and this run has none"):
        fair.prepare(TrainingContext(val_volumes=[], patch_size=PATCH, batch_size=2, epochs=1,
                                     device=torch.device("cpu")))
