"""nnU-Net v2 raw datasets (``dataset.json`` with ``channel_names``, ``labels``, ``file_ending``).

Layout (nnU-Net v2 ``nnUNet_raw/DatasetXXX_Name``)::

    dataset.json   {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "prostate": 1},
                    "numTraining": 32, "file_ending": ".nii.gz"}
    imagesTr/CASE_0000.nii.gz   channel 0 of CASE (one 3D file per channel)
    imagesTr/CASE_0001.nii.gz   channel 1
    labelsTr/CASE.nii.gz        the label map

Cases are the files of ``labelsTr``; each gets the id ``nnUNet/<CASE>`` and the
image file of the chosen channel (by name, default the channel named T2, or
by index). Labels are merged to gland by :mod:`~ProstateKDLib.datasets` like every
other label (nnU-Net's region-based ``labels`` entries are accepted as they are).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import DataError
from .records import CaseRecord

__all__ = ["NNUNET_SITE", "index_nnunet", "is_nnunet_v2", "nnunet_channel", "nnunet_label_names"]

DESCRIPTOR = "dataset.json"
NNUNET_SITE = "nnUNet"
DEFAULT_CHANNEL = "T2"


def is_nnunet_v2(descriptor: Any) -> bool:
    """True for an nnU-Net v2 ``dataset.json`` (``channel_names`` and ``file_ending``, no ``training`` list)."""
    return (
        isinstance(descriptor, dict)
        and isinstance(descriptor.get("channel_names"), dict)
        and isinstance(descriptor.get("file_ending"), str)
        and not isinstance(descriptor.get("training"), list)
    )


def read_descriptor(root: Path) -> dict[str, Any]:
    """The parsed ``dataset.json`` (any kind); DataError when missing or not JSON."""
    path = root / DESCRIPTOR
    if not path.is_file():
        raise DataError(f"{DESCRIPTOR} not found in {root}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object")
    return data


def nnunet_channel(descriptor: dict[str, Any], channel: int | str | None) -> int:
    """The channel index: ``channel`` as index or name (case-insensitive), default the one named T2 (else 0).

    Raises:
        DataError: ``channel <c> not in dataset.json channel_names (0: T2, 1: ADC)``.
    """
    try:
        names = {int(k): str(v) for k, v in descriptor["channel_names"].items()}
    except (TypeError, ValueError):
        raise DataError(f"{DESCRIPTOR}: channel_names keys must be channel numbers") from None
    listed = ", ".join(f"{i}: {n}" for i, n in sorted(names.items()))
    if channel is None:
        named = [i for i, n in sorted(names.items()) if n.strip().upper().startswith(DEFAULT_CHANNEL)]
        return named[0] if named else min(names, default=0)
    if isinstance(channel, bool) or not isinstance(channel, (int, str)):
        raise ValueError(f"channel must be an int, a channel name or None, got {channel!r}")
    if isinstance(channel, int) and channel in names:
        return channel
    if isinstance(channel, str):
        matches = [i for i, n in names.items() if n.strip().lower() == channel.strip().lower()]
        if matches:
            return matches[0]
        if channel.strip().isdigit() and int(channel) in names:
            return int(channel)
    raise DataError(f"channel {channel} not in {DESCRIPTOR} channel_names ({listed})")


def nnunet_label_names(descriptor: dict[str, Any]) -> dict[int, str]:
    """Foreground label values and names from ``labels`` (``{"background": 0, "PZ": 1}`` -> ``{1: "PZ"}``).

    Region-based entries (a list of values) are left out; ``{}`` when there is nothing usable.
    """
    labels = descriptor.get("labels") or {}
    if not isinstance(labels, dict):
        return {}
    return {
        value: str(name)
        for name, value in labels.items()
        if isinstance(value, int) and not isinstance(value, bool) and value != 0
    }


def index_nnunet(root: str | os.PathLike, channel: int | str | None = None) -> list[CaseRecord]:
    """Cases of an nnU-Net v2 raw dataset folder, sorted by case id.

    Raises:
        DataError: ``<root>/dataset.json is not an nnU-Net v2 dataset.json (needs channel_names and
            file_ending)``; any message of :func:`nnunet_channel`; ``labelsTr not found in <root>``;
            ``case nnUNet/<CASE>: image file not found: <root>/imagesTr/<CASE>_0000.nii.gz``;
            ``<root>: no <file_ending> label files in labelsTr``;
            ``dataset.json numTraining is <n> but labelsTr holds <m> cases``.
    """
    root = Path(root).expanduser()
    descriptor = read_descriptor(root)
    if not is_nnunet_v2(descriptor):
        raise DataError(
            f"{root / DESCRIPTOR} is not an nnU-Net v2 dataset.json (needs channel_names and file_ending)"
        )
    index = nnunet_channel(descriptor, channel)
    ending = descriptor["file_ending"]
    labels = root / "labelsTr"
    if not labels.is_dir():
        raise DataError(f"labelsTr not found in {root}")
    records = []
    for label in sorted(labels.iterdir()):
        if not label.is_file() or label.name.startswith(".") or not label.name.endswith(ending):
            continue
        case = label.name[: -len(ending)]
        image = root / "imagesTr" / f"{case}_{index:04d}{ending}"
        if not image.is_file():
            raise DataError(f"case {NNUNET_SITE}/{case}: image file not found: {image}")
        records.append(CaseRecord(f"{NNUNET_SITE}/{case}", NNUNET_SITE, image, label, None))
    if not records:
        raise DataError(f"{root}: no {ending} label files in labelsTr")
    expected = descriptor.get("numTraining")
    if isinstance(expected, int) and not isinstance(expected, bool) and expected != len(records):
        raise DataError(f"{DESCRIPTOR} numTraining is {expected} but labelsTr holds {len(records)} cases")
    return records
