"""Cases saved from Slicer: ``<root>/dataset_index.csv`` next to the multi-site folders.

The Slicer module's "save as training case"
(:func:`ProstateKDLib.training_case.save_training_case`) writes the image and the
corrected mask into a multi-site data folder and appends a row to
``<root>/dataset_index.csv`` with the columns ``case_id, site, image, label,
source, added`` (paths relative to ``<root>`` or absolute; ``source`` says
where the case came from, ``added`` when, as ISO 8601; an optional ``channel``
column is read too). :func:`index_multisite_root` joins those rows to the
folder scan; a row whose image the scan already found is not listed twice.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import DataError
from .multisite import index_multisite
from .records import CaseRecord, image_suffix, read_csv_rows, resolve

SAVED_INDEX = "dataset_index.csv"
SAVED_COLUMNS = ("case_id", "site", "image", "label", "source", "added")
_REQUIRED = ("case_id", "site", "image", "label")


def read_saved_cases(path: str | os.PathLike) -> list[tuple[int, CaseRecord]]:
    """``(line, record)`` for each row of a ``dataset_index.csv`` (paths relative to its folder).

    Raises:
        DataError: ``dataset_index.csv: missing column 'site' (columns: case_id,site,image,label,source,added)``;
            ``dataset_index.csv line <n>: case_id, site, image and label must all be given``;
            ``dataset_index.csv line <n>: channel must be a non-negative integer, got 'x'``;
            ``dataset_index.csv line <n>: duplicate case <id>``;
            ``case <id>: image file not found: <path>`` (or ``label file``).
    """
    path = Path(path).expanduser()
    try:
        columns, rows = read_csv_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise DataError(f"{path.name}: missing column '{missing[0]}' (columns: {','.join(SAVED_COLUMNS)})")
    result: list[tuple[int, CaseRecord]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue
        if not all(row.get(k) for k in _REQUIRED):
            raise DataError(f"{path.name} line {line}: case_id, site, image and label must all be given")
        channel = None
        if row.get("channel"):
            if not row["channel"].isdigit():
                raise DataError(f"{path.name} line {line}: channel must be a non-negative integer, got {row['channel']!r}")
            channel = int(row["channel"])
        image, label = (resolve(path.parent, row[k]) for k in ("image", "label"))
        case_id = row["case_id"]
        if case_id in seen:
            raise DataError(f"{path.name} line {line}: duplicate case {case_id}")
        seen.add(case_id)
        for kind, file in (("image", image), ("label", label)):
            if not file.is_file():
                raise DataError(f"case {case_id}: {kind} file not found: {file}")
        result.append((line, CaseRecord(case_id, row["site"], image, label, channel)))
    return result


def _has_site_cases(root: Path) -> bool:
    """True when some ``<root>/<SITE>/`` folder holds an image or label file."""
    return any(
        any(p.is_file() and not p.name.startswith(".") and image_suffix(p.name) for p in site.iterdir())
        for site in root.iterdir()
        if site.is_dir() and not site.name.startswith(".")
    )


def index_multisite_root(root: str | os.PathLike) -> list[CaseRecord]:
    """:func:`~ProstateKDLib.datasets.multisite.index_multisite` plus the rows of ``<root>/dataset_index.csv``.

    A row whose image file the folder scan found already is dropped (the scan's
    record is kept). Without ``dataset_index.csv`` this is exactly ``index_multisite``.

    Raises:
        DataError: messages of ``index_multisite`` and :func:`read_saved_cases`, or
            ``dataset_index.csv line <n>: case <id> is also in the folder scan with another image (<path>)``.
    """
    root = Path(root).expanduser()
    saved_csv = root / SAVED_INDEX
    if not root.is_dir() or not saved_csv.is_file():
        return index_multisite(root)
    saved = read_saved_cases(saved_csv)
    scanned = index_multisite(root) if (_has_site_cases(root) or not saved) else []
    by_image = {r.image.resolve() for r in scanned}
    by_id = {r.case_id: r for r in scanned}
    records = list(scanned)
    for line, record in saved:
        if record.image.resolve() in by_image:
            continue
        if record.case_id in by_id:
            raise DataError(
                f"{SAVED_INDEX} line {line}: case {record.case_id} is also in the folder scan "
                f"with another image ({by_id[record.case_id].image})"
            )
        records.append(record)
    return sorted(records, key=lambda r: r.case_id)
