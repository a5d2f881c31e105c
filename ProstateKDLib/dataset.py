"""Training data: index labelled cases, split them per site, load them preprocessed.

The multi-site layout is ``<root>/<SITE>/CaseNN.nii.gz`` with its label
``CaseNN_segmentation.nii.gz`` (``_Segmentation`` is accepted too); a CSV with
columns ``image,label[,site]`` can list cases anywhere instead; a Medical
Segmentation Decathlon folder (``dataset.json``) is read by
:mod:`~ProstateKDLib.dataset_msd`, cases saved from Slicer into a
``dataset_index.csv`` by :mod:`~ProstateKDLib.dataset_saved`. Labels hold
0 = background and 1 or 2 (zones), both merged to 1 = gland. Every problem
with the data raises :class:`~ProstateKDLib.errors.DataError` naming the case.
Cases are preprocessed with exactly the functions inference uses
(:func:`~ProstateKDLib.preprocessing.preprocess_image`), so training and
inference see the same grid and intensities.
"""

from __future__ import annotations

import csv
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import DataError, InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
LABEL_TAG = "_segmentation"
LABEL_VALUES = (0, 1, 2)
_SPACING_RTOL = 1e-4
_ORIGIN_ATOL_MM = 1e-3
_DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class CaseRecord:
    """One labelled case: ``case_id`` such as ``"RUNMC/Case00"``, its site and files.

    ``channel`` picks one channel of a multi-channel image (for example T2 of the
    4D T2+ADC Decathlon volumes); ``None`` for plain 3D images. ``channels``
    (when set) makes :func:`load_case` read several channels, each preprocessed on
    its own, stacked in that order (a cross-modality teacher's input).
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


def read_case_csv(path: str | os.PathLike) -> list[CaseRecord]:
    """Cases listed in a CSV with columns ``image,label[,site]`` (paths relative to the CSV).

    The case id is ``<site>/<image stem>`` (site defaults to ``default``).

    Raises:
        DataError: file missing, columns missing, a file missing, or duplicate case ids.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"case list not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("image", "label") if c not in columns]
        if missing:
            raise DataError(f"case list {path.name}: missing column '{missing[0]}' (columns: image,label[,site])")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    records: list[CaseRecord] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if not row["image"] or not row["label"]:
            raise DataError(f"case list {path.name} line {line}: image and label must both be given")
        image, label = (Path(row[k]).expanduser() for k in ("image", "label"))
        image, label = (p if p.is_absolute() else path.parent / p for p in (image, label))
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


def index_cases(source: str | os.PathLike, channel: int | None = None) -> list[CaseRecord]:
    """Cases of a ``.csv`` case list, a Decathlon folder or a multi-site folder.

    * ``*.csv``: :func:`read_case_csv`;
    * a folder with ``dataset.json``: the Medical Segmentation Decathlon layout
      (:func:`~ProstateKDLib.dataset_msd.index_msd`; ``channel`` defaults to T2);
    * any other folder: :func:`index_multisite`, plus the cases listed in its
      ``dataset_index.csv`` (cases saved from Slicer) that the folder scan did
      not find (:func:`~ProstateKDLib.dataset_saved.index_multisite_root`).

    ``channel`` (when given) is set on every case.
    """
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or channel < 0):
        raise ValueError(f"channel must be a non-negative int or None, got {channel!r}")
    if str(source).lower().endswith(".csv"):
        records = read_case_csv(source)
    else:
        from .dataset_msd import MSD_DESCRIPTOR, index_msd

        if (Path(source).expanduser() / MSD_DESCRIPTOR).is_file():
            return index_msd(source, channel=channel)
        from .dataset_saved import index_multisite_root

        records = index_multisite_root(source)
    if channel is not None:
        records = [replace(r, channel=channel) for r in records]
    return records


