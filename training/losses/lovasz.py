"""Lovász-Softmax and Lovász hinge losses (Berman, Rannen Triki, Blaschko, CVPR 2018).

The Jaccard loss of one class, as a function of the set ``M`` of mispredicted
voxels, is the submodular set function

    Δ_J(M) = |M| / |G ∪ M|        (Δ_J(∅) = 0),

with ``G`` the ground-truth voxels of the class. Its Lovász extension is a
convex, piecewise-linear interpolation of Δ_J to real error vectors ``m``::

    Δ̄_J(m) = Σ_i m_π(i) · [Δ_J(S_i) - Δ_J(S_(i-1))]

where ``π`` orders ``m`` decreasingly and ``S_i = {π(1), …, π(i)}`` are the
``i`` voxels with the largest errors. For the Lovász-Softmax loss the error of
voxel ``v`` for class ``c`` is ``|1[y_v = c] - p_c(v)|`` with ``p`` the softmax
probabilities; for the binary Lovász hinge it is ``max(0, 1 - s_v · y±_v)``
with ``s`` the logit and ``y± ∈ {-1, +1}``.

The code follows the formulas of the paper (it is not derived from the
authors' reference implementation).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .tensor_checks import as_float, check_labels, check_reduction, check_tensor, reduce

__all__ = ["lovasz_grad", "lovasz_extension", "LovaszSoftmaxLoss", "LovaszHingeLoss"]


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Increments of the Jaccard loss along a chain of growing error sets.

    For ground truth sorted by decreasing error, returns ``g`` with
    ``g[..., i] = Δ_J(S_(i+1)) - Δ_J(S_i)``, where ``S_i`` holds the first
    ``i`` voxels and ``Δ_J(S) = |S| / |G ∪ S|``; ``g`` is the gradient of the
    Lovász extension with respect to the sorted errors.

    Args:
        gt_sorted: (..., N) binary (0/1 or bool) ground truth in sorted order.

    Returns:
        float64 tensor of shape (..., N); every entry is in [0, 1] and each row sums
        to Δ_J(all voxels) (1, or 0 for N = 0).
    """
    gt = gt_sorted.to(torch.float64)
    n = gt.shape[-1]
    if n == 0:
        return gt.clone()
    n_fg = gt.sum(-1, keepdim=True)  # |G|
    size = torch.arange(1, n + 1, dtype=torch.float64, device=gt.device)  # |S_i|
    false_pos = size - gt.cumsum(-1)  # |S_i \ G|
    jaccard = size / (n_fg + false_pos)  # |S_i| / |G ∪ S_i|; denominator >= 1
    return torch.diff(jaccard, dim=-1, prepend=torch.zeros_like(jaccard[..., :1]))


