"""Run a bundle's ONNX export with onnxruntime: inference without torch or MONAI.

The bundle's ``model.json`` names the export and the SHA-256 of the weights it was
made from (``onnx.file``, ``onnx.weights_sha256``); an export whose weights have
since changed is refused, so the ONNX and torch paths always run the same model.
Written by :mod:`ProstateKDLib.onnx_export`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from typing import Any

import numpy as np

from .errors import BundleError, DeviceError

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported here (without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def weights_sha256(bundle: Any) -> str:
    """SHA-256 (hex) of the bundle's weights file."""
    return hashlib.sha256(bundle.read_file(bundle.meta.weights)).hexdigest()


def check_export_current(bundle: Any) -> None:
    """Refuse a bundle without an ONNX export, or one exported from other weights.

    Raises:
        BundleError: ``<bundle>: model.json names no ONNX export ...`` or
            ``<bundle>: <file> was exported from other weights than <weights> ...``.
    """
    meta = bundle.meta
    if meta.onnx_file is None:
        raise BundleError(
            f"{bundle.path}: model.json names no ONNX export; add one with "
            f"'python -m ProstateKDLib.onnx_export {bundle.path}' or use --backend torch"
        )
    if weights_sha256(bundle) != meta.onnx_weights_sha256:
        raise BundleError(
            f"{bundle.path}: {meta.onnx_file} was exported from other weights than {meta.weights}; "
            f"re-export it with 'python -m ProstateKDLib.onnx_export {bundle.path}' or use --backend torch"
        )


def choose_providers(device: str, available: list[str]) -> tuple[list[Any], str]:
    """onnxruntime providers and the device name for ``auto|cpu|cuda|cuda:N``.

    Raises:
        DeviceError: malformed name, ``mps`` (torch only), or CUDA without onnxruntime's CUDA provider.
    """
    from .device import DEVICE_PATTERN

    name = device.strip().lower() if isinstance(device, str) else ""
    if not DEVICE_PATTERN.match(name):
        raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if name == "mps":
        raise DeviceError("device mps needs the torch backend (--backend torch); onnxruntime runs on cpu or cuda")
    if name == "cpu" or (name == "auto" and CUDA_PROVIDER not in available):
        return [CPU_PROVIDER], "cpu"
    if CUDA_PROVIDER not in available:
        raise DeviceError(
            f"device {name} is not available to onnxruntime: it has no CUDA provider "
            f"(install onnxruntime-gpu, or use --backend torch; available: {', '.join(available)})"
        )
    index = int(name.split(":")[1]) if ":" in name else 0
    return [(CUDA_PROVIDER, {"device_id": index}), CPU_PROVIDER], f"cuda:{index}"


class OnnxNetwork:
    """The bundle's network as an onnxruntime session: float32 (B, C, x, y, z) -> logits.

    Args:
        bundle: a loaded :class:`~ProstateKDLib.bundle.ModelBundle` with an ONNX export.
        device: ``auto`` (CUDA provider when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        num_threads: CPU threads for onnxruntime (``None``: its default).
    """

    def __init__(self, bundle: Any, device: str = "auto", num_threads: int | None = None) -> None:
        import onnxruntime

        check_export_current(bundle)
        providers, self.device = choose_providers(device, onnxruntime.get_available_providers())
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                bundle.read_file(bundle.meta.onnx_file), options, providers=providers
            )
        except Exception as exc:  # corrupt or foreign file
            text = str(exc).strip().splitlines()
            raise BundleError(
                f"{bundle.path}: cannot load {bundle.meta.onnx_file}: {text[0] if text else type(exc).__name__}"
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Logits for one batch (float32, C-contiguous)."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
