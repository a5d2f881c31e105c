"""Two-channel (T2, ADC) phantoms in the Decathlon prostate layout, for cross-modality distillation tests.

:func:`adc_from_phantom` derives an ADC-like map from a T2 phantom of
:mod:`ProstateKDLib.phantom` and its label: the gland restricts diffusion (lower
ADC, about 0.9e-3 mm²/s in the central/transition zone and 1.2e-3 in the
peripheral zone) against surrounding tissue at about 1.6e-3, blurred like the
coarser diffusion acquisition, with Gaussian noise. Values are multiplied by
``scale`` (default 1e6: units of 1e-6 mm²/s, as scanners store ADC maps).
:func:`write_two_channel_case` writes T2 and ADC as one 4D NIfTI (channel 0 =
T2, 1 = ADC) like the Decathlon Task05 prostate images, and
:func:`write_two_channel_dataset` a whole Decathlon folder (``dataset.json``
with ``modality {"0": "T2", "1": "ADC"}``) that
:func:`~ProstateKDLib.datasets.index_msd` and ``--channel`` read.

Synthetic test data, not physiology: never use it to claim accuracy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import OutputError
from .phantom import write_atomic, make_phantom

ADC_GLAND = 0.9e-3  # mm²/s, central/transition zone (label 1)
ADC_PZ = 1.2e-3  # peripheral zone (label 2 of a zoned label)
ADC_BACKGROUND = 1.6e-3  # surrounding tissue
ADC_NOISE = 0.05  # Gaussian sigma relative to ADC_BACKGROUND
ADC_BLUR_MM = 1.5  # Gaussian blur (mm) of the diffusion acquisition
ADC_SCALE = 1e6  # stored value per mm²/s
MODALITIES = {"0": "T2", "1": "ADC"}


def adc_from_phantom(
    t2_image: sitk.Image, label_image: sitk.Image, seed: int = 0, scale: float = ADC_SCALE
) -> sitk.Image:
    """An ADC-like float32 map on the grid of ``t2_image``: lower inside the gland than around it.

    Args:
        t2_image: the T2 phantom (only its geometry is used).
        label_image: its label (0 background, 1 gland or central zone, 2 peripheral zone).
        seed: noise seed (deterministic for a given seed).
        scale: stored value per mm²/s (default 1e6).

    Raises:
        TypeError: not SimpleITK images.
        ValueError: images of different size, or ``scale`` not > 0.
    """
    if not isinstance(t2_image, sitk.Image) or not isinstance(label_image, sitk.Image):
        raise TypeError("t2_image and label_image must be SimpleITK images")
    if t2_image.GetSize() != label_image.GetSize():
        raise ValueError(f"t2_image {t2_image.GetSize()} and label_image {label_image.GetSize()} differ in size")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    label = sitk.GetArrayFromImage(label_image)
    adc = np.full(label.shape, ADC_BACKGROUND, dtype=np.float32)
    adc[label == 1] = ADC_GLAND
    adc[label == 2] = ADC_PZ
    smooth = sitk.GetImageFromArray(adc)
    smooth.CopyInformation(t2_image)
    smooth = sitk.SmoothingRecursiveGaussian(smooth, ADC_BLUR_MM)
    adc = sitk.GetArrayFromImage(smooth)
    rng = np.random.default_rng([int(seed), 7])
    adc += rng.normal(0.0, ADC_NOISE * ADC_BACKGROUND, adc.shape).astype(np.float32)
    np.clip(adc, 0.0, None, out=adc)
    out = sitk.GetImageFromArray((adc * np.float32(scale)).astype(np.float32))
    out.CopyInformation(t2_image)
    return out


def two_channel_image(t2_image: sitk.Image, adc_image: sitk.Image) -> sitk.Image:
    """One 4D float32 image (x, y, z, channel) with channel 0 = T2 and 1 = ADC, the 3D geometry of T2."""
    t2 = sitk.Cast(t2_image, sitk.sitkFloat32)
    adc = sitk.Cast(adc_image, sitk.sitkFloat32)
    adc.CopyInformation(t2)
    return sitk.JoinSeries([t2, adc])


def write_two_channel_case(
    seed: int,
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    site: str = "RUNMC",
    size: Sequence[int] | None = None,
    zones: bool = False,
) -> tuple[Path, Path]:
    """Write a (T2, ADC) 4D NIfTI and its label for phantom ``seed`` (atomically); returns both paths."""
    image, label = make_phantom(seed, site, None if size is None else tuple(size), zones)
    adc = adc_from_phantom(image, label, seed)
    image_path, label_path = Path(image_path), Path(label_path)
    for path in (image_path, label_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    joined = two_channel_image(image, adc)
    write_atomic(image_path, lambda p: sitk.WriteImage(joined, str(p), True))
    write_atomic(label_path, lambda p: sitk.WriteImage(label, str(p), True))
    return image_path, label_path


def write_two_channel_dataset(
    root: str | os.PathLike,
    cases: int = 4,
    seed: int = 0,
    site: str = "RUNMC",
    size: Sequence[int] | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Write a Decathlon-layout folder of two-channel phantoms: ``imagesTr/``, ``labelsTr/``, ``dataset.json``.

    Case ``n`` uses phantom seed ``seed + n``. Returns one dict per case
    (``case``, ``seed``, ``image``, ``label``).

    Raises:
        OutputError: ``dataset.json`` exists and ``overwrite`` is false.
        ValueError: ``cases`` < 1.
    """
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        raise ValueError(f"cases must be an integer >= 1, got {cases!r}")
    root = Path(root)
    descriptor = root / "dataset.json"
    if descriptor.exists() and not overwrite:
        raise OutputError(f"{descriptor} exists (use overwrite to replace it)")
    records, training = [], []
    for n in range(cases):
        name = f"prostate_{n:02d}.nii.gz"
        image, label = write_two_channel_case(
            seed + n, root / "imagesTr" / name, root / "labelsTr" / name, site, size
        )
        records.append({"case": name[: -len(".nii.gz")], "seed": seed + n, "image": str(image), "label": str(label)})
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "ProstatePhantomT2ADC",
        "description": "Synthetic two-channel (T2, ADC) prostate phantoms; test data only.",
        "modality": MODALITIES,
        "labels": {"0": "background", "1": "gland"},
        "numTraining": cases,
        "training": training,
    }
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(descriptor, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return records
