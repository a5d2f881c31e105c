"""KD losses: Lovász (against brute force), softened KL, feature distillation, Dice factory."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    FeatureAdapter,
    FeatureDistillationLoss,
    FeatureHooks,
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
    SoftmaxKLDivLoss,
    default_feature_layers,
    dice_loss,
    feature_channels,
    lovasz_extension,
    lovasz_grad,
    pair_feature_layers,
)
from ProstateKDLib.networks import build_network


# ------------------------------------------------------------ brute-force Lovász
def jaccard_set_loss(mispredicted: np.ndarray, gt: np.ndarray) -> float:
    """Δ_J(M) = |M| / |G ∪ M|, evaluated on explicit sets (0 for M = ∅)."""
    m = {i for i, x in enumerate(mispredicted) if x}
    g = {i for i, x in enumerate(gt) if x}
    return len(m) / len(g | m) if m else 0.0


def chain_value(m: np.ndarray, gt: np.ndarray, order: list[int]) -> float:
    """Σ_i m_order[i] · [Δ(S_i) - Δ(S_(i-1))] along the chain given by ``order``."""
    total, previous, current = 0.0, 0.0, np.zeros(len(m), bool)
    for i in order:
        current[i] = True
        value = jaccard_set_loss(current, gt)
        total += m[i] * (value - previous)
        previous = value
    return total


def brute_lovasz(m: np.ndarray, gt: np.ndarray) -> float:
    """The Lovász extension by definition: chain of the decreasingly sorted errors."""
    return chain_value(m, gt, list(np.argsort(-m, kind="stable")))


def integral_lovasz(m: np.ndarray, gt: np.ndarray) -> float:
    """∫_0^1 Δ({i : m_i >= t}) dt for m in [0, 1]^n (a second, independent form)."""
    levels = np.concatenate([[0.0], np.unique(m)])
    return sum((hi - lo) * jaccard_set_loss(m >= hi, gt) for lo, hi in zip(levels[:-1], levels[1:]))


def ext(m: np.ndarray, gt: np.ndarray) -> float:
    return float(lovasz_extension(torch.tensor(m, dtype=torch.float64), torch.tensor(gt)))


def test_lovasz_grad_is_the_discrete_derivative_of_jaccard():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7):
        for _ in range(5):
            gt = rng.random(n) < 0.4
            expected = [
                jaccard_set_loss(np.arange(n) < i + 1, gt) - jaccard_set_loss(np.arange(n) < i, gt) for i in range(n)
            ]
            np.testing.assert_allclose(lovasz_grad(torch.tensor(gt)).numpy(), expected, atol=1e-12)
    batched = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]])
    assert lovasz_grad(batched).shape == (2, 4)
    np.testing.assert_allclose(lovasz_grad(batched).sum(-1).numpy(), [1.0, 1.0])  # Δ_J(everything) = 1


def test_lovasz_extension_equals_set_function_at_all_vertices():
    rng = np.random.default_rng(1)
    n = 8
    vertices = np.array(list(itertools.product([0.0, 1.0], repeat=n)))
    for gt in (rng.random(n) < 0.5, np.zeros(n, bool), np.ones(n, bool)):
        values = lovasz_extension(torch.tensor(vertices), torch.tensor(gt).expand(len(vertices), n))
        expected = [jaccard_set_loss(v.astype(bool), gt) for v in vertices]
        np.testing.assert_allclose(values.numpy(), expected, atol=1e-12)


def test_lovasz_extension_matches_brute_force_forms():
    rng = np.random.default_rng(2)
    for n in (1, 3, 6):
        for _ in range(6):
            m = rng.random(n)
            m[rng.random(n) < 0.2] = 0.5  # some ties
            gt = rng.random(n) < 0.5
            value = ext(m, gt)
            assert value == pytest.approx(brute_lovasz(m, gt), abs=1e-12)
            assert value == pytest.approx(integral_lovasz(m, gt), abs=1e-12)
            # Δ_J is submodular: its extension is the max over all chains (greedy = sorted)
            best = max(chain_value(m, gt, list(p)) for p in itertools.permutations(range(n)))
            assert value == pytest.approx(best, abs=1e-12)


def test_lovasz_extension_valid_mask_equals_removal():
    rng = np.random.default_rng(3)
    m, gt, valid = rng.random(12), rng.random(12) < 0.5, rng.random(12) < 0.7
    masked = lovasz_extension(torch.tensor(m), torch.tensor(gt), torch.tensor(valid))
    assert float(masked) == pytest.approx(brute_lovasz(m[valid], gt[valid]), abs=1e-12)
    with pytest.raises(ValueError, match="gt shape"):
        lovasz_extension(torch.zeros(3), torch.zeros(4))


def softmax_np(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def brute_softmax_loss(logits, labels, classes="present", per_image=True, ignore=None) -> float:
    """Lovász-Softmax by the definition, image by image and class by class."""
    probs = softmax_np(logits.numpy().astype(np.float64))
    labels = labels.numpy()[:, 0]
    b, c = probs.shape[:2]
    probs, labels = probs.reshape(b, c, -1), labels.reshape(b, -1)
    if not per_image:
        probs, labels = probs.transpose(1, 0, 2).reshape(1, c, -1), labels.reshape(1, -1)
    values = []
    for p, y in zip(probs, labels):
        keep = np.ones_like(y, bool) if ignore is None else y != ignore
        p, y = p[:, keep], y[keep]
        ids = range(c) if isinstance(classes, str) else classes
        per_class = [(brute_lovasz(np.abs((y == k) - p[k]), y == k), (y == k).any()) for k in ids]
        if classes == "present":
            per_class = [v for v, present in per_class if present]
            values.append(np.mean(per_class) if per_class else 0.0)
        else:
            values.append(np.mean([v for v, _ in per_class]))
    return float(np.mean(values))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"classes": "all"}, {"classes": [1]}, {"per_image": False}, {"ignore_index": 255}],
)
def test_lovasz_softmax_matches_brute_force(kwargs):
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 4, 3, 2, dtype=torch.float64)
    labels = torch.randint(0, 3, (3, 1, 4, 3, 2))
    labels[2] = 0  # an image with only background: "present" averages over one class
    if "ignore_index" in kwargs:
        labels[0, 0, 0] = 255
    value = LovaszSoftmaxLoss(**kwargs)(logits, labels)
    brute = brute_softmax_loss(
        logits,
        labels,
        kwargs.get("classes", "present"),
        kwargs.get("per_image", True),
        kwargs.get("ignore_index"),
    )
    assert float(value) == pytest.approx(brute, abs=1e-6)


def test_lovasz_softmax_range_gradient_and_perfect_prediction():
    torch.manual_seed(1)
    labels = torch.randint(0, 2, (2, 1, 6, 6, 4))
    loss = LovaszSoftmaxLoss()
    for scale in (0.1, 1.0, 10.0):
        logits = (scale * torch.randn(2, 2, 6, 6, 4)).requires_grad_()
        value = loss(logits, labels)
        assert 0.0 <= float(value.detach()) <= 1.0
        value.backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    perfect = 50.0 * (F.one_hot(labels[:, 0], 2).permute(0, 4, 1, 2, 3).float() * 2 - 1)
    assert float(loss(perfect, labels)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(-perfect, labels)) == pytest.approx(1.0, abs=1e-6)  # everything wrong
    # float labels (as the training loop passes them) and reduction "none"
    per_image = LovaszSoftmaxLoss(reduction="none")(perfect, labels.float())
    assert per_image.shape == (2,)


def test_lovasz_softmax_argument_errors():
    with pytest.raises(ValueError, match="classes"):
        LovaszSoftmaxLoss(classes="some")
    with pytest.raises(ValueError, match="non-negative"):
        LovaszSoftmaxLoss(classes=[-1])
    with pytest.raises(ValueError, match="reduction"):
        LovaszSoftmaxLoss(reduction="avg")
    loss = LovaszSoftmaxLoss()
    logits = torch.randn(1, 2, 4, 4, 2)
    with pytest.raises(ValueError, match="shape"):
        loss(logits, torch.zeros(1, 1, 4, 4, 3))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        loss(logits, torch.full((1, 1, 4, 4, 2), 2))
    with pytest.raises(ValueError, match="integer"):
        loss(logits, torch.full((1, 1, 4, 4, 2), 0.5))
    with pytest.raises(ValueError, match="LovaszHingeLoss"):
        loss(torch.randn(1, 1, 4, 4, 2), torch.zeros(1, 1, 4, 4, 2))
    with pytest.raises(ValueError, match="out of range"):
        LovaszSoftmaxLoss(classes=[2])(logits, torch.zeros(1, 1, 4, 4, 2))


def test_lovasz_hinge_matches_brute_force():
    torch.manual_seed(2)
    logits = torch.randn(2, 1, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 2, (2, 1, 3, 3, 2))
    value = LovaszHingeLoss()(logits, labels)
    x, y = logits.detach().numpy().reshape(2, -1), labels.numpy().reshape(2, -1)
    brute = np.mean([brute_lovasz(np.maximum(0, 1 - xi * (2 * yi - 1)), yi == 1) for xi, yi in zip(x, y)])
    assert float(value.detach()) == pytest.approx(brute, abs=1e-10)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    perfect = 5.0 * (2.0 * labels.double() - 1.0)
    assert float(LovaszHingeLoss()(perfect, labels)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="0 or 1"):
        LovaszHingeLoss()(logits, labels + 1)


# ------------------------------------------------------------------------- KL
def kl_by_hand(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Mean over voxels of Σ_c p_t log(p_t / p_s) with p = exp(z/T) / Σ exp(z/T)."""
    p_s = torch.exp(student / t) / torch.exp(student / t).sum(1, keepdim=True)
    p_t = torch.exp(teacher / t) / torch.exp(teacher / t).sum(1, keepdim=True)
    return (p_t * torch.log(p_t / p_s)).sum(1).mean()


