"""DICOM Segmentation (SEG) output: a mask as a DICOM object a PACS or Slicer's DICOM module loads.

The SEG is written with highdicom. It references the source series (every
frame points at the source slice it lies on, with that slice's position and
orientation), codes each segment with the bundle's terminology (SNOMED CT
41216001 "Prostate" for the bundled models) and names the algorithm (bundle
name and version, family "Artificial Intelligence"). Frames without any
segmented voxel are omitted, as the standard allows.

The file is written to a hidden temporary name in the target folder and moved
into place, so the target is either the old file or the complete new one.
"""

from __future__ import annotations

import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InputError, OutputError

__all__ = ["DICOM_SEG_SUFFIX", "check_seg_output_path", "segment_to_dicom_seg", "write_dicom_seg"]

DICOM_SEG_SUFFIX = ".dcm"
_OTHER_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_DEFAULT_TERMINOLOGY = {"category": ["SCT", "85756007", "Tissue"], "type": ["SCT", "85756007", "Tissue"]}
_POSITION_TOL_MM = 1e-2
_DIRECTION_TOL = 1e-4
SEG_SERIES_NUMBER_OFFSET = 1000


def is_dicom_seg_path(path: str | os.PathLike) -> bool:
    """True when ``path`` names a DICOM SEG output (suffix ``.dcm``, any case)."""
    return Path(path).name.lower().endswith(DICOM_SEG_SUFFIX)


def check_seg_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check a DICOM SEG output path before any work is done; return it resolved.

    Any name but an image-format one (``.nii.gz``, ``.nrrd`` ...) is accepted;
    ``.dcm`` is the usual suffix.

    Raises:
        OutputError: with one of these messages (``<path>`` as given):

            - ``output path is empty``
            - ``<path> names an image format, not DICOM SEG; use a .dcm name``
            - ``output path is a folder: <path>; give a file name such as mask.dcm``
            - ``output folder does not exist: <parent>``
            - ``output folder is not writable: <parent>``
            - ``<path> exists (use --overwrite to replace it)``
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"output path must be a str or os.PathLike, got {type(path).__name__}")
    if not os.fspath(path):
        raise OutputError("output path is empty")
    given = Path(path).expanduser()
    if given.is_dir():
        raise OutputError(f"output path is a folder: {path}; give a file name such as mask.dcm")
    if given.name.lower().endswith(_OTHER_SUFFIXES):
        raise OutputError(f"{path} names an image format, not DICOM SEG; use a .dcm name")
    if not given.parent.is_dir():
        raise OutputError(f"output folder does not exist: {given.parent}")
    if not os.access(given.parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {given.parent}")
    if (given.exists() or given.is_symlink()) and not overwrite:
        raise OutputError(f"{path} exists (use --overwrite to replace it)")
    return given.resolve()


def _code(entry: Sequence[str]) -> Any:
    from pydicom.sr.coding import Code

    scheme, value, meaning = entry
    return Code(value=value, scheme_designator=scheme, meaning=meaning)


def _frames_on_source_slices(mask: Any, datasets: Sequence[Any]) -> np.ndarray:
    """The mask's slices in the order of ``datasets``; each dataset must lie on one mask slice.

    Raises:
        InputError: ``the mask's grid does not match the source series (<what>)``.
    """
    import SimpleITK as sitk

    labels = sitk.GetArrayViewFromImage(mask)  # (z, y, x) = (slice, row, column)
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    origin, spacing = np.asarray(mask.GetOrigin()), np.asarray(mask.GetSpacing())

    def mismatch(what: str) -> InputError:
        return InputError(f"the mask's grid does not match the source series ({what})")

    order = []
    for dataset in datasets:
        if (int(dataset.Rows), int(dataset.Columns)) != labels.shape[1:]:
            raise mismatch(f"slices of {dataset.Columns}x{dataset.Rows}, mask {labels.shape[2]}x{labels.shape[1]}")
        iop = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
        if np.abs(iop - np.concatenate([direction[:, 0], direction[:, 1]])).max() > _DIRECTION_TOL:
            raise mismatch("slice orientation differs")
        offset = np.asarray([float(v) for v in dataset.ImagePositionPatient]) - origin
        index = offset @ direction / spacing  # continuous (x, y, z) index of the slice's first pixel
        k = int(round(index[2]))
        if np.abs(np.append(index[:2], index[2] - k) * spacing).max() > _POSITION_TOL_MM:
            raise mismatch("a source slice lies between mask slices")
        if not 0 <= k < labels.shape[0]:
            raise mismatch("a source slice lies outside the mask")
        order.append(k)
    if sorted(order) != list(range(labels.shape[0])):
        raise mismatch(f"{len(datasets)} source slices for {labels.shape[0]} mask slices")
    return np.ascontiguousarray(labels[order])


def _segmentation(hd: Any, datasets: Sequence[Any], numbered: np.ndarray, descriptions: list[Any],
                  algorithm_name: str, algorithm_version: str) -> Any:
    from . import __version__

    source_number = int(getattr(datasets[0], "SeriesNumber", 0) or 0)
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=numbered,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=source_number + SEG_SERIES_NUMBER_OFFSET,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="ProstateKD",
        manufacturer_model_name=algorithm_name,
        software_versions=f"prostatekd {__version__}, model {algorithm_version}",
        device_serial_number="none",
        content_label="PROSTATE",
        content_description=f"{algorithm_name} {algorithm_version} segmentation",
        series_description=f"{algorithm_name} segmentation",
        omit_empty_frames=bool(numbered.any()),  # an empty SEG still needs its frames
    )


