"""The Medical Segmentation Decathlon layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``).

``dataset.json`` lists ``training: [{"image": "./imagesTr/x.nii.gz", "label":
"./labelsTr/x.nii.gz"}]``, the image channels in ``modality`` (Task05
Prostate: ``{"0": "T2", "1": "ADC"}``, 4D images) and the label names in
``labels`` (Task05: ``{"0": "background", "1": "PZ", "2": "TZ"}``). Cases get
the id ``<site>/<image stem>``; the site is ``MSD`` unless a training entry
has a ``site`` key. The zones are merged to gland by the readers of
:mod:`~ProstateKDLib.datasets` like every other label.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import DataError
from .records import CaseRecord, image_suffix

MSD_DESCRIPTOR = "dataset.json"
MSD_SITE = "MSD"
DEFAULT_MODALITY = "T2"


def read_msd_descriptor(root: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``dataset.json`` of an MSD task folder.

    Raises:
        DataError: ``dataset.json not found in <root>``; ``cannot read <file>: <reason>``;
            ``<file> has no 'training' list (not a Medical Segmentation Decathlon dataset.json)``.
    """
    path = Path(root).expanduser() / MSD_DESCRIPTOR
    if not path.is_file():
        raise DataError(f"{MSD_DESCRIPTOR} not found in {Path(root).expanduser()}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise DataError(f"{path} has no 'training' list (not a Medical Segmentation Decathlon dataset.json)")
    return data


def msd_modalities(descriptor: dict[str, Any]) -> list[str]:
    """Channel names in channel order (``["T2", "ADC"]`` for Task05; ``[]`` when not given)."""
    modality = descriptor.get("modality") or {}
    if not isinstance(modality, dict):
        return []
    try:
        items = sorted(((int(k), str(v)) for k, v in modality.items()))
    except ValueError:
        return []
    return [name for _, name in items]


def msd_default_channel(descriptor: dict[str, Any]) -> int | None:
    """The T2 channel when several are listed (first T2-named one, else 0); ``None`` for one channel."""
    names = msd_modalities(descriptor)
    if len(names) <= 1:
        return None
    for index, name in enumerate(names):
        if name.strip().upper().startswith(DEFAULT_MODALITY):
            return index
    return 0


def msd_label_names(descriptor: dict[str, Any]) -> dict[int, str]:
    """Foreground label values and names (``{1: "PZ", 2: "TZ"}`` for Task05; ``{}`` when not given)."""
    labels = descriptor.get("labels") or {}
    if not isinstance(labels, dict):
        return {}
    try:
        return {int(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0])) if int(k) != 0}
    except ValueError:
        return {}


def index_msd(root: str | os.PathLike, channel: int | None = None) -> list[CaseRecord]:
    """Cases listed in ``<root>/dataset.json`` ``training``, sorted by case id.

    Args:
        root: the task folder (holding ``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        channel: image channel; default :func:`msd_default_channel` (T2).

    Raises:
        DataError: any message of :func:`read_msd_descriptor`, or
            ``dataset.json training entry <n>: needs 'image' and 'label' paths``;
            ``channel <c> out of range: dataset.json lists <k> modalities (0: T2, 1: ADC)``;
            ``case MSD/<stem>: image file not found: <path>`` (or ``label file``);
            ``dataset.json: duplicate case MSD/<stem>``; ``dataset.json lists no training cases``.
    """
    root = Path(root).expanduser()
    descriptor = read_msd_descriptor(root)
    names = msd_modalities(descriptor)
    if channel is None:
        channel = msd_default_channel(descriptor)
    elif isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        raise ValueError(f"channel must be a non-negative int or None, got {channel!r}")
    elif names and channel >= len(names):
        listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
        raise DataError(f"channel {channel} out of range: {MSD_DESCRIPTOR} lists {len(names)} modalities ({listed})")
    records: list[CaseRecord] = []
    seen: set[str] = set()
    for number, entry in enumerate(descriptor["training"]):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry[k] for k in ("image", "label")):
            raise DataError(f"{MSD_DESCRIPTOR} training entry {number}: needs 'image' and 'label' paths")
        image, label = (root / entry[k] for k in ("image", "label"))
        site = str(entry.get("site") or MSD_SITE)
        suffix = image_suffix(image.name)
        stem = image.name[: -len(suffix)] if suffix else image.stem
        case_id = f"{site}/{stem}"
        for kind, file in (("image", image), ("label", label)):
            if not file.is_file():
                raise DataError(f"case {case_id}: {kind} file not found: {file}")
        if case_id in seen:
            raise DataError(f"{MSD_DESCRIPTOR}: duplicate case {case_id}")
        seen.add(case_id)
        records.append(CaseRecord(case_id, site, image, label, channel))
    if not records:
        raise DataError(f"{MSD_DESCRIPTOR} lists no training cases")
    return sorted(records, key=lambda r: r.case_id)
