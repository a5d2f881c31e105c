"""A CSV case list: columns ``image,label[,site]``, paths relative to the CSV."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .records import CaseRecord, image_suffix, read_csv_rows, resolve


def read_case_csv(path: str | os.PathLike) -> list[CaseRecord]:
    """Cases listed in a CSV with columns ``image,label[,site]`` (paths relative to the CSV).

    The case id is ``<site>/<image stem>`` (site defaults to ``default``).

    Raises:
        DataError: file missing, columns missing, a file missing, or duplicate case ids.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"case list not found: {path}")
    columns, rows = read_csv_rows(path)
    missing = [c for c in ("image", "label") if c not in columns]
    if missing:
        raise DataError(f"case list {path.name}: missing column '{missing[0]}' (columns: image,label[,site])")
    records: list[CaseRecord] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if not row["image"] or not row["label"]:
            raise DataError(f"case list {path.name} line {line}: image and label must both be given")
        image, label = (resolve(path.parent, row[k]) for k in ("image", "label"))
        site = row.get("site") or "default"
        suffix = image_suffix(image.name)
        stem = image.name[: -len(suffix)] if suffix else image.stem
        case_id = f"{site}/{stem}"
        for kind, file in (("image", image), ("label", label)):
            if not file.is_file():
                raise DataError(f"case {case_id}: {kind} file not found: {file}")
        if case_id in seen:
            raise DataError(f"case list {path.name} line {line}: duplicate case {case_id}")
        seen.add(case_id)
        records.append(CaseRecord(case_id, site, image, label))
    if not records:
        raise DataError(f"case list {path.name} lists no cases")
    return records
