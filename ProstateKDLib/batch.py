"""Batch segmentation: many inputs, one output folder, a ``summary.csv``.

A bad case is recorded in the summary and skipped; it never stops the batch.
A rerun keeps finished cases and the earlier summary's rows (see :func:`run_batch`).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .datasets.records import image_suffix as suffix_of_name
from .errors import CancelledError, InputError, OutputError, ProstateKDError, UsageError
from .safe_paths import check_inside, check_not_input, unsafe_case_name
from .temp_files import remove_stale_temporaries, temporary_path

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


def _holds_volumes(folder: Path) -> bool:
    return any(p.is_file() and image_suffix(p) and not _is_mask_file(p) for p in folder.iterdir())


def is_batch_input(path: str | os.PathLike) -> bool:
    """True for a CSV file or a folder of volumes or series sub-folders (not a single DICOM series folder)."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir() or _has_dicom(path):
        return False
    return _holds_volumes(path) or any(
        p.is_dir() and (_has_dicom(p) or _holds_volumes(p)) for p in path.iterdir()
    )


def wants_batch(input_path: str | os.PathLike, output: str | os.PathLike, batch: bool = False) -> bool:
    """Whether ``segment INPUT OUTPUT`` runs as a batch: never guessed from a stray file.

    A batch is asked for by ``batch`` (``--batch``), by a CSV input, or by an
    input folder with an output that is an existing folder. Any other folder is
    read as one DICOM series.

    Raises:
        UsageError: a folder of volumes (no DICOM series in it) without a way to
            tell a batch was meant: ``<input> holds volumes, not a DICOM series; to segment
            them all, give an existing output folder or add --batch``.
    """
    source, out = Path(input_path), Path(output)
    if batch or (source.is_file() and source.suffix.lower() == ".csv"):
        return True
    if not source.is_dir():
        return False
    if out.is_dir():
        return True
    if is_batch_input(source):
        raise UsageError(
            f"{input_path} holds volumes, not a DICOM series; to segment them all, "
            "give an existing output folder or add --batch"
        )
    return False


