"""Run a bundle's network with torch (and MONAI's network classes) on numpy arrays."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np


def torch_available() -> bool:
    """Whether torch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None


class TorchNetwork:
    """The bundle's torch network: float32 numpy (B, C, x, y, z) -> numpy logits.

    ``module`` is the torch module; it may be replaced by any callable on tensors
    (e.g. a timing wrapper). ``device`` is the ``torch.device`` it runs on.
    """

    def __init__(self, bundle: Any, device: str = "auto", num_threads: int | None = None) -> None:
        import torch

        from .device import resolve_device

        self.device = resolve_device(device)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.module = bundle.build_network().to(self.device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits for one batch."""
        import torch

        with torch.inference_mode():
            output = self.module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device))
        return output.float().cpu().numpy()
