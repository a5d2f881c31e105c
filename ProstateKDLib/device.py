"""Choose the compute device from a user string, with clear errors."""

from __future__ import annotations

import re

from .errors import DeviceError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def available_devices() -> list[str]:
    """Devices usable here, best first-class names: ``cpu``, ``cuda:N``..., ``mps``."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str = "auto") -> "torch.device":  # noqa: F821
    """Map ``auto|cpu|cuda|cuda:N|mps`` to a usable ``torch.device``.

    ``auto`` picks the first CUDA device, then MPS, then the CPU.

    Raises:
        DeviceError: the name is malformed, or the device is not usable here
            (the message lists the devices that are).
    """
    import torch

    if not isinstance(name, str) or not DEVICE_PATTERN.match(name.strip().lower()):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    name = name.strip().lower()
    found = available_devices()
    if name == "auto":
        for candidate in found:
            if candidate != "cpu":
                return torch.device(candidate)
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if "mps" not in found:
            raise DeviceError(f"device mps is not available here (available: {', '.join(found)})")
        return torch.device("mps")
    index = int(name.split(":")[1]) if ":" in name else 0
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {name} is not available: this torch has no usable CUDA "
            f"(available: {', '.join(found)})"
        )
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {name} is not available: {torch.cuda.device_count()} CUDA device(s) found "
            f"(available: {', '.join(found)})"
        )
    return torch.device(f"cuda:{index}")