def test_kl_zero_for_identical_inputs():
    z = torch.randn(2, 2, 4, 4, 3)
    for t in (1.0, 4.0):
        assert float(SoftmaxKLDivLoss(t)(z, z.clone())) == pytest.approx(0.0, abs=1e-6)


def test_kl_temperature_scaling():
    torch.manual_seed(3)
    student, teacher = torch.randn(2, 3, 4, 4, 2, dtype=torch.float64), torch.randn(2, 3, 4, 4, 2, dtype=torch.float64)
    for t in (1.0, 2.0, 5.0):
        expected = t**2 * kl_by_hand(student, teacher, t)
        assert float(SoftmaxKLDivLoss(t)(student, teacher)) == pytest.approx(float(expected), rel=1e-5)
    # T=2 on z equals 4 × (T=1 on z/2)
    assert float(SoftmaxKLDivLoss(2.0)(student, teacher)) == pytest.approx(
        4.0 * float(SoftmaxKLDivLoss(1.0)(student / 2, teacher / 2)), rel=1e-5
    )


def test_kl_hand_computed_value():
    ln3 = math.log(3.0)
    # two voxels along X, two classes: student p = [.5, .5], [.25, .75]; teacher p = [.75, .25], [.5, .5]
    student = torch.tensor([[0.0, 0.0], [0.0, ln3]]).T.reshape(1, 2, 2, 1, 1)
    teacher = torch.tensor([[ln3, 0.0], [0.0, 0.0]]).T.reshape(1, 2, 2, 1, 1)
    kl_1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812
    kl_2 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # 0.143841
    assert float(SoftmaxKLDivLoss(1.0)(student, teacher)) == pytest.approx((kl_1 + kl_2) / 2, rel=1e-5)
    assert (kl_1 + kl_2) / 2 == pytest.approx(0.1373265, abs=1e-6)
    # T = 2: softened p = softmax(z / 2) -> [a, b] with a = √3 / (1 + √3), b = 1 / (1 + √3)
    a, b = math.sqrt(3) / (1 + math.sqrt(3)), 1 / (1 + math.sqrt(3))
    kl_1 = a * math.log(a / 0.5) + b * math.log(b / 0.5)
    kl_2 = 0.5 * math.log(0.5 / b) + 0.5 * math.log(0.5 / a)
    assert float(SoftmaxKLDivLoss(2.0)(student, teacher)) == pytest.approx(4 * (kl_1 + kl_2) / 2, rel=1e-5)
    assert 4 * (kl_1 + kl_2) / 2 == pytest.approx(0.147185, abs=1e-5)
    none = SoftmaxKLDivLoss(1.0, reduction="none")(student, teacher)
    assert none.shape == (1, 1, 2, 1, 1)