def collect_inputs(source: str | os.PathLike) -> list[BatchItem]:
    """Batch items from a folder (volumes, DICOM series sub-folders, site sub-folders) or a CSV.

    A CSV has a header with an ``image`` column and optional ``case`` and
    ``channel`` columns; relative paths are relative to the CSV's folder.
    In a folder, each volume is a case (named after the file), each DICOM
    sub-folder is one (named after the folder), a folder that is itself a
    DICOM series is one, and the volumes of a site sub-folder (the project's
    ``SITE/CaseNN.nii.gz`` layout) are cases named ``SITE_CaseNN``. Files named
    like masks (``*_segmentation.nii.gz``, ``*.seg.nrrd``) are skipped.

    Raises:
        InputError: the source is missing, empty or a malformed CSV.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"input not found: {source}")
    if source.is_file():
        items = _read_csv(source)
    else:
        items = [BatchItem(source.resolve().name, source)] if _has_dicom(source) else []
        for child in sorted(source.iterdir()):
            if child.is_file():
                items += _volume_items(child, "")
            elif child.is_dir() and _has_dicom(child):
                items.append(BatchItem(child.name, child))
            elif child.is_dir():
                for grandchild in sorted(child.iterdir()):
                    items += _volume_items(grandchild, f"{child.name}_")
    if not items:
        raise InputError(f"no input volumes found in {source}")
    names = [item.case for item in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{source}: duplicate case names {', '.join(duplicates)}")
    return items


def _volume_items(path: Path, prefix: str) -> list[BatchItem]:
    suffix = image_suffix(path)
    if not path.is_file() or not suffix or _is_mask_file(path):
        return []
    return [BatchItem(prefix + path.name[: -len(suffix)], path)]


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
    tmp = temporary_path(path, ".csv")
    try:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_summary(path: Path) -> list[dict[str, str]]:
    """The rows of an earlier run's ``summary.csv`` (empty when there is none).

    Raises:
        OutputError: ``cannot read the previous summary <path>: <reason>; move it away to start afresh``.
    """
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"case", "input", "output", "status"} <= set(reader.fieldnames):
                raise ValueError("it has no case, input, output and status columns")
            return [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
        raise OutputError(
            f"cannot read the previous summary {path}: {error}; move it away to start afresh"
        ) from None


def _plan_rerun(
    items: list[BatchItem], targets: dict[str, Path], previous: list[dict[str, str]],
    overwrite: bool, skip_existing: bool | None, outdir: Path,
) -> bool:
    """Whether finished cases are skipped; refuses (OutputError) before anything is touched."""
    if overwrite:
        return False
    existing = [case for case, target in targets.items() if target.exists() or target.is_symlink()]
    if skip_existing is not None:
        return skip_existing or not existing or _refuse(outdir, existing, "")
    same_inputs = bool(previous) and {(r["case"], r["input"]) for r in previous} == {
        (item.case, str(item.path)) for item in items
    }
    if same_inputs or not existing:
        return True
    return _refuse(outdir, existing, " from a run with other inputs")


def _refuse(outdir: Path, existing: list[str], why: str) -> bool:
    raise OutputError(
        f"{outdir} already holds masks of {len(existing)} of these cases ({', '.join(existing[:3])}"
        f"{', ...' if len(existing) > 3 else ''}){why}; use --skip-existing to keep them "
        "or --overwrite to replace them"
    )


def _targets(items: list[BatchItem], outdir: Path, suffix: str) -> dict[str, Path]:
    return {item.case: outdir / f"{item.case}_segmentation{suffix}"
            for item in items if unsafe_case_name(item.case) is None}


def check_batch_output(
    items: list[BatchItem], outdir: str | os.PathLike, suffix: str = ".nii.gz",
    overwrite: bool = False, skip_existing: bool | None = None,
) -> bool:
    """Check a batch output folder before any work (nothing is written); True when finished cases are skipped.

    Raises:
        OutputError: ``output folder does not exist: <parent>``, ``batch output must be a folder: <outdir>
            is a file``, the earlier summary cannot be read, or ``<outdir> already holds masks of <n> of
            these cases (<cases>)[ from a run with other inputs]; use --skip-existing to keep them or
            --overwrite to replace them``.
    """
    outdir = Path(outdir)
    if not outdir.parent.is_dir():
        raise OutputError(f"output folder does not exist: {outdir.parent}")
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"batch output must be a folder: {outdir} is a file")
    previous = read_summary(outdir / "summary.csv")
    return _plan_rerun(items, _targets(items, outdir, suffix), previous, overwrite, skip_existing, outdir)


def run_batch(
    items: list[BatchItem],
    outdir: str | os.PathLike,
    segment: Callable[[BatchItem, Path], Any],
    suffix: str = ".nii.gz",
    on_case: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
    skip_existing: bool | None = None,
) -> list[dict[str, Any]]:
    """Segment every item into ``outdir/<case>_segmentation<suffix>``; write ``summary.csv``.

    A rerun never loses the earlier ``summary.csv``: its rows for cases not
    run again are kept, and it is only ever replaced atomically by the merged
    rows. Which cases are segmented:

    - ``overwrite``: every case; existing masks are replaced.
    - ``skip_existing=True``: cases whose mask exists are kept as they are.
    - ``skip_existing=None`` (default): as ``True`` for a rerun with the same
      inputs (the same case names and input paths as the earlier summary) or
      when no mask of these cases exists; otherwise refused before anything is written.
    - ``skip_existing=False``: refused when a mask of these cases exists.

    A case whose name is unsafe as a file name (path separators, ``..``,
    absolute or hidden), whose output would be its own input, or would land
    outside ``outdir`` (a symbolic link) is an error row; nothing is written for it.

    Args:
        items: the inputs.
        outdir: output folder (created if its parent exists).
        segment: ``segment(item, output_path) -> SegmentationResult``; a
            :class:`ProstateKDError` (or any other exception) it raises marks
            the case failed; ``CancelledError`` stops the batch.
        suffix: output format suffix.
        on_case: called with each case's summary row (for progress display).
        overwrite: replace existing masks.
        skip_existing: see above.

    Returns:
        The summary rows of ``items``, in input order (a kept case's row has ``skipped=True``).

    Raises:
        OutputError: the folder cannot be used, the earlier summary cannot be read,
            or masks exist and neither skipping nor overwriting applies.
    """
    outdir = Path(outdir)
    skip = check_batch_output(items, outdir, suffix, overwrite, skip_existing)
    summary_path = outdir / "summary.csv"
    previous = read_summary(summary_path)
    targets = _targets(items, outdir, suffix)
    outdir.mkdir(exist_ok=True)
    remove_stale_temporaries(outdir)
    old = {row["case"]: row for row in previous}
    done: dict[str, dict[str, Any]] = {}
    order = [item.case for item in items] + [row["case"] for row in previous if row["case"] not in
                                             {item.case for item in items}]
    rows: list[dict[str, Any]] = []
    for item in items:
        row = _run_case(item, targets.get(item.case), outdir, segment, skip, old.get(item.case))
        rows.append(row)
        done[item.case] = row
        if not row.get("skipped") or item.case not in old:
            write_summary([done.get(case) or old[case] for case in order if case in done or case in old],
                          summary_path)
        if on_case is not None:
            on_case(row)
    return rows


def _run_case(
    item: BatchItem, output: Path | None, outdir: Path, segment: Callable[[BatchItem, Path], Any],
    skip: bool, previous: dict[str, str] | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"case": item.case, "input": str(item.path), "output": str(output or "")}
    if output is None:
        reason = unsafe_case_name(item.case)
        return {**row, "status": "error", "warnings": f"unsafe case name {item.case!r} ({reason}); nothing written"}
    if skip and (output.exists() or output.is_symlink()):
        if previous and previous.get("status") in ("ok", "warning") and previous.get("output") == str(output):
            return {**previous, "skipped": True}
        return {**row, "status": "skipped", "warnings": "mask exists; kept (not recomputed)", "skipped": True}
    try:
        check_inside(output, outdir)
        check_not_input(output, item.path)
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
    return row
