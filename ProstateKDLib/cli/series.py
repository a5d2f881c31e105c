"""``prostatekd series FOLDER``: list the DICOM series of a study and the one ``segment`` would use."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

COLUMNS = ("", "number", "description", "orientation", "size", "spacing mm", "files", "localizer")


def add_parser(subparsers: Any) -> None:
    """Register ``series``."""
    parser = subparsers.add_parser(
        "series",
        help="list the DICOM series in a study folder and which one 'segment' would use",
        description=(
            "List every image series under FOLDER (searched recursively): number, description, "
            "orientation, size, spacing, file count, localizer. The series 'segment FOLDER' would "
            "use is marked '*' (the axial T2; choose another with 'segment --series UID|NUMBER')."
        ),
    )
    parser.add_argument("folder", help="a DICOM study, patient or series folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``series``: 0 when a series to segment was found, 3 (an input error) when none was."""
    from ..dicom_series import choose_series, find_series
    from ..errors import InputError

    found = find_series(args.folder)
    if not found:
        raise InputError(f"no DICOM series found in folder {args.folder}")
    try:
        choice = choose_series(args.folder)
    except InputError as error:
        chosen, note = None, str(error)
    else:
        chosen, note = choice.series.uid, choice.message()
    if getattr(args, "quiet", False) and not args.json:
        if chosen is not None:
            print(chosen)  # for scripts: UID=$(prostatekd series STUDY -q)
        else:
            print(note, file=sys.stderr)
        return 0 if chosen is not None else 3
    if args.json:
        rows = [{**s.summary(), "chosen": s.uid == chosen} for s in found]
        print(json.dumps({"folder": str(args.folder), "series": rows, "chosen": chosen, "message": note}))
    else:
        print(format_table(found, chosen))
        print(note)
    return 0 if chosen is not None else 3


def format_table(found: list[Any], chosen: str | None) -> str:
    """A plain-text table of ``DicomSeries``, the chosen one marked ``*``."""
    rows = [COLUMNS]
    for series in found:
        spacing = [*(series.pixel_spacing_mm or ()), *([series.slice_spacing_mm] if series.slice_spacing_mm else [])]
        rows.append((
            "*" if series.uid == chosen else "",
            "" if series.number is None else str(series.number),
            series.name or "(no description)",
            series.orientation,
            f"{series.columns}x{series.rows}x{series.positions}",
            "x".join(f"{s:.3g}" for s in spacing),
            str(len(series.files)),
            "yes" if series.localizer else "",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    uids = [f"  {'' if s.number is None else s.number}: {s.uid}" for s in found]
    return "\n".join([*lines, "series UIDs:", *uids])


def choose_input_series(path: str, series: str | None) -> Any:
    """The ``SeriesChoice`` for a DICOM folder input, None for a file; ``--series`` needs a folder.

    Raises:
        UsageError: ``--series applies to a DICOM folder input, not <path>``.
        InputError: any message of :func:`~ProstateKDLib.dicom_series.choose_series`.
    """
    from pathlib import Path

    from ..dicom_series import choose_series
    from ..errors import UsageError

    if Path(path).is_dir():
        return choose_series(path, series)
    if series is not None:
        raise UsageError(f"--series applies to a DICOM folder input, not {path}")
    return None


def series_summary(choice: Any) -> dict[str, Any]:
    """What ``segment --json`` reports about the series it used."""
    chosen = choice.series
    return {
        "series_number": chosen.number,
        "series_uid": chosen.uid,
        "description": chosen.name,
        "orientation": chosen.orientation,
        "reason": choice.reason,
        "message": choice.message(),
    }
