"""Batch segmentation: many inputs, one output folder, a ``summary.csv``.

A bad case is recorded in the summary and skipped; it never stops the batch.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .datasets.records import image_suffix as suffix_of_name
from .errors import CancelledError, InputError, OutputError, ProstateKDError

MASK_MARKERS = ("_segmentation", ".seg", "_seg", "_mask", "_label")
SUMMARY_FIELDS = ("case", "input", "output", "status", "volume_ml", "seconds", "warnings")
DICOM_SUFFIXES = (".dcm", ".ima", "")


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch: a case name, its path and an optional channel."""

    case: str
    path: Path
    channel: int | None = None


def image_suffix(path: Path) -> str | None:
    """The known image suffix of ``path`` (``ProstateKDLib.datasets.IMAGE_SUFFIXES``), or None."""
    return suffix_of_name(path.name)


def _is_mask_file(path: Path) -> bool:
    suffix = image_suffix(path) or ""
    stem = path.name[: len(path.name) - len(suffix)].lower()
    return stem.endswith(MASK_MARKERS)


def _has_dicom(folder: Path) -> bool:
    for child in folder.iterdir():
        if child.is_file() and child.suffix.lower() in DICOM_SUFFIXES and not child.name.startswith("."):
            with open(child, "rb") as handle:
                if handle.read(132)[128:132] == b"DICM":
                    return True
    return False


def is_batch_input(path: str | os.PathLike) -> bool:
    """True for a CSV file or a folder of volumes (not a single DICOM series folder)."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir():
        return False
    return any(image_suffix(p) for p in path.iterdir() if p.is_file()) or (
        not _has_dicom(path) and any(p.is_dir() and _has_dicom(p) for p in path.iterdir())
    )


def collect_inputs(source: str | os.PathLike) -> list[BatchItem]:
    """Batch items from a folder (volumes and DICOM series subfolders) or a CSV.

    A CSV has a header with an ``image`` column and optional ``case`` and
    ``channel`` columns; relative paths are relative to the CSV's folder.
    Files named like masks (``*_segmentation.nii.gz``, ``*.seg.nrrd``) are skipped.

    Raises:
        InputError: the source is missing, empty or a malformed CSV.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"input not found: {source}")
    if source.is_file():
        items = _read_csv(source)
    else:
        items = []
        for child in sorted(source.iterdir()):
            suffix = image_suffix(child)
            if child.is_file() and suffix and not _is_mask_file(child):
                items.append(BatchItem(child.name[: -len(suffix)], child))
            elif child.is_dir() and _has_dicom(child):
                items.append(BatchItem(child.name, child))
    if not items:
        raise InputError(f"no input volumes found in {source}")
    names = [item.case for item in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{source}: duplicate case names {', '.join(duplicates)}")
    return items


def _read_csv(path: Path) -> list[BatchItem]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise InputError(f"{path}: CSV needs a header with an 'image' column")
        items = []
        for row_number, row in enumerate(reader, start=2):
            image = (row.get("image") or "").strip()
            if not image:
                raise InputError(f"{path}: line {row_number} has no image path")
            image_path = Path(image) if Path(image).is_absolute() else path.parent / image
            suffix = image_suffix(image_path) or ""
            case = (row.get("case") or "").strip() or image_path.name[: len(image_path.name) - len(suffix)]
            channel_text = (row.get("channel") or "").strip()
            if channel_text and not channel_text.isdigit():
                raise InputError(f"{path}: line {row_number} channel must be a number, got {channel_text!r}")
            items.append(BatchItem(case, image_path, int(channel_text) if channel_text else None))
    return items


def write_summary(rows: Iterable[dict[str, Any]], path: Path) -> None:
    """Write ``summary.csv`` atomically (temp file + rename)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in SUMMARY_FIELDS})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def run_batch(
    items: list[BatchItem],
    outdir: str | os.PathLike,
    segment: Callable[[BatchItem, Path], Any],
    suffix: str = ".nii.gz",
    on_case: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Segment every item into ``outdir/<case>_segmentation<suffix>``; write ``summary.csv``.

    Args:
        items: the inputs.
        outdir: output folder (created if its parent exists).
        segment: ``segment(item, output_path) -> SegmentationResult``; a
            :class:`ProstateKDError` (or any other exception) it raises marks
            the case failed; ``CancelledError`` stops the batch.
        suffix: output format suffix.
        on_case: called with each case's summary row (for progress display).

    Returns:
        The summary rows, in input order.
    """
    outdir = Path(outdir)
    if not outdir.parent.is_dir():
        raise OutputError(f"output folder does not exist: {outdir.parent}")
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"batch output must be a folder: {outdir} is a file")
    outdir.mkdir(exist_ok=True)
    summary_path = outdir / "summary.csv"
    rows: list[dict[str, Any]] = []
    for item in items:
        output = outdir / f"{item.case}_segmentation{suffix}"
        row: dict[str, Any] = {"case": item.case, "input": str(item.path), "output": str(output)}
        try:
            result = segment(item, output)
        except CancelledError:
            raise
        except ProstateKDError as exc:
            row.update(status="error", output="", warnings=str(exc))
        except Exception as exc:  # an unforeseen failure of one case must not stop the batch
            row.update(status="error", output="", warnings=f"unexpected {type(exc).__name__}: {exc}")
        else:
            row.update(
                status="warning" if result.warnings else "ok",
                volume_ml=f"{result.volume_ml:.2f}",
                seconds=f"{sum(result.timings.values()):.2f}",
                warnings="; ".join(result.warnings),
            )
        rows.append(row)
        write_summary(rows, summary_path)
        if on_case is not None:
            on_case(row)
    return rows
