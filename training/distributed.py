"""Multi-process training under ``torchrun``, detected from the environment.

``torchrun --nproc_per_node N -m training.cli train ...`` sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init_distributed` then joins
the process group (``nccl`` on CUDA, ``gloo`` on the CPU) and gives each process
its device (``cuda:LOCAL_RANK`` on CUDA). Without those variables (or with
``WORLD_SIZE=1``) nothing changes: one process, no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DistContext:
    """Rank and size of the process group (``enabled`` False for a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and run.json."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1.

    Args:
        device: the device the config asked for (already resolved).

    Returns:
        the context and the device this process trains on.
    """
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local_rank, backend), device


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op for one process)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_mean(ctx: DistContext, values: list[float], device: torch.device) -> list[float]:
    """Mean of ``values`` over processes (element-wise)."""
    if not ctx.enabled or not values:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / ctx.world_size).tolist()


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` for one process)."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class TrainStep(torch.nn.Module):
    """Wraps a distiller so DistributedDataParallel runs its ``forward_train``."""

    def __init__(self, distiller: torch.nn.Module) -> None:
        super().__init__()
        self.distiller = distiller

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> Any:
        return self.distiller.forward_train(image, label)


BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


def sync_batch_norm(distiller: torch.nn.Module, device: torch.device) -> None:
    """Turn the batch norms of the student and the adapters (not the frozen teachers) into SyncBatchNorm.

    Raises:
        ConfigError: batch norm on a device SyncBatchNorm cannot run on (it needs CUDA).
    """
    from ProstateKDLib.errors import ConfigError

    trained = [(name, child) for name, child in distiller.named_children() if name != "teachers"]
    if not any(isinstance(m, BATCH_NORMS) for _, child in trained for m in child.modules()):
        return
    if device.type != "cuda":
        raise ConfigError(
            f"batch-norm networks train under torchrun only on CUDA (SyncBatchNorm keeps their statistics equal "
            f"across processes), not on {device.type}; use instance norm (model.kwargs norm: instance) or one process"
        )
    for name, child in trained:
        setattr(distiller, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))


def wrap_ddp(distiller: torch.nn.Module, ctx: DistContext, device: torch.device) -> Any:
    """A callable ``(image, label) -> (logits, terms)``: DDP-wrapped when distributed.

    Batch norms of the student and adapters become SyncBatchNorm (:func:`sync_batch_norm`).
    """
    if not ctx.enabled:
        return distiller.forward_train
    import warnings

    sync_batch_norm(distiller, device)

    from torch.nn.parallel import DistributedDataParallel

    with warnings.catch_warnings():  # newer torch renames broadcast_buffers; False keeps rank-local buffers
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(
            TrainStep(distiller),
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
        )
