"""The multi-site folder layout: ``<root>/<SITE>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .records import LABEL_TAG, CaseRecord, image_suffix


def index_multisite(root: str | os.PathLike) -> list[CaseRecord]:
    """Cases of ``<root>/<SITE>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz``, sorted.

    Raises:
        DataError: ``data folder not found: <root>``;
            ``no cases found in <root> (expected <SITE>/CaseNN.nii.gz + CaseNN_segmentation.nii.gz)``;
            ``case <SITE>/<stem>: label file missing (expected <SITE>/<stem>_segmentation<suffix>)``;
            ``label <SITE>/<file> has no image (expected <SITE>/<stem><suffix>)``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    records: list[CaseRecord] = []
    for site_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = {p.name: p for p in site_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
        labels = {}
        for name, path in files.items():
            suffix = image_suffix(name)
            stem = name[: len(name) - len(suffix)] if suffix else ""
            if suffix and stem.lower().endswith(LABEL_TAG):
                labels[(stem[: -len(LABEL_TAG)], suffix)] = path
        used = set()
        for name in sorted(files):
            suffix = image_suffix(name)
            if suffix is None or name[: -len(suffix)].lower().endswith(LABEL_TAG):
                continue
            stem = name[: -len(suffix)]
            label = labels.get((stem, suffix))
            if label is None:
                raise DataError(
                    f"case {site_dir.name}/{stem}: label file missing "
                    f"(expected {site_dir.name}/{stem}{LABEL_TAG}{suffix})"
                )
            used.add((stem, suffix))
            records.append(CaseRecord(f"{site_dir.name}/{stem}", site_dir.name, files[name], label))
        for (stem, suffix), path in sorted(labels.items()):
            if (stem, suffix) not in used:
                raise DataError(f"label {site_dir.name}/{path.name} has no image (expected {site_dir.name}/{stem}{suffix})")
    if not records:
        raise DataError(f"no cases found in {root} (expected <SITE>/CaseNN.nii.gz + CaseNN_segmentation.nii.gz)")
    return records
