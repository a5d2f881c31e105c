"""Save an image and its (corrected) gland mask as a new training case.

Layout (what :func:`ProstateKDLib.datasets.index_multisite` reads)::

    <dataset>/<SITE>/CaseNN.nii.gz               the image
    <dataset>/<SITE>/CaseNN_segmentation.nii.gz  its label (0 background, 1 gland)
    <dataset>/dataset_index.csv                  one row per saved case

``NN`` continues after the highest case number already in the site folder
(two digits from ``00``; numbers freed by deleting a case are not reused), and
an existing case is never overwritten: both files are written to hidden
temporary names first and then claimed with an exclusive create (a hard
link), so two savers racing for the same number cannot both win.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .datasets.records import IMAGE_SUFFIXES, LABEL_TAG
from .datasets.saved import SAVED_COLUMNS, SAVED_INDEX
from .errors import InputError, OutputError

INDEX_FILE = SAVED_INDEX  # the index :mod:`ProstateKDLib.datasets.saved` reads
INDEX_COLUMNS = SAVED_COLUMNS
IMAGE_SUFFIX = ".nii.gz"  # what a saved case is written as
SITE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_CASE_FILE = re.compile(
    rf"^case(\d+)(?:{LABEL_TAG})?(?:{'|'.join(re.escape(s) for s in IMAGE_SUFFIXES)})$", re.IGNORECASE
)
_MAX_ATTEMPTS = 1000


@dataclass(frozen=True)
class TrainingCase:
    """Where a saved case went: its id (``SITE/CaseNN``) and absolute paths."""

    case_id: str
    image: Path
    label: Path
    index: Path


def check_site(site: str) -> str:
    """Return ``site`` stripped, or raise InputError when it cannot be a folder name."""
    if not isinstance(site, str) or not SITE_PATTERN.match(site.strip()):
        raise InputError(
            f"site {site!r} is not usable as a folder name; use letters, digits, '-' or '_' "
            "(for example RUNMC or MYHOSPITAL)"
        )
    return site.strip()


def next_case_number(site_dir: Path) -> int:
    """One more than the highest ``CaseNN`` image or label in ``site_dir`` (0 when none)."""
    if not site_dir.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in site_dir.iterdir() if (m := _CASE_FILE.match(p.name))]
    return max(numbers) + 1 if numbers else 0


def case_stem(number: int) -> str:
    """``Case00``, ``Case01``, ... ``Case99``, ``Case100``."""
    return f"Case{number:02d}"


def save_training_case(
    image: Any,
    label: Any,
    dataset_dir: str | os.PathLike,
    site: str,
    source: str = "slicer-correction",
) -> TrainingCase:
    """Write ``image`` and ``label`` (SimpleITK, same grid) as the next case of ``site``.

    The label is written as uint8 with every non-zero voxel set to 1 (gland).
    ``dataset_dir`` must exist; the site folder is created when missing.

    Raises:
        InputError: bad site name, 4D/vector image, grids that differ, or an empty label.
        OutputError: the dataset folder is missing or not writable, or writing fails.
    """
    import numpy as np
    import SimpleITK as sitk

    site = check_site(site)
    if not os.fspath(dataset_dir) or not Path(dataset_dir).expanduser().is_dir():
        raise OutputError(f"dataset folder does not exist: {dataset_dir}")
    root = Path(dataset_dir).expanduser().resolve()
    for what, item in (("image", image), ("label", label)):
        if item.GetDimension() != 3 or item.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"the {what} must be a 3D single-channel volume")
    _check_same_grid(image, label)
    values = sitk.GetArrayViewFromImage(label)
    if not np.any(values):
        raise InputError("the segmentation is empty; nothing to save as a training case")
    binary = sitk.GetImageFromArray((values != 0).astype(np.uint8))
    binary.CopyInformation(label)

    site_dir = root / site
    try:
        site_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {site_dir}: {error.strerror or error}") from None
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    temporary = {"image": site_dir / f".new-{token}{IMAGE_SUFFIX}",
                 "label": site_dir / f".new-{token}{LABEL_TAG}{IMAGE_SUFFIX}"}
    try:
        _write(image, temporary["image"])
        _write(binary, temporary["label"])
        number, image_path, label_path = _claim_case(site_dir, temporary["image"], temporary["label"])
    finally:
        for path in temporary.values():
            _remove_quietly(path)
    case_id = f"{site}/{case_stem(number)}"
    index = append_index_row(root, case_id, site, image_path, label_path, source)
    return TrainingCase(case_id, image_path, label_path, index)


def _check_same_grid(image: Any, label: Any, tol: float = 1e-4) -> None:
    import numpy as np

    same = (
        image.GetSize() == label.GetSize()
        and np.allclose(image.GetSpacing(), label.GetSpacing(), atol=tol)
        and np.allclose(image.GetOrigin(), label.GetOrigin(), atol=tol)
        and np.allclose(image.GetDirection(), label.GetDirection(), atol=tol)
    )
    if not same:
        raise InputError("the segmentation and the image are not on the same voxel grid")


def _write(image: Any, path: Path) -> None:
    import SimpleITK as sitk

    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as error:
        raise OutputError(f"cannot write {path}: {str(error).strip().splitlines()[-1]}") from None


def _claim(source: Path, target: Path) -> None:
    """Create ``target`` with the contents of ``source``; FileExistsError if it exists."""
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network or FAT file systems)
        pass
    with open(source, "rb") as reader, open(target, "xb") as writer:
        shutil.copyfileobj(reader, writer)


def _claim_case(site_dir: Path, image: Path, label: Path) -> tuple[int, Path, Path]:
    number = next_case_number(site_dir)
    for _ in range(_MAX_ATTEMPTS):
        stem = case_stem(number)
        image_path = site_dir / f"{stem}{IMAGE_SUFFIX}"
        label_path = site_dir / f"{stem}{LABEL_TAG}{IMAGE_SUFFIX}"
        try:
            _claim(image, image_path)
        except FileExistsError:
            number = max(number + 1, next_case_number(site_dir))
            continue
        except OSError as error:
            raise OutputError(f"cannot write {image_path}: {error.strerror or error}") from None
        try:
            _claim(label, label_path)
        except FileExistsError:  # a stray label without its image: leave it, take the next number
            _remove_quietly(image_path)
            number = max(number + 1, next_case_number(site_dir))
            continue
        except OSError as error:
            _remove_quietly(image_path)
            raise OutputError(f"cannot write {label_path}: {error.strerror or error}") from None
        return number, image_path, label_path
    raise OutputError(f"no free case number found in {site_dir}")


def append_index_row(
    root: Path, case_id: str, site: str, image: Path, label: Path, source: str
) -> Path:
    """Append one row to ``<root>/dataset_index.csv`` (created with its header when missing)."""
    index = root / INDEX_FILE
    row = {
        "case_id": case_id,
        "site": site,
        "image": image.relative_to(root).as_posix(),
        "label": label.relative_to(root).as_posix(),
        "source": source,
        "added": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
    }
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, lineterminator="\n").writerow(row)
    try:
        try:
            with open(index, "x", encoding="utf-8", newline="") as handle:
                handle.write(",".join(INDEX_COLUMNS) + "\n")
        except FileExistsError:
            pass
        with open(index, "a", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())  # one write: rows of concurrent savers do not interleave
    except OSError as error:
        raise OutputError(f"cannot update {index}: {error.strerror or error}") from None
    return index


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
