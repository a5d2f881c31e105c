"""What a case is: :class:`CaseRecord`, the image suffixes and the one label-file rule.

A case is an image ``<stem><suffix>`` and its label ``<stem>_segmentation<suffix>``
(``_Segmentation`` is accepted too: names compare case-insensitively). Every
indexer of :mod:`ProstateKDLib.datasets`, batch segmentation and the training
commands use these names, so they agree on what an image file and a label file are.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

#: Image files every reader accepts (``.nii.gz`` before ``.nii``).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: A label file is ``<image stem>`` + this + ``<image suffix>``.
LABEL_TAG = "_segmentation"
LABEL_VALUES = (0, 1, 2)


@dataclass(frozen=True)
class CaseRecord:
    """One labelled case: ``case_id`` such as ``"RUNMC/Case00"``, its site and files.

    ``channel`` picks one channel of a multi-channel image (for example T2 of the
    4D T2+ADC Decathlon volumes); ``None`` for plain 3D images. ``channels``
    (when set) makes :func:`load_case` read several channels, each preprocessed on
    its own, stacked in that order (a cross-modality teacher's input). ``label`` is
    ``None`` for an unlabelled image (:func:`~.images.index_images`).
    """

    case_id: str
    site: str
    image: Path
    label: Path
    channel: int | None = None
    channels: tuple[int, ...] | None = None


def image_suffix(name: str) -> str | None:
    """The image suffix of a file name (``.nii.gz``, ...; case-insensitive), or ``None``."""
    return next((s for s in IMAGE_SUFFIXES if name.lower().endswith(s)), None)


def is_label_name(name: str) -> bool:
    """Whether a file name is a label file (``<stem>_segmentation<suffix>``)."""
    suffix = image_suffix(name)
    return bool(suffix) and name[: -len(suffix)].lower().endswith(LABEL_TAG)


def label_name(stem: str, suffix: str) -> str:
    """The label file name of image ``<stem><suffix>``: ``<stem>_segmentation<suffix>``."""
    return f"{stem}{LABEL_TAG}{suffix}"


def find_label(files: Mapping[str, Path], stem: str, suffix: str) -> Path | None:
    """The label of image ``<stem><suffix>`` among ``{file name: path}`` (name compared case-insensitively)."""
    wanted = label_name(stem, suffix).lower()
    return next((files[n] for n in files if n.lower() == wanted), None)


def read_csv_rows(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """``(columns, rows)`` of a CSV case list: names and values stripped, unnamed columns dropped.

    Raises:
        OSError, UnicodeDecodeError, csv.Error: the file cannot be read (callers word the message).
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    return columns, rows


def resolve(base: Path, value: str) -> Path:
    """``value`` as a path: ``~`` expanded, relative ones taken from ``base`` (a case list's folder)."""
    file = Path(value).expanduser()
    return file if file.is_absolute() else base / file
