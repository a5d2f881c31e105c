"""Reading clinical volumes, validating them, and writing masks atomically.

Every problem a user can cause raises :class:`~ProstateKDLib.errors.InputError`
(reading) or :class:`~ProstateKDLib.errors.OutputError` (writing) with one
line of text; the exact messages are listed in each function's docstring and
are kept stable (tests assert them).
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError, OutputError
from .native_stderr import captured_native_stderr, first_native_line
from .nifti_header import nifti_pixdim, spacing_is_missing
from .seg_nrrd import PROSTATE_SEGMENT, SegmentInfo, slicer_segmentation_metadata
from .temp_files import temporary_path

__all__ = [
    "OUTPUT_SUFFIXES",
    "PROSTATE_SEGMENT",
    "SegmentInfo",
    "check_output_path",
    "image_summary",
    "read_volume",
    "validate_volume",
    "write_mask",
]

OUTPUT_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")  # longest match first
SPACING_RANGE_MM = (0.05, 20.0)
MIN_INPLANE_VOXELS = 8
_ORTHONORMAL_TOL = 1e-3
_SAME_ORIENTATION_TOL = 1e-3
_SAME_POSITION_MM = 1e-2
_IOP, _IPP = "0020|0037", "0020|0032"


def _check_path_arg(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


# --------------------------------------------------------------------- reading
def read_volume(
    path: str | os.PathLike, channel: int | None = None, series: str | int | None = None
) -> sitk.Image:
    """Read a NIfTI, NRRD, MHA/MHD file or DICOM series folder as a 3D float32 image.

    Geometry (origin, spacing, direction) is kept exactly. A folder (searched
    recursively) is read as a DICOM series: ``series`` (SeriesInstanceUID or
    SeriesNumber) picks one, otherwise the only series or the axial T2, as
    :func:`~ProstateKDLib.dicom_series.choose_series` decides. A single DICOM
    file is read as it is.
    Multi-channel images (4D, or vector voxels) need ``channel``; the 3D
    geometry of a 4D image is that of its first three axes. The result is
    checked with :func:`validate_volume` (``name`` = the path).

    Raises:
        InputError: with one of these messages (``<path>`` as given):

            - ``input not found: <path>``
            - ``cannot read <path>: not a readable NIfTI, NRRD, MHA/MHD or DICOM image``
            - ``cannot read <path>: the file is damaged or truncated`` (followed by ITK's own
              reason in brackets when it printed one, e.g. ``(MetaImage: Read: Cannot open data file)``;
              ITK's console output is captured, never shown)
            - ``<path> has implausible voxel spacing (0.5, 0.5, 0) mm; expected 0.05-20 mm per axis``
              (also for a zero NIfTI ``pixdim``, which ITK would read as 1 mm)
            - ``cannot read <path>: NIfTI-2 is not supported; save it as NIfTI-1``
            - ``cannot read <path>: its orientation matrix is not orthonormal (sheared)``
            - any message of :func:`~ProstateKDLib.dicom_series.choose_series` (series not found,
              no axial T2 among several series, ...)
            - ``DICOM series in <path> mixes slice orientations (a localizer?); a single 3D stack is needed``
            - ``DICOM series in <path> has images without ImagePositionPatient/ImageOrientationPatient``
            - ``DICOM series in <path> has <n> images at <m> slice positions (several echoes, b-values or
              time points?); a single 3D stack is needed``
            - ``DICOM series in <path> has unevenly spaced slices (<a>-<b> mm apart); slices are missing``
            - ``<path> is a 2D image (256x256); a 3D volume is needed`` (a single DICOM file adds
              ``" (pass the DICOM series folder, not one file)"``)
            - ``<path> has <n>D data; a 3D volume is needed``
            - ``<path> has 2 channels (0-1); choose one with --channel N``
            - ``channel 5 out of range: <path> has 2 channels (0-1)`` (a 3D scalar image has
              ``1 channel (0-0)``)
            - ``<path> is a 4D image with vector voxels; not supported``
            - any message of :func:`validate_volume`.
    """
    path = _check_path_arg(path, "path")
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)):
        raise TypeError(f"channel must be an int or None, got {type(channel).__name__}")
    if series is not None and (isinstance(series, bool) or not isinstance(series, (str, int))):
        raise TypeError(f"series must be a str, an int or None, got {type(series).__name__}")
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        image, hint = _read_dicom_series(path, series), ""
    else:
        image = _read_file(path)
        hint = " (pass the DICOM series folder, not one file)" if _is_dicom_file(path) else ""
    image = _select_channel(image, channel, path, hint)
    validate_volume(image, name=str(path))
    return image


def _read_file(path: Path) -> sitk.Image:
    with captured_native_stderr() as native:  # ITK/MetaIO console text: kept out of stderr
        try:
            return _read_file_quietly(path)
        except InputError as error:
            failure = error
    detail = first_native_line(native)
    if detail and str(failure).endswith("damaged or truncated"):
        raise InputError(f"{failure} ({detail})") from None
    raise failure


def _implausible_spacing(path: Path | str, spacing: Sequence[float]) -> InputError:
    low, high = SPACING_RANGE_MM
    return InputError(
        f"{path} has implausible voxel spacing ({', '.join(f'{s:g}' for s in spacing)}) mm; "
        f"expected {low:g}-{high:g} mm per axis"
    )


def _read_file_quietly(path: Path) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        if _is_nifti2(path):
            raise InputError(f"cannot read {path}: NIfTI-2 is not supported; save it as NIfTI-1") from None
        raise InputError(_read_error(path, error, "not a readable NIfTI, NRRD, MHA/MHD or DICOM image")) from None
    header_spacing = tuple(reader.GetSpacing())[:3]
    if path.name.lower().endswith((".nii", ".nii.gz")):
        header_spacing = nifti_pixdim(path) or header_spacing  # ITK shows a zero pixdim as 1 mm
    if spacing_is_missing(header_spacing):
        raise _implausible_spacing(path, header_spacing)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(_read_error(path, error, "the file is damaged or truncated")) from None
    problem = inspect_nifti(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
    if problem == "truncated":  # ITK zero-fills missing voxel data without an exception
        raise InputError(f"cannot read {path}: the file is damaged or truncated")
    if problem == "non-finite":  # ITK replaces NaN and inf by 0 when it reads NIfTI
        raise InputError(f"{path} contains NaN or infinite values")
    return image


def _is_nifti2(path: Path) -> bool:
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as handle:
            return handle.read(8)[4:7] == b"n+2"
    except (EOFError, OSError, zlib.error):
        return False


_NIFTI_FLOATS = {16: "f4", 32: "f4", 64: "f8", 1792: "f8"}  # float32/64, complex64/128 (as float pairs)


def inspect_nifti(path: Path) -> str | None:
    """``"truncated"``, ``"non-finite"`` or None for a single-file NIfTI-1/2 (plain or gzipped).

    SimpleITK 2.5 (ITK 5.4, niftilib ``nifti_read_buffer``) hides both problems:
    missing voxel bytes read as 0, and every NaN/inf float voxel is set to 0.
    So the voxel bytes of float files (and the length of every file) are
    checked here. Headers this does not understand are left to ITK (None).
    """
    gzipped = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if gzipped else open)(path, "rb") as handle:
            header = handle.read(540)
            for endian in "<>":
                sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
                if sizeof_hdr == 348 and header[344:347] == b"n+1":
                    dims = struct.unpack(endian + "8h", header[40:56])
                    datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
                    offset = int(struct.unpack(endian + "f", header[108:112])[0])
                    break
                if sizeof_hdr == 540 and header[4:7] == b"n+2":
                    datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
                    dims = struct.unpack(endian + "8q", header[16:80])
                    offset = struct.unpack(endian + "q", header[168:176])[0]
                    break
            else:
                return None
            if not 1 <= dims[0] <= 7 or bitpix <= 0 or min(dims[1 : dims[0] + 1]) < 1:
                return None
            start = max(offset, sizeof_hdr + 4)
            remaining = math.prod(dims[1 : dims[0] + 1]) * bitpix // 8
            dtype = _NIFTI_FLOATS.get(datatype)
            if dtype is None and not gzipped:
                return "truncated" if os.path.getsize(path) < start + remaining else None
            pending = header[start:]
            if start > len(header):
                skipped = handle.read(start - len(header))
                if len(skipped) < start - len(header):
                    return "truncated"
            finite, carry = True, b""
            while remaining > 0:
                chunk, pending = (pending or handle.read(min(1 << 22, remaining))), b""
                if not chunk:
                    return "truncated"
                chunk = chunk[:remaining]
                remaining -= len(chunk)
                if dtype is not None and finite:
                    data = carry + chunk
                    usable = len(data) - len(data) % int(dtype[1])
                    finite = bool(np.isfinite(np.frombuffer(data[:usable], endian + dtype)).all())
                    carry = data[usable:]
            return None if finite else "non-finite"
    except (EOFError, OSError, zlib.error, struct.error):
        return "truncated"


def _read_error(path: Path, error: RuntimeError, default: str) -> str:
    if "orthonormal" in str(error):
        return f"cannot read {path}: its orientation matrix is not orthonormal (sheared)"
    return f"cannot read {path}: {default}"


def _read_dicom_series(folder: Path, series: str | None) -> sitk.Image:
    from .dicom_series import choose_series

    files = [str(f) for f in choose_series(folder, series).series.files]
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns on stderr; we report ourselves
    try:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise InputError(_read_error(folder, error, "the file is damaged or truncated")) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    if len(files) > 1:
        _check_dicom_stack(reader, len(files), folder)
    return image


def _check_dicom_stack(reader: sitk.ImageSeriesReader, count: int, folder: Path) -> None:
    """The slices of a series form one evenly spaced stack of parallel images."""
    prefix = f"DICOM series in {folder}"
    try:
        iop = np.array([[float(v) for v in reader.GetMetaData(i, _IOP).split("\\")] for i in range(count)])
        ipp = np.array([[float(v) for v in reader.GetMetaData(i, _IPP).split("\\")] for i in range(count)])
    except (RuntimeError, ValueError):
        raise InputError(f"{prefix} has images without ImagePositionPatient/ImageOrientationPatient") from None
    if iop.shape != (count, 6) or ipp.shape != (count, 3):
        raise InputError(f"{prefix} has images without ImagePositionPatient/ImageOrientationPatient")
    if np.abs(iop - iop[0]).max() > _SAME_ORIENTATION_TOL:
        raise InputError(f"{prefix} mixes slice orientations (a localizer?); a single 3D stack is needed")
    positions = np.sort(ipp @ np.cross(iop[0, :3], iop[0, 3:]))
    gaps = np.diff(positions)
    distinct = int((gaps > _SAME_POSITION_MM).sum()) + 1
    if distinct < count:
        raise InputError(
            f"{prefix} has {count} images at {distinct} slice positions "
            "(several echoes, b-values or time points?); a single 3D stack is needed"
        )
    median = float(np.median(gaps))
    if np.abs(gaps - median).max() > max(0.01, 0.05 * median):
        raise InputError(
            f"{prefix} has unevenly spaced slices ({gaps.min():.3g}-{gaps.max():.3g} mm apart); slices are missing"
        )


def _select_channel(image: sitk.Image, channel: int | None, path: Path, hint: str) -> sitk.Image:
    dimension, size = image.GetDimension(), image.GetSize()
    components = image.GetNumberOfComponentsPerPixel()
    spatial = [s for s in size[:3] if s > 1]
    if dimension < 3 or len(spatial) < 3:
        shape = "x".join(str(s) for s in (spatial if len(spatial) >= 2 else size[:3]))
        raise InputError(f"{path} is a 2D image ({shape}); a 3D volume is needed{hint}")
    if dimension > 4:
        raise InputError(f"{path} has {dimension}D data; a 3D volume is needed")
    if dimension == 4 and components > 1:
        raise InputError(f"{path} is a 4D image with vector voxels; not supported")
    count = size[3] if dimension == 4 else components
    described = f"{_plural(count, 'channel')} (0-{count - 1})"
    if channel is None and count > 1:
        raise InputError(f"{path} has {described}; choose one with --channel N")
    if channel is not None and not 0 <= channel < count:
        raise InputError(f"channel {channel} out of range: {path} has {described}")
    channel = channel or 0
    if dimension == 4:
        direction = np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3]
        image.SetDirection(np.eye(4).ravel().tolist())  # so Extract never rejects a coupled 4x4 matrix
        volume = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, channel])
        volume.SetOrigin(image.GetOrigin()[:3])
        volume.SetSpacing(image.GetSpacing()[:3])
        volume.SetDirection(direction.ravel().tolist())
        image = volume
    elif components > 1:
        image = sitk.VectorIndexSelectionCast(image, channel)
    return sitk.Cast(image, sitk.sitkFloat32)


# ------------------------------------------------------------------ validation
def validate_volume(image: sitk.Image, name: str = "input") -> None:
    """Check that ``image`` is a usable 3D scalar volume; ``name`` starts each message.

    Raises:
        InputError: with one of these messages:

            - ``<name> is a 2D image (256x256); a 3D volume is needed``
            - ``<name> has 3 components per voxel; a scalar volume is needed``
            - ``<name> is too small (4x4x20 voxels); at least 8x8 voxels per slice are needed``
            - ``<name> has implausible voxel spacing (0.6, 0.6, 80) mm; expected 0.05-20 mm per axis``
            - ``<name> has a degenerate or non-orthonormal direction matrix; its orientation is corrupt``
            - ``<name> contains NaN or infinite values``
            - ``<name> is constant (every voxel is 0); nothing to segment``
    """
    if not isinstance(image, sitk.Image):
        raise TypeError(f"image must be a SimpleITK.Image, got {type(image).__name__}")
    size = image.GetSize()
    spatial = [s for s in size if s > 1]
    if image.GetDimension() != 3 or len(spatial) < 3:
        shape = "x".join(str(s) for s in (spatial if len(spatial) >= 2 else size))
        raise InputError(f"{name} is a 2D image ({shape}); a 3D volume is needed")
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise InputError(f"{name} has {components} components per voxel; a scalar volume is needed")
    if sorted(size)[1] < MIN_INPLANE_VOXELS:
        raise InputError(
            f"{name} is too small ({'x'.join(map(str, size))} voxels); "
            f"at least {MIN_INPLANE_VOXELS}x{MIN_INPLANE_VOXELS} voxels per slice are needed"
        )
    spacing = image.GetSpacing()
    low, high = SPACING_RANGE_MM
    if not all(math.isfinite(s) and low <= s <= high for s in spacing):
        raise _implausible_spacing(name, spacing)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    orthonormal = np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHONORMAL_TOL)
    if not np.all(np.isfinite(direction)) or not orthonormal:
        raise InputError(
            f"{name} has a degenerate or non-orthonormal direction matrix; its orientation is corrupt"
        )
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite values")
    low_value, high_value = array.min(), array.max()
    if low_value == high_value:
        raise InputError(f"{name} is constant (every voxel is {float(low_value):g}); nothing to segment")


# --------------------------------------------------------------------- writing
def _output_suffix(path: Path) -> str | None:
    # Lower case only: ITK picks its readers and writers by lower-case suffix
    # (a "MASK.MHA" is written as MASK.mhd + MASK.zraw, a "MASK.NII.GZ" not at all).
    name = path.name
    return next((s for s in OUTPUT_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check an output mask path before any work is done; return it resolved.

    Suffixes (lower case): ``.nii.gz``, ``.nii``, ``.nrrd``, ``.seg.nrrd``, ``.mha``.

    Raises:
        OutputError: with one of these messages (``<path>`` as given):

            - ``output path is empty``
            - ``unsupported output format <path>; use .nii.gz, .nii, .nrrd, .seg.nrrd or .mha``
            - ``output path is a folder: <path>; give a file name such as mask.nii.gz``
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
        raise OutputError(f"output path is a folder: {path}; give a file name such as mask.nii.gz")
    if _output_suffix(given) is None:
        raise OutputError(f"unsupported output format {path}; use .nii.gz, .nii, .nrrd, .seg.nrrd or .mha")
    if not given.parent.is_dir():
        raise OutputError(f"output folder does not exist: {given.parent}")
    if not os.access(given.parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {given.parent}")
    if (given.exists() or given.is_symlink()) and not overwrite:
        raise OutputError(f"{path} exists (use --overwrite to replace it)")
    return given.resolve()


def write_mask(
    mask: sitk.Image,
    path: str | os.PathLike,
    overwrite: bool = False,
    segments: Sequence[SegmentInfo] | None = None,
) -> Path:
    """Write a 3D labelmap as uint8 to ``path`` atomically; return the resolved path.

    The mask is written to a hidden temporary file in the target folder with
    the same suffix, then moved onto ``path`` with :func:`os.replace`, so the
    target is either the old file or the complete new one. NIfTI, NRRD and MHA
    are compressed. ``.seg.nrrd`` gets 3D Slicer segmentation keys for
    ``segments`` (default: :data:`PROSTATE_SEGMENT`); other formats ignore them.
    Geometry is written exactly as the mask has it.

    Raises:
        OutputError: any message of :func:`check_output_path`, or
            ``cannot write <path>: <reason>`` when writing fails.
        ValueError: ``mask`` is not a 3D scalar image with values in 0-255, or
            the segments are inconsistent.
    """
    if not isinstance(mask, sitk.Image):
        raise TypeError(f"mask must be a SimpleITK.Image, got {type(mask).__name__}")
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"mask must be a 3D scalar image, got {mask.GetDimension()}D "
                         f"with {mask.GetNumberOfComponentsPerPixel()} components")
    target = check_output_path(path, overwrite=overwrite)
    suffix = _output_suffix(target)
    assert suffix is not None  # checked above
    labels = sitk.GetArrayViewFromImage(mask)
    integral = labels.dtype.kind != "f" or bool(np.all(labels == np.round(labels)))
    if not integral or labels.min() < 0 or labels.max() > 255:
        raise ValueError("mask values must be integers in 0-255")
    image = sitk.Cast(mask, sitk.sitkUInt8)
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    if suffix == ".seg.nrrd":
        for key, value in slicer_segmentation_metadata(image, list(segments or [PROSTATE_SEGMENT])).items():
            image.SetMetaData(key, value)
    temporary = temporary_path(target, suffix)
    try:
        sitk.WriteImage(image, str(temporary), useCompression=True)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except (OSError, RuntimeError) as error:
        _remove_quietly(temporary)
        reason = _error_reason(error).replace(str(temporary), str(path))
        raise OutputError(f"cannot write {path}: {reason}") from None
    except BaseException:
        _remove_quietly(temporary)
        raise
    return target


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _error_reason(error: BaseException) -> str:
    """A one-line reason from an OSError or a (multi-line) ITK exception."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    text = re.sub(r"^(?:ITK ERROR|sitk::ERROR):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?", "", text)
    return re.sub(r"^ERROR:\s*", "", text) or type(error).__name__


# --------------------------------------------------------------------- summary
def image_summary(image: sitk.Image) -> dict[str, Any]:
    """Size, spacing, origin, direction, orientation code and voxel volume (ml) of a 3D image.

    Keys: ``size``, ``spacing_mm``, ``origin_mm``, ``direction`` (9 values,
    row-major), ``orientation`` (ITK/DICOM closest axis code, e.g. ``"LPS"``),
    ``voxel_volume_ml``, ``pixel_type``. Values are plain lists, numbers and
    strings (JSON-serialisable).
    """
    if not isinstance(image, sitk.Image):
        raise TypeError(f"image must be a SimpleITK.Image, got {type(image).__name__}")
    direction = list(image.GetDirection())
    orientation = (
        sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction)
        if image.GetDimension() == 3
        else ""
    )
    return {
        "size": list(image.GetSize()),
        "spacing_mm": list(image.GetSpacing()),
        "origin_mm": list(image.GetOrigin()),
        "direction": direction,
        "orientation": orientation,
        "voxel_volume_ml": float(np.prod(image.GetSpacing())) / 1000.0,
        "pixel_type": image.GetPixelIDTypeAsString(),
    }
