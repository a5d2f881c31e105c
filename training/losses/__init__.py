"""Loss functions for knowledge distillation of segmentation students.

A distiller combines them, e.g. (Ben Loussaief et al. 2023) the student loss
Dice + Lovász + KL(softened teacher || student) + feature distillation:

- :func:`dice_loss`: MONAI ``DiceLoss`` with the project's defaults;
- :class:`LovaszSoftmaxLoss` / :class:`LovaszHingeLoss`: Lovász extension of the
  Jaccard loss (Berman et al. 2018), helpers :func:`lovasz_grad`, :func:`lovasz_extension`;
- :class:`SoftmaxKLDivLoss`: ``T² · KL(p_teacher^T || p_student^T)`` per voxel, with
  per-sample or per-voxel weights;
- :class:`FeatureHooks`, :class:`FeatureAdapter`, :class:`FeatureDistillationLoss`,
  :func:`feature_channels`, :func:`default_feature_layers`, :func:`pair_feature_layers`:
  feature (hint) distillation through forward hooks.

Shapes: logits (B, C, X, Y, Z); labels (B, 1, X, Y, Z) integer class indices.
"""

from .dice import dice_loss
from .feature import (
    FeatureAdapter,
    FeatureDistillationLoss,
    FeatureHooks,
    default_feature_layers,
    feature_channels,
    pair_feature_layers,
    resolve_modules,
)
from .kl import SoftmaxKLDivLoss
from .lovasz import LovaszHingeLoss, LovaszSoftmaxLoss, lovasz_extension, lovasz_grad

__all__ = [
    "dice_loss",
    "LovaszSoftmaxLoss",
    "LovaszHingeLoss",
    "lovasz_grad",
    "lovasz_extension",
    "SoftmaxKLDivLoss",
    "FeatureHooks",
    "FeatureAdapter",
    "FeatureDistillationLoss",
    "feature_channels",
    "default_feature_layers",
    "pair_feature_layers",
    "resolve_modules",
]