def limit_cases(cases: Sequence[CaseRecord], limit: int | None) -> list[CaseRecord]:
    """The first ``limit`` cases taken round-robin over sites (all when ``limit`` is None)."""
    if limit is None or limit >= len(cases):
        return list(cases)
    by_site: dict[str, list[CaseRecord]] = {}
    for case in cases:
        by_site.setdefault(case.site, []).append(case)
    chosen: list[CaseRecord] = []
    depth = 0
    while len(chosen) < limit:
        for site in sorted(by_site):
            if depth < len(by_site[site]) and len(chosen) < limit:
                chosen.append(by_site[site][depth])
        depth += 1
    return sorted(chosen, key=lambda c: c.case_id)


def split_cases(
    cases: Sequence[CaseRecord], val_fraction: float, seed: int
) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """Split into (train, val), stratified per site and reproducible for a seed.

    Each site gives ``round(n * val_fraction)`` validation cases but keeps at
    least one training case; when that gives no validation case at all while
    ``val_fraction > 0`` and there are two or more cases, the largest site gives one.
    Both lists are sorted by case id.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_site: dict[str, list[CaseRecord]] = {}
    for case in sorted(cases, key=lambda c: c.case_id):
        by_site.setdefault(case.site, []).append(case)
    shuffled: dict[str, list[CaseRecord]] = {}
    counts: dict[str, int] = {}
    for site, items in by_site.items():
        rng = np.random.default_rng([seed, zlib.crc32(site.encode())])
        shuffled[site] = [items[i] for i in rng.permutation(len(items))]
        counts[site] = min(int(np.floor(len(items) * val_fraction + 0.5)), len(items) - 1)
    if val_fraction > 0 and sum(counts.values()) == 0 and len(cases) >= 2:
        site = max(sorted(by_site), key=lambda s: len(by_site[s]))  # first of the largest sites
        counts[site] = 1
    val = [c for site, items in shuffled.items() for c in items[: counts[site]]]
    train = [c for site, items in shuffled.items() for c in items[counts[site]:]]
    return sorted(train, key=lambda c: c.case_id), sorted(val, key=lambda c: c.case_id)


def read_image(record: CaseRecord) -> Any:
    try:
        from .image_io import read_volume
    except ImportError:  # pragma: no cover - image_io is part of the library
        read_volume = None
    import SimpleITK as sitk

    try:
        if read_volume is not None:
            return read_volume(record.image, channel=record.channel)
        return sitk.Cast(sitk.ReadImage(str(record.image)), sitk.sitkFloat32)
    except InputError as exc:
        raise DataError(f"case {record.case_id}: {exc}") from None
    except RuntimeError as exc:
        raise DataError(f"case {record.case_id}: cannot read image {record.image}: {_first_line(exc)}") from None


def read_label(record: CaseRecord) -> Any:
    import SimpleITK as sitk

    try:
        label = sitk.ReadImage(str(record.label))
    except RuntimeError as exc:
        raise DataError(f"case {record.case_id}: cannot read label {record.label}: {_first_line(exc)}") from None
    if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"case {record.case_id}: label must be a 3D scalar image")
    return label


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def check_geometry(record: CaseRecord, image: Any, label: Any) -> None:
    """Raise DataError unless image and label share size, spacing, origin and direction.

    Message: ``case <id>: image and label geometry differ (<what> <image> vs <label>)``.
    """
    problem = None
    if image.GetSize() != label.GetSize():
        problem = f"size {'x'.join(map(str, image.GetSize()))} vs {'x'.join(map(str, label.GetSize()))}"
    elif not np.allclose(image.GetSpacing(), label.GetSpacing(), rtol=_SPACING_RTOL, atol=0):
        problem = f"spacing {_fmt(image.GetSpacing())} vs {_fmt(label.GetSpacing())}"
    elif not np.allclose(image.GetOrigin(), label.GetOrigin(), rtol=0, atol=_ORIGIN_ATOL_MM):
        problem = f"origin {_fmt(image.GetOrigin())} vs {_fmt(label.GetOrigin())}"
    elif not np.allclose(image.GetDirection(), label.GetDirection(), rtol=0, atol=_DIRECTION_ATOL):
        problem = f"direction {_fmt(image.GetDirection())} vs {_fmt(label.GetDirection())}"
    if problem:
        raise DataError(f"case {record.case_id}: image and label geometry differ ({problem})")


def gland_mask(record: CaseRecord, label: Any) -> np.ndarray:
    """Label array (z, y, x) as uint8 0/1 (1 and 2 merged); DataError on other values.

    Message: ``case <id>: label values must be 0, 1 or 2, found 0, 1, 5``.
    """
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(label)
    values = np.unique(array)
    if not np.all(np.isin(values, LABEL_VALUES)):
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise DataError(f"case {record.case_id}: label values must be 0, 1 or 2, found {shown}")
    return (array > 0).astype(np.uint8)


def read_case(record: CaseRecord, keep_zones: bool = False) -> tuple[Any, Any]:
    """Read and check one case on its original grid, without resampling.

    Returns:
        ``(image, label)``: the float32 image (``record.channel`` selected) and a
        uint8 label with the image's geometry: 0/1 gland, or the zone values
        0/1/2 as stored when ``keep_zones`` is true.

    Raises:
        DataError: unreadable files, geometry mismatch or label values outside {0, 1, 2}
            (the messages of :func:`check_geometry` and :func:`gland_mask`).
    """
    import SimpleITK as sitk

    image = read_image(record)
    label = read_label(record)
    check_geometry(record, image, label)
    mask = gland_mask(record, label)
    if keep_zones:
        mask = sitk.GetArrayFromImage(label).astype(np.uint8)
    result = sitk.GetImageFromArray(mask)
    result.CopyInformation(image)
    return image, result


def check_case(record: CaseRecord) -> dict[str, Any]:
    """Read and check one case as training and evaluation will; a short summary of it.

    Returns:
        ``size``, ``spacing_mm``, ``label_values`` (values present) and ``gland_ml``.

    Raises:
        DataError: as :func:`read_case`.
    """
    import SimpleITK as sitk

    image, label = read_case(record, keep_zones=True)
    array = sitk.GetArrayViewFromImage(label)
    spacing = image.GetSpacing()
    return {
        "size": list(image.GetSize()),
        "spacing_mm": [float(v) for v in spacing],
        "label_values": [int(v) for v in np.unique(array)],
        "gland_ml": float(np.count_nonzero(array)) * float(np.prod(spacing)) / 1000.0,
    }


def load_case(
    record: CaseRecord, orientation: str, spacing: Sequence[float], normalization: Mapping[str, Any]
) -> tuple[Any, Any]:
    """Read and preprocess one case exactly as inference does.

    Returns:
        ``(image, label)``: float32 tensor (C, X, Y, Z), normalised (C = 1, or
        ``len(record.channels)`` with each channel normalised on its own), and uint8
        tensor (1, X, Y, Z) in {0, 1}, both on the model grid (plain tensors).

    Raises:
        DataError: unreadable files, geometry mismatch or label values outside {0, 1, 2}.
    """
    import SimpleITK as sitk
    import torch

    from .preprocessing import preprocess_image, preprocess_label

    parts = [replace(record, channel=c, channels=None) for c in record.channels] if record.channels else [record]
    label = read_label(record)
    tensors = []
    for part in parts:
        image = read_image(part)
        check_geometry(part, image, label)
        tensor, _ = preprocess_image(image, orientation, spacing, normalization)
        tensors.append(torch.as_tensor(tensor.as_tensor(), dtype=torch.float32))
    mask = sitk.GetImageFromArray(gland_mask(record, label))
    mask.CopyInformation(image)
    target = preprocess_label(mask, orientation, spacing)
    if tuple(tensors[0].shape) != tuple(target.shape):  # pragma: no cover - same transform on same grid
        raise DataError(f"case {record.case_id}: preprocessed image and label differ in shape")
    image_t = torch.cat(tensors).contiguous()
    label_t = (torch.as_tensor(target.as_tensor()) > 0.5).to(torch.uint8).contiguous()
    return image_t, label_t
