"""Random training patches from preprocessed volumes held in memory.

Patch centres are drawn with MONAI's ``RandCropByPosNegLabel`` (a
``positive_fraction`` of them inside the gland), then lightly augmented:
a left-right flip (axis 0 of a RAS volume) and an intensity scale and
shift. All randomness comes from one ``numpy`` generator whose state is part
of a checkpoint, so a resumed run draws exactly the patches an uninterrupted
one would.

Under ``torchrun`` (``world_size`` > 1) the sampler shards like PyTorch's
``DistributedSampler``: every process draws the same shuffled order of
(volume, patch) slots from a shared generator, pads it to a multiple of the
world size and takes every ``world_size``-th slot from its ``rank``; the crops
and augmentations come from a per-rank generator.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

FLIP_PROBABILITY = 0.5
SCALE_RANGE = (0.9, 1.1)
SHIFT_RANGE = (-0.1, 0.1)
INTENSITY_PROBABILITY = 0.5
MAX_BACKGROUND_INDICES = 200_000


def pad_by(tensor: torch.Tensor, margins: Sequence[int]) -> torch.Tensor:
    """Pad a (C, X, Y, Z) tensor by ``margins[i]`` voxels on both sides of axis ``i`` (edge replication)."""
    pads: list[int] = []
    for margin in reversed([int(m) for m in margins]):
        pads += [margin, margin]
    if not any(pads):
        return tensor
    return F.pad(tensor[None].float(), pads, mode="replicate")[0].to(tensor.dtype)


def pad_to(tensor: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Pad a (C, X, Y, Z) tensor symmetrically to at least ``size`` by edge replication.

    Replication matches the ``replicate`` padding of sliding-window inference.
    """
    pads: list[int] = []
    for have, want in reversed(list(zip(tensor.shape[1:], size))):
        extra = max(0, int(want) - int(have))
        pads += [extra // 2, extra - extra // 2]
    if not any(pads):
        return tensor
    return F.pad(tensor[None].float(), pads, mode="replicate")[0].to(tensor.dtype)


class PatchSampler:
    """Draws augmented (image, label[, teacher]) patch batches from in-memory volumes.

    Args:
        volumes: ``(image (C, X, Y, Z) float, label (1, X, Y, Z) uint8)`` pairs, or triples
            with cached teacher maps ``teacher (T, X, Y, Z) float`` in [0, 1] (every volume
            then has T maps): they are cropped and augmented with the image (linear
            interpolation) and come out under the batch key ``teacher``.
        patch_size: (x, y, z) voxels of a patch.
        positive_fraction: share of patches centred on gland voxels.
        seed: seed of the sampling generator.
        rank, world_size: this process's shard (DistributedSampler-like) under ``torchrun``.
        augmentation: a checked ``augmentation`` config section (:mod:`training.augmentation`);
            ``None`` keeps the light built-in augmentation (flip, intensity scale and shift).
        labelled: per volume, whether its label is real (default: all). An unlabelled volume
            (label all zero) draws its gland-centred patches where its teachers' mean map is
            above 0.5, and its samples are flagged in the batch key ``labelled``.
    """

    def __init__(
        self,
        volumes: Sequence[tuple[torch.Tensor, torch.Tensor]],
        patch_size: Sequence[int],
        positive_fraction: float,
        seed: int | Sequence[int],
        rank: int = 0,
        world_size: int = 1,
        augmentation: Any = None,
        labelled: Sequence[bool] | None = None,
    ) -> None:
        from monai.transforms import RandCropByPosNegLabel
        from monai.transforms.utils import map_binary_to_indices

        if not volumes:
            raise ValueError("PatchSampler needs at least one volume")
        self.patch_size = tuple(int(p) for p in patch_size)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        seeds = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(v) for v in seed]
        self.rng = np.random.default_rng(seed if world_size == 1 else [*seeds, 1 + rank])
        self.order_rng = self.rng if world_size == 1 else np.random.default_rng(seeds)
        self._volumes: list[tuple[torch.Tensor, torch.Tensor, Any, Any]] = []
        self._augment = None
        crop = self.patch_size
        self.teacher_channels = int(volumes[0][2].shape[0]) if len(volumes[0]) > 2 else 0
        if any((int(v[2].shape[0]) if len(v) > 2 else 0) != self.teacher_channels for v in volumes):
            raise ValueError("every volume needs the same number of teacher maps")
        self.labelled = [True] * len(volumes) if labelled is None else [bool(v) for v in labelled]
        if len(self.labelled) != len(volumes):
            raise ValueError(f"labelled has {len(self.labelled)} flags for {len(volumes)} volumes")
        if not all(self.labelled) and not self.teacher_channels:
            raise ValueError("unlabelled volumes need teacher maps (they have no label to train on)")
        if augmentation is not None:
            from .augmentation import build_augmentation, crop_size

            crop = crop_size(augmentation, self.patch_size)
            keys = ("image", "label", "teacher") if self.teacher_channels else ("image", "label")
            self._augment = build_augmentation(augmentation, self.patch_size, keys)
        # every voxel of the volume can be a patch centre: pad by the crop's extra margin
        margins = [(c - p + 1) // 2 for c, p in zip(crop, self.patch_size)]
        self.image_channels = int(volumes[0][0].shape[0])
        for volume, has_label in zip(volumes, self.labelled):
            image, label, *teacher = volume
            stacked = pad_to(pad_by(torch.cat([image.float(), *[t.float() for t in teacher], label.float()]),
                                    margins), crop)
            where = stacked[-1:] if has_label else stacked[self.image_channels : -1].mean(0, keepdim=True)
            fg, bg = map_binary_to_indices(where > 0.5)
            bg = bg[:: max(1, len(bg) // MAX_BACKGROUND_INDICES)]  # evenly thinned: less memory
            self._volumes.append((stacked, stacked[-1:], fg, bg))
        self._cropper = RandCropByPosNegLabel(
            spatial_size=crop,
            pos=positive_fraction,
            neg=1.0 - positive_fraction,
            num_samples=1,
        )

    last_indices: list[int] = []

    def __len__(self) -> int:
        return len(self._volumes)

    def state_dict(self) -> dict[str, Any]:
        """The generator state (plain ints and strings; with ``order`` under torchrun)."""
        state = dict(self.rng.bit_generator.state)
        if self.world_size > 1:
            state["order"] = dict(self.order_rng.bit_generator.state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        state = dict(state)
        order = state.pop("order", None)
        self.rng.bit_generator.state = state
        if self.world_size > 1 and order is not None:
            self.order_rng.bit_generator.state = order

    def slots(self, patches_per_volume: int) -> int:
        """Patches this process draws per epoch."""
        return -(-len(self._volumes) * patches_per_volume // self.world_size)

    def iterations(self, patches_per_volume: int, batch_size: int) -> int:
        """Batches per epoch (of this process)."""
        return -(-self.slots(patches_per_volume) // batch_size)

    def patch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented (image (1, x, y, z), label (1, x, y, z)) patch of volume ``index``."""
        sample = self.sample(index)
        return sample["image"], sample["label"]

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        """One augmented patch of volume ``index``: ``image``, ``label`` and (with maps) ``teacher``."""
        stacked, label, fg, bg = self._volumes[index]
        self._cropper.set_random_state(seed=int(self.rng.integers(2**31)))
        crop = self._cropper(stacked, label=label, fg_indices=fg, bg_indices=bg)[0]
        crop = crop.as_tensor() if hasattr(crop, "as_tensor") else crop
        c = self.image_channels
        parts = {"image": crop[:c], "label": crop[-1:]}
        if self.teacher_channels:
            parts["teacher"] = crop[c:-1]
        if self._augment is not None:
            from .augmentation import augment

            out = augment(self._augment, parts, int(self.rng.integers(2**31)))
            result = {"image": out["image"].float().contiguous(), "label": (out["label"] > 0.5).to(torch.uint8)}
            if self.teacher_channels:
                result["teacher"] = out["teacher"].float().clamp(0.0, 1.0).contiguous()
            return result
        if self.rng.random() < FLIP_PROBABILITY:
            crop = torch.flip(crop, dims=[1])
        image, target = crop[:c].clone(), crop[-1:]  # image channels first, the label last
        if self.rng.random() < INTENSITY_PROBABILITY:
            image *= float(self.rng.uniform(*SCALE_RANGE))
        if self.rng.random() < INTENSITY_PROBABILITY:
            image += float(self.rng.uniform(*SHIFT_RANGE))
        result = {"image": image, "label": (target > 0.5).to(torch.uint8)}
        if self.teacher_channels:
            result["teacher"] = crop[c:-1].float().contiguous()
        return result

    def epoch(self, patches_per_volume: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(B, 1, x, y, z)`` image and uint8 label for one epoch.

        Every volume gives ``patches_per_volume`` patches, in shuffled order;
        the last batch may be smaller. After each batch, :attr:`last_indices` holds
        the volume index of each of its patches.
        """
        for batch in self.batches(patches_per_volume, batch_size):
            yield batch["image"], batch["label"]

    def batches(self, patches_per_volume: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """As :meth:`epoch`, but each batch is a dict: ``image``, ``label``, ``labelled`` (B,) bool and,
        with cached maps, ``teacher`` (B, T, x, y, z)."""
        order = self.order_rng.permutation(np.repeat(np.arange(len(self._volumes)), patches_per_volume))
        if self.world_size > 1:
            order = np.concatenate([order, order[: (-len(order)) % self.world_size]])[self.rank :: self.world_size]
        for start in range(0, len(order), batch_size):
            self.last_indices = [int(i) for i in order[start : start + batch_size]]
            samples = [self.sample(i) for i in self.last_indices]
            batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
            batch["labelled"] = torch.as_tensor([self.labelled[i] for i in self.last_indices], dtype=torch.bool)
            yield batch
