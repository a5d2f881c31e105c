"""Unlabelled image folders: every image of ``<root>/<SITE>/<name><suffix>`` (or a flat ``<root>``).

Label files (``*_segmentation*``) are skipped, so a labelled multi-site folder lists its images
too. Each image becomes a :class:`~.records.CaseRecord` with ``label=None``; its case id is
``<SITE>/<name>`` (``<name>`` for a flat folder, site ``"unlabelled"``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .records import CaseRecord, image_suffix, is_label_name

FLAT_SITE = "unlabelled"


def index_images(root: str | os.PathLike) -> list[CaseRecord]:
    """Image records (no labels) under ``root``, sorted by case id.

    Raises:
        DataError: ``root`` is not a folder, or holds no image.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"unlabelled images: {base} is not a folder")
    records = []
    for folder, site in [(base, None)] + [(d, d.name) for d in sorted(base.iterdir()) if d.is_dir()]:
        for path in sorted(folder.iterdir()):
            suffix = image_suffix(path.name)
            if not path.is_file() or suffix is None or is_label_name(path.name) or path.name.startswith("."):
                continue
            stem = path.name[: -len(suffix)]
            case_id = stem if site is None else f"{site}/{stem}"
            records.append(CaseRecord(case_id, site or FLAT_SITE, path, None))  # type: ignore[arg-type]
    if not records:
        raise DataError(f"unlabelled images: no image files in {base} or its site folders")
    return sorted(records, key=lambda r: r.case_id)
