"""Distillation methods, one module each, registered by name in :data:`DISTILLERS`.

A distiller wraps the student (and frozen teachers) and turns a batch into
named loss terms; the training loop only sums them with the configured
weights. Add a method by writing one module with a registered
:class:`~ProstateKDLib.distillers.base.Distiller` subclass and importing it here.
"""

from __future__ import annotations

from .base import DISTILLERS, Distiller, build_distiller
from . import none  # noqa: F401  (registers "none")

__all__ = ["DISTILLERS", "Distiller", "build_distiller"]