def test_kl_gradient_reaches_only_the_student():
    student = torch.randn(2, 2, 3, 3, 2, requires_grad=True)
    teacher = torch.randn(2, 2, 3, 3, 2, requires_grad=True)
    SoftmaxKLDivLoss(2.0)(student, teacher).backward()
    assert teacher.grad is None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_kl_weights_and_stability():
    torch.manual_seed(4)
    student, teacher = torch.randn(2, 2, 4, 4, 2), torch.randn(2, 2, 4, 4, 2)
    loss = SoftmaxKLDivLoss(2.0)
    first_only = loss(student[:1], teacher[:1])
    # zero weight removes sample 1; "mean" still divides by all voxels of the batch
    assert float(loss(student, teacher, torch.tensor([1.0, 0.0]))) == pytest.approx(float(first_only) / 2, rel=1e-6)
    normalized = SoftmaxKLDivLoss(2.0, normalize_weights=True)
    assert float(normalized(student, teacher, torch.tensor([1.0, 0.0]))) == pytest.approx(float(first_only), rel=1e-6)
    # per-voxel weights (a mask) of shape (B, 1, X, Y, Z), and broadcastable (B, 1, 1, 1, 1)
    mask = torch.zeros(2, 1, 4, 4, 2)
    mask[0] = 1
    assert float(loss(student, teacher, mask)) == pytest.approx(float(first_only) / 2, rel=1e-6)
    assert float(loss(student, teacher, mask[:, :, :1, :1, :1].bool())) == pytest.approx(float(first_only) / 2, rel=1e-6)
    assert float(loss(student, teacher, torch.ones(2))) == pytest.approx(float(loss(student, teacher)), rel=1e-6)
    # huge logits: log_softmax keeps it finite
    big = SoftmaxKLDivLoss(1.0)(1e4 * student, 1e4 * teacher)
    assert torch.isfinite(big)
    with pytest.raises(ValueError, match="weights must have shape"):
        loss(student, teacher, torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        loss(student, teacher, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="same shape"):
        loss(student, teacher[:, :, :2])
    for bad in (0, -1.0, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match="temperature"):
            SoftmaxKLDivLoss(bad)


# -------------------------------------------------------------------- features
INPUT = (1, 1, 32, 32, 16)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(5)
    return build_network("unet", {"channels": [4, 8, 16, 16], "strides": [2, 2, 2]})


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(6)
    net = build_network("dynunet", {"filters": [4, 8, 16, 16, 16]})
    net.requires_grad_(False)
    return net.eval()


def test_default_layers_and_hooks_capture_shapes(student, teacher):
    s_layers = default_feature_layers("unet", student)
    assert s_layers == ["model.1.submodule.1.submodule.1.submodule", "model.1.submodule.1.submodule.2", "model.1.submodule.2"]
    t_layers = default_feature_layers("dynunet", teacher)
    assert t_layers == ["bottleneck", "upsamples.0", "upsamples.1", "upsamples.2", "upsamples.3"]
    assert default_feature_layers("dynunet", teacher, which="bottleneck") == ["bottleneck"]
    segresnet = build_network("segresnet", {"init_filters": 8})
    assert default_feature_layers("segresnet", segresnet) == ["down_layers.3", "up_layers.0", "up_layers.1", "up_layers.2"]
    x = torch.randn(*INPUT)
    with FeatureHooks(student, s_layers) as hooks:
        logits = student(x)
        shapes = [tuple(f.shape) for f in hooks.outputs()]
    assert logits.shape == (1, 2, 32, 32, 16)
    assert shapes == [(1, 16, 4, 4, 2), (1, 8, 8, 8, 4), (1, 4, 16, 16, 8)]
    assert not any(m._forward_hooks for m in student.modules())  # removed on exit
    assert feature_channels(teacher, t_layers, x) == [16, 16, 16, 8, 4]
    assert pair_feature_layers(s_layers, t_layers) == (s_layers, ["bottleneck", "upsamples.2", "upsamples.3"])


def test_wrong_layer_name_is_a_clear_error(student):
    with pytest.raises(ValueError, match=r"no submodule named 'model\.1\.submodul'.*close matches: model\.1\.submodule"):
        FeatureHooks(student, ["model.1.submodul"])
    with pytest.raises(ValueError, match="available: model, model.0"):
        feature_channels(student, ["decoder"], torch.zeros(*INPUT))
    with pytest.raises(ValueError, match="no default feature layers"):
        default_feature_layers("vnet", student)
    with pytest.raises(ValueError, match="MONAI UNet"):
        default_feature_layers("unet", build_network("segresnet", {"init_filters": 8}))


def test_feature_loss_step_trains_adapters_and_leaves_teacher_alone(student, teacher):
    s_layers, t_layers = pair_feature_layers(
        default_feature_layers("unet", student), default_feature_layers("dynunet", teacher)
    )
    x = torch.randn(*INPUT)
    loss_fn = FeatureDistillationLoss.from_models(student, teacher, s_layers, t_layers, x)
    assert [a.conv.in_channels for a in loss_fn.adapters] == [16, 8, 4]
    assert [a.conv.out_channels for a in loss_fn.adapters] == [16, 8, 4]
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    adapters_before = [p.detach().clone() for p in loss_fn.parameters()]
    student_before = [p.detach().clone() for p in student.parameters()]
    optimizer = torch.optim.SGD([*student.parameters(), *loss_fn.parameters()], lr=0.1)
    with FeatureHooks(student, s_layers) as s_hooks, FeatureHooks(teacher, t_layers) as t_hooks:
        student(x)
        teacher(x)  # not under no_grad on purpose: the loss must detach the teacher itself
        loss = loss_fn(s_hooks.outputs(), t_hooks.outputs())
    assert loss.ndim == 0 and float(loss.detach()) > 0
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(not torch.equal(a, b.detach()) for a, b in zip(adapters_before, loss_fn.parameters()))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(student_before, student.parameters()))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None for p in teacher.parameters())