def write_dicom_seg(
    mask: Any,
    source_files: Sequence[str | os.PathLike],
    path: str | os.PathLike,
    labels: Sequence[Any],
    algorithm_name: str,
    algorithm_version: str,
    overwrite: bool = False,
) -> Path:
    """Write ``mask`` (on the grid of the source series) as a DICOM SEG; return the resolved path.

    Args:
        mask: SimpleITK label image on the source series' grid (as ``read_volume`` read it).
        source_files: the series' DICOM files (any order).
        path: output file (see :func:`check_seg_output_path`).
        labels: the bundle's labels (``value``, ``name``, ``color``, ``terminology``); one segment each.
        algorithm_name, algorithm_version: the model bundle's name and version.
        overwrite: replace an existing file.

    Raises:
        OutputError: any message of :func:`check_seg_output_path`, or ``cannot write <path>: <reason>``.
        InputError: the mask's grid does not match the source series.
        ValueError: no labels, or a mask value that is not one of them.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    target = check_seg_output_path(path, overwrite=overwrite)
    if not labels:
        raise ValueError("at least one label is needed")
    datasets = [pydicom.dcmread(os.fspath(f), stop_before_pixels=True) for f in source_files]
    frames = _frames_on_source_slices(mask, datasets)
    values = [int(label.value) for label in labels]
    unknown = sorted(set(np.unique(frames).tolist()) - {0, *values})
    if unknown:
        raise ValueError(f"mask values {unknown} are not labels of the model ({values})")
    numbered = np.zeros_like(frames, dtype=np.uint8)  # SEG segment numbers are 1..N
    for number, value in enumerate(values, start=1):
        numbered[frames == value] = number
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    descriptions = []
    for number, label in enumerate(labels, start=1):
        terminology = label.terminology or _DEFAULT_TERMINOLOGY
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label.name,
            segmented_property_category=_code(terminology["category"]),
            segmented_property_type=_code(terminology["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"{algorithm_name} {label.name}",
            display_color=hd.color.CIELabColor.from_rgb(*(int(round(255 * c)) for c in label.color)),
        ))
    with warnings.catch_warnings():  # e.g. "ProstateX-0000" as PatientName: the source's, not ours to fix
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        segmentation = _segmentation(hd, datasets, numbered, descriptions, algorithm_name, algorithm_version)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        segmentation.save_as(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def segment_to_dicom_seg(
    segmenter: Any,
    folder: str | os.PathLike,
    output: str | os.PathLike,
    series: str | int | None = None,
    overwrite: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> Any:
    """Segment a DICOM series with ``segmenter`` and write a DICOM SEG; return the ``SegmentationResult``.

    The output is checked before any work; the series is chosen as
    :func:`~ProstateKDLib.dicom_series.choose_series` does.

    Raises:
        InputError: ``folder`` is not a DICOM series folder, or any reading error.
        OutputError: any message of :func:`check_seg_output_path`.
    """
    from .dicom_series import choose_series
    from .image_io import read_volume

    target = check_seg_output_path(output, overwrite=overwrite)
    if not Path(folder).is_dir():
        raise InputError(f"DICOM SEG output needs a DICOM series folder as input, got {folder}")
    start = time.perf_counter()
    chosen = choose_series(folder, series).series
    image = read_volume(folder, series=chosen.uid)
    read_seconds = time.perf_counter() - start
    result = segmenter.segment(image, progress=progress)
    start = time.perf_counter()
    meta = segmenter.bundle.meta
    write_dicom_seg(result.mask, chosen.files, target, meta.labels, meta.name, meta.version, overwrite=overwrite)
    result.timings = {"read": read_seconds, **result.timings, "write": time.perf_counter() - start}
    result.input_path, result.output_path = str(folder), str(target)
    return result