def lovasz_extension(
    errors: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Lovász extension of the Jaccard loss at the error vectors ``errors``.

    Args:
        errors: (..., N) float errors (typically in [0, 1]); gradients flow to them.
        gt: (..., N) binary ground truth (the set ``G``), same shape as ``errors``.
        valid: optional (..., N) bool mask; voxels where it is False are left out,
            exactly as if they were removed from the vectors.

    Returns:
        tensor of shape ``errors.shape[:-1]``.

    Raises:
        ValueError: ``gt`` or ``valid`` does not have the shape of ``errors``.
    """
    if gt.shape != errors.shape:
        raise ValueError(f"gt shape {tuple(gt.shape)} must equal errors shape {tuple(errors.shape)}")
    gt = gt.bool()
    if valid is not None:
        if valid.shape != errors.shape:
            raise ValueError(f"valid shape {tuple(valid.shape)} must equal errors shape {tuple(errors.shape)}")
        valid = valid.bool()
        # Left-out voxels sort after every real one and are not ground truth, so they
        # change neither the chain S_1, S_2, ... nor |G|; their terms are masked below.
        lowest = torch.full_like(errors, torch.finfo(errors.dtype).min)
        errors = torch.where(valid, errors, lowest)
        gt = gt & valid
    errors_sorted, order = torch.sort(errors, dim=-1, descending=True)
    grad = lovasz_grad(gt.gather(-1, order)).to(errors.dtype)
    terms = errors_sorted * grad
    if valid is not None:
        terms = torch.where(valid.gather(-1, order), terms, torch.zeros_like(terms))
    return terms.sum(-1)


def _check_per_image_and_ignore(per_image: bool, ignore_index: int | None) -> None:
    if not isinstance(per_image, bool):
        raise TypeError(f"per_image must be a bool, got {type(per_image).__name__}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be None or an int, got {ignore_index!r}")


class LovaszSoftmaxLoss(nn.Module):
    """Multi-class Lovász-Softmax loss: a convex surrogate of the mean Jaccard (IoU) loss.

    For each class ``c`` the Lovász extension of the Jaccard loss is evaluated at
    the errors ``|1[y = c] - p_c|`` over all voxels of an image (``per_image=True``)
    or of the whole batch, then averaged over classes. The value lies in [0, 1]
    and is 0 for a perfect one-hot prediction.

    Args:
        classes: ``"present"`` (default): average over the classes present in the
            ground truth of the image (an image with none gives 0); ``"all"``: every
            class; or a sequence of class indices (e.g. ``[1]`` for the gland only).
        per_image: compute the loss per image and reduce over the batch; if False one
            loss is computed over all voxels of the batch.
        ignore_index: label value whose voxels are left out (may be >= C, e.g. 255).
        softmax: apply a softmax over the channel dimension (``input`` are logits);
            if False, ``input`` must already be probabilities.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the images; with
            ``per_image=False`` there is one value (``"none"`` gives shape (1,)).

    Raises:
        ValueError: invalid ``classes`` or ``reduction``.
        TypeError: ``per_image`` not a bool, ``ignore_index`` not None/int.

    Example:
        >>> loss = LovaszSoftmaxLoss()
        >>> loss(torch.randn(2, 2, 8, 8, 4), torch.randint(0, 2, (2, 1, 8, 8, 4)))
    """

    def __init__(
        self,
        classes: str | Sequence[int] = "present",
        per_image: bool = True,
        ignore_index: int | None = None,
        softmax: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if isinstance(classes, str):
            if classes not in ("present", "all"):
                raise ValueError(f'classes must be "present", "all" or a sequence of class indices, got {classes!r}')
            self.classes: str | tuple[int, ...] = classes
        else:
            try:
                indices = tuple(classes)
            except TypeError:
                raise ValueError(
                    f'classes must be "present", "all" or a sequence of class indices, got {classes!r}'
                ) from None
            if not indices:
                raise ValueError("classes must not be empty")
            if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in indices):
                raise ValueError(f"classes must be non-negative ints, got {list(indices)}")
            if len(set(indices)) != len(indices):
                raise ValueError(f"classes must be unique, got {list(indices)}")
            self.classes = indices
        _check_per_image_and_ignore(per_image, ignore_index)
        self.per_image = per_image
        self.ignore_index = ignore_index
        self.softmax = bool(softmax)
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``input`` (B, C, *spatial) logits against ``target`` (B, 1, *spatial) class indices.

        Raises:
            ValueError: wrong shapes, C < 2, non-integer labels, labels outside
                [0, C) (other than ``ignore_index``), or a class index >= C.
        """
        input = check_tensor("input", input)
        n_classes = input.shape[1]
        if n_classes < 2:
            raise ValueError(
                f"LovaszSoftmaxLoss needs C >= 2 channels, got input {tuple(input.shape)}; "
                "use LovaszHingeLoss for one binary logit"
            )
        labels = check_labels(target, input, "target")
        batch = input.shape[0]
        probs = torch.softmax(as_float(input), dim=1) if self.softmax else as_float(input)
        probs = probs.reshape(batch, n_classes, -1)
        labels = labels.reshape(batch, -1)
        valid = None if self.ignore_index is None else labels != self.ignore_index
        checked = labels if valid is None else labels[valid]
        if checked.numel() and (int(checked.min()) < 0 or int(checked.max()) >= n_classes):
            raise ValueError(
                f"target values must be class indices in [0, {n_classes})"
                + ("" if self.ignore_index is None else f" or ignore_index {self.ignore_index}")
                + f", got range [{int(checked.min())}, {int(checked.max())}]"
            )
        if isinstance(self.classes, tuple):
            if max(self.classes) >= n_classes:
                raise ValueError(f"classes {list(self.classes)} out of range for input with {n_classes} channels")
            class_ids = list(self.classes)
        else:
            class_ids = list(range(n_classes))

        if not self.per_image:  # the whole batch as one image
            probs = probs.transpose(0, 1).reshape(1, n_classes, -1)
            labels = labels.reshape(1, -1)
            valid = None if valid is None else valid.reshape(1, -1)

        ids = torch.tensor(class_ids, device=labels.device)
        fg = labels[:, None, :] == ids[None, :, None]  # (B', K, N)
        errors = (fg.to(probs.dtype) - probs[:, class_ids]).abs()
        mask = None if valid is None else valid[:, None, :].expand_as(fg)
        per_class = lovasz_extension(errors, fg, mask)  # (B', K)

        if self.classes == "present":
            present = (fg if mask is None else fg & mask).any(-1).to(per_class.dtype)
            per_image = (per_class * present).sum(-1) / present.sum(-1).clamp(min=1.0)
        else:
            per_image = per_class.mean(-1)
        return reduce(per_image, self.reduction)


class LovaszHingeLoss(nn.Module):
    """Binary Lovász hinge loss for a single foreground logit per voxel.

    The Lovász extension of the foreground Jaccard loss is evaluated at the hinge
    errors ``max(0, 1 - s · y±)`` where ``s`` is the logit and ``y± = 2y - 1``.

    Args:
        per_image: compute the loss per image and reduce over the batch; if False one
            loss is computed over all voxels of the batch.
        ignore_index: label value whose voxels are left out.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the images (see
            :class:`LovaszSoftmaxLoss`).

    Raises:
        ValueError: invalid ``reduction``.
        TypeError: ``per_image`` not a bool, ``ignore_index`` not None/int.
    """

    def __init__(self, per_image: bool = True, ignore_index: int | None = None, reduction: str = "mean") -> None:
        super().__init__()
        _check_per_image_and_ignore(per_image, ignore_index)
        self.per_image = per_image
        self.ignore_index = ignore_index
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``input`` (B, 1, *spatial) logits against binary ``target`` (B, 1, *spatial).

        Raises:
            ValueError: wrong shapes, more than one channel, labels other than 0/1
                (and ``ignore_index``).
        """
        input = check_tensor("input", input)
        if input.shape[1] != 1:
            raise ValueError(
                f"LovaszHingeLoss needs one channel (a foreground logit), got input {tuple(input.shape)}; "
                "use LovaszSoftmaxLoss for C >= 2"
            )
        labels = check_labels(target, input, "target")
        batch = input.shape[0] if self.per_image else 1
        logits = as_float(input).reshape(batch, -1)
        labels = labels.reshape(batch, -1)
        valid = None if self.ignore_index is None else labels != self.ignore_index
        checked = labels if valid is None else labels[valid]
        if checked.numel() and (int(checked.min()) < 0 or int(checked.max()) > 1):
            raise ValueError(
                "target values must be 0 or 1 for LovaszHingeLoss, "
                f"got range [{int(checked.min())}, {int(checked.max())}]"
            )
        fg = labels == 1
        signs = fg.to(logits.dtype) * 2.0 - 1.0
        errors = torch.relu(1.0 - logits * signs)
        return reduce(lovasz_extension(errors, fg, valid), self.reduction)