@torch.no_grad()
def test_feature_loss_resamples_and_normalizes():
    torch.manual_seed(7)
    small, large = torch.randn(2, 3, 4, 4, 2), torch.randn(2, 5, 8, 8, 4)
    loss_fn = FeatureDistillationLoss([3], [5])
    adapted = F.interpolate(loss_fn.adapters[0](small), size=(8, 8, 4), mode="trilinear", align_corners=False)
    assert float(loss_fn([small], [large])) == pytest.approx(float(F.mse_loss(adapted, large)), rel=1e-5)
    # student larger than teacher: resampled first, then adapted (the two commute)
    down = FeatureDistillationLoss([5], [3])
    expected = F.interpolate(down.adapters[0](large), size=(4, 4, 2), mode="trilinear", align_corners=False)
    assert float(down([large], [small])) == pytest.approx(float(F.mse_loss(expected, small)), rel=1e-4)
    # per-sample weights: zero weight removes a sample
    weighted = loss_fn([small], [large], weights=torch.tensor([1.0, 0.0]))
    assert float(weighted) == pytest.approx(float(loss_fn([small[:1]], [large[:1]])) / 2, rel=1e-5)
    # L2 normalisation bounds the per-voxel squared distance by 4; attention needs no adapters
    l2 = FeatureDistillationLoss([3], [5], normalize="l2")
    assert 0 <= float(l2([small], [large])) <= 4.0
    attention = FeatureDistillationLoss([3, 5], [5, 7], normalize="attention", reduction="none")
    assert not list(attention.parameters())
    values = attention([small, large], [large, torch.randn(2, 7, 8, 8, 4)])
    assert values.shape == (2,) and torch.isfinite(values).all()
    with pytest.raises(ValueError, match="channels"):
        loss_fn([large], [large])
    with pytest.raises(ValueError, match="expected 1 student and teacher"):
        loss_fn([small, small], [large])
    with pytest.raises(ValueError, match="normalize"):
        FeatureDistillationLoss([3], [5], normalize="batch")
    with pytest.raises(ValueError, match="one teacher channel count per student layer"):
        FeatureDistillationLoss([3, 4], [5])
    with pytest.raises(ValueError, match="adapter expects"):
        FeatureAdapter(3, 5)(large)


# ------------------------------------------------------------------------ Dice
def test_dice_factory_uses_project_defaults():
    loss = dice_loss()
    assert (loss.include_background, loss.to_onehot_y, loss.softmax, loss.batch) == (False, True, True, True)
    labels = torch.randint(0, 2, (2, 1, 4, 4, 2))
    perfect = 50.0 * (F.one_hot(labels[:, 0], 2).permute(0, 4, 1, 2, 3).float() * 2 - 1)
    assert float(loss(perfect, labels)) == pytest.approx(0.0, abs=1e-4)
    assert dice_loss(include_background=True).include_background
