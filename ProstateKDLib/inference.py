"""Segment a prostate MRI with a model bundle: the path every front end uses.

``Segmenter`` loads a bundle once and segments many images: the bundle's
``model.json`` drives reorientation, resampling and normalisation (numpy,
:mod:`ProstateKDLib.model_grid`), one whole-volume network pass when the padded
volume fits ``inference.whole_volume_voxels`` (else a gaussian-blended sliding
window, :mod:`ProstateKDLib.window_inference`), optional flip test-time
augmentation, the probabilities mapped back to the input grid, largest connected
component and plausibility checks. The returned mask has exactly the input's
size, spacing, origin and direction.

Two backends run the network: ``onnx`` (onnxruntime on the bundle's ONNX export;
neither torch nor MONAI is imported) and ``torch``. ``auto`` takes ``onnx`` when
the bundle has an export and onnxruntime is installed.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .bundle import ModelBundle, resolve_model
from .errors import BundleError, CancelledError, InputError
from .postprocessing import keep_largest_component, mask_volume_ml, plausibility_warnings
from .quality_checks import measure_quality, quality_warnings, thresholds_from_model
from .window_inference import count_windows

__all__ = ["BACKENDS", "TTA_FLIPS", "WINDOWS", "SegmentationResult", "Segmenter", "choose_backend", "count_windows"]

ProgressCallback = Callable[[float, str], None]
BACKENDS = ("auto", "onnx", "torch")
WINDOWS = ("auto", "whole", "sliding")
#: Flips (model-grid axes: x = left-right) averaged by ``tta=True``: the identity and the left-right
#: mirror, the only flip the models are trained with (training's default augmentation). Anterior-
#: posterior flips were dropped: the anatomy is not symmetric that way and on the real PROMISE12 test
#: split they cost the 0.3.0 student 0.08 mean Dice (benchmarks/reports/2026-12-02/inference_options).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (0,))


@dataclass
class SegmentationResult:
    """A segmentation and what was done to get it."""

    mask: Any  # SimpleITK uint8 label image on the input grid
    model: str
    device: str
    input_size: tuple[int, ...]
    input_spacing: tuple[float, ...]
    volume_ml: float
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    input_path: str | None = None
    output_path: str | None = None
    quality: dict[str, float] = field(default_factory=dict)  # measures of quality_checks
    probabilities: Any = None  # SimpleITK float32 foreground probability on the input grid, when asked for
    layout: str = "zyx"  # axis order of mask_array()/probability_array(): "ijk" for an input given with an affine
    backend: str = ""
    mode: str = ""

    def mask_array(self) -> np.ndarray:
        """The mask as a uint8 numpy array in the layout of the input array (``[z, y, x]`` for images)."""
        from .array_image import array_from_image

        return array_from_image(self.mask, self.layout)

    def probability_array(self) -> np.ndarray:
        """The foreground probability (0-1, float32) in the input's layout; needs ``return_probabilities``."""
        from .array_image import array_from_image

        if self.probabilities is None:
            raise ValueError("no probabilities: segment(..., return_probabilities=True) keeps them")
        return array_from_image(self.probabilities, self.layout)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (everything but the mask)."""
        return {
            "input": self.input_path,
            "output": self.output_path,
            "model": self.model,
            "device": self.device,
            "backend": self.backend,
            "inference": self.mode,
            "input_size": list(self.input_size),
            "input_spacing_mm": [round(s, 4) for s in self.input_spacing],
            "volume_ml": round(self.volume_ml, 2),
            "warnings": list(self.warnings),
            "quality": {k: (None if v != v else v) for k, v in self.quality.items()},  # NaN -> null
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "seconds": round(sum(self.timings.values()), 3),
        }


def choose_backend(bundle: ModelBundle, backend: str = "auto", device: str = "auto") -> str:
    """``onnx`` or ``torch`` for ``backend`` (``auto``: onnx when the bundle has an export,
    onnxruntime is installed and the device is not ``mps``).

    Raises:
        ValueError: unknown backend name.
        BundleError: ``onnx`` asked for a bundle without an export, or no backend installed.
    """
    from .onnx_backend import onnxruntime_available
    from .torch_backend import torch_available

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return "torch"
    has_export = bundle.meta.onnx_file is not None
    if backend == "onnx":
        if not has_export:
            raise BundleError(
                f"{bundle.path}: model.json names no ONNX export; add one with "
                f"'python -m ProstateKDLib.onnx_export {bundle.path}' or use --backend torch"
            )
        return "onnx"
    wants_torch = str(device).strip().lower() == "mps"
    if has_export and onnxruntime_available() and not wants_torch:
        return "onnx"
    if torch_available():
        return "torch"
    raise BundleError(
        f"{bundle.path}: cannot run this model: "
        + ("onnxruntime is not installed (pip install onnxruntime)" if has_export
           else "it has no ONNX export and torch is not installed")
    )


class Segmenter:
    """Loads a model bundle once and segments images with it.

    Args:
        model: a :class:`ModelBundle`, a bundle name or path, or ``None`` for the default student.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (torch only).
        largest_component: keep the largest connected component; ``None`` follows the bundle.
        num_threads: CPU threads for the network (``None`` leaves the backend's default).
        backend: ``auto``, ``onnx`` or ``torch`` (see :func:`choose_backend`).
        tta: average the probabilities over the flips in :data:`TTA_FLIPS` (2 passes).
        overlap: sliding-window overlap (``None``: the bundle's).
        window: ``auto`` (one whole-volume pass when the padded volume fits the bundle's
            ``inference.whole_volume_voxels``, else a sliding window), ``whole`` or ``sliding``.
    """

    def __init__(
        self,
        model: ModelBundle | str | os.PathLike | None = None,
        device: str = "auto",
        largest_component: bool | None = None,
        num_threads: int | None = None,
        backend: str = "auto",
        tta: bool = False,
        overlap: float | None = None,
        window: str = "auto",
    ) -> None:
        from .network_divisor import network_divisor

        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if overlap is not None and not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        self.bundle = model if isinstance(model, ModelBundle) else resolve_model(model)
        meta = self.bundle.meta
        self.largest_component = meta.largest_component if largest_component is None else largest_component
        self.backend = choose_backend(self.bundle, backend, device)
        if self.backend == "onnx":
            from .onnx_backend import OnnxNetwork

            self.network: Callable[[np.ndarray], np.ndarray] = OnnxNetwork(self.bundle, device, num_threads)
        else:
            from .torch_backend import TorchNetwork

            self.network = TorchNetwork(self.bundle, device, num_threads)
        self.device = self.network.device  # type: ignore[attr-defined]
        self.tta = bool(tta)
        self.overlap = meta.overlap if overlap is None else float(overlap)
        self.window = window
        self.divisor = network_divisor(meta.network_name, meta.network_kwargs)

    def inference_mode(self, shape: tuple[int, ...]) -> str:
        """``whole`` or ``sliding`` for a model-grid volume of ``shape`` (x, y, z)."""
        from .window_inference import whole_volume_shape

        if self.window != "auto":
            return self.window
        padded = whole_volume_shape(shape, self.bundle.meta.patch_size, self.divisor)
        return "whole" if math.prod(padded) <= self.bundle.meta.whole_volume_voxels else "sliding"

    def segment(
        self,
        image: Any,
        progress: ProgressCallback | None = None,
        cancelled: Callable[[], bool] | None = None,
        *,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        direction: Any = None,
        affine: Any = None,
        return_probabilities: bool = False,
    ) -> SegmentationResult:
        """Segment a 3D SimpleITK image or numpy array; the mask shares the input's grid.

        Args:
            image: 3D scalar SimpleITK image (as returned by ``image_io.read_volume``), or a
                numpy array with its geometry: ``affine`` (nibabel/RAS, array ``[i, j, k]``) or
                ``spacing``/``origin``/``direction`` (SimpleITK/LPS, array ``[z, y, x]``); see
                :mod:`ProstateKDLib.array_image`.
            progress: called with (fraction 0-1, message) as work advances.
            cancelled: polled before each network pass; returning True raises ``CancelledError``.
            return_probabilities: also keep the foreground probability map (``result.probabilities``).
        """
        import SimpleITK as sitk

        from .model_grid import normalize, to_model_grid

        layout = "zyx"
        if not isinstance(image, sitk.Image):
            from .array_image import image_from_array
            from .image_io import validate_volume

            image, layout = image_from_array(image, spacing, origin, direction, affine)
            validate_volume(image, name="array")
        elif any(v is not None for v in (spacing, origin, direction, affine)):
            raise ValueError("spacing/origin/direction/affine are for numpy arrays; a SimpleITK image has its own")
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("the image must be a 3D single-channel volume")
        report = progress or (lambda fraction, message: None)
        meta = self.bundle.meta
        timings: dict[str, float] = {}

        start = time.perf_counter()
        report(0.0, "preprocessing")
        array, grid = to_model_grid(image, meta.orientation, meta.spacing)
        array = normalize(array, meta.normalization)[None]  # (1, X, Y, Z)
        timings["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        mode = self.inference_mode(array.shape[1:])
        probabilities = self._probabilities(array, mode, report, cancelled)
        timings["network"] = time.perf_counter() - start

        start = time.perf_counter()
        report(0.9, "mapping back to the input grid")
        labels = self._labels_on_input_grid(probabilities, grid).transpose(2, 1, 0)  # (z, y, x)
        if self.largest_component:
            labels = keep_largest_component(labels)
        mask = sitk.GetImageFromArray(np.ascontiguousarray(labels))
        mask.CopyInformation(image)
        spacing = image.GetSpacing()
        quality = measure_quality(sitk.GetArrayViewFromImage(image), labels, spacing, probabilities)
        warnings = plausibility_warnings(labels, spacing, meta.volume_ml_range)
        warnings += quality_warnings(quality, thresholds_from_model(meta.raw))
        foreground = (
            self._foreground_on_input_grid(probabilities, grid, image) if return_probabilities else None
        )
        timings["postprocess"] = time.perf_counter() - start
        report(1.0, "done")
        return SegmentationResult(
            mask=mask,
            model=f"{meta.name} {meta.version}",
            device=str(self.device),
            input_size=tuple(image.GetSize()),
            input_spacing=tuple(spacing),
            volume_ml=mask_volume_ml(labels, spacing),
            warnings=warnings,
            timings=timings,
            quality=quality,
            probabilities=foreground,
            layout=layout,
            backend=self.backend,
            mode=mode + (f" (overlap {self.overlap:g})" if mode == "sliding" else "") + (", tta" if self.tta else ""),
        )

    @staticmethod
    def _foreground_on_input_grid(probabilities: np.ndarray, grid: Any, image: Any) -> Any:
        """The foreground probability (1 - background) on the input grid, as a SimpleITK float32 image."""
        import SimpleITK as sitk

        from .model_grid import from_model_grid

        foreground = 1.0 - probabilities[:1]
        on_input = np.clip(from_model_grid(foreground, grid)[0], 0.0, 1.0).astype(np.float32)
        result = sitk.GetImageFromArray(np.ascontiguousarray(on_input.transpose(2, 1, 0)))
        result.CopyInformation(image)
        return result

    @staticmethod
    def _labels_on_input_grid(probabilities: np.ndarray, grid: Any) -> np.ndarray:
        """Map the probabilities to the input grid and take the most likely class (x, y, z).

        With two classes only the foreground channel is resampled: linear
        interpolation keeps the two channels summing to one, so thresholding it
        at 0.5 equals the argmax of both, at half the cost.
        """
        from .model_grid import from_model_grid

        if probabilities.shape[0] == 2:
            return (from_model_grid(probabilities[1:], grid)[0] > 0.5).astype(np.uint8)
        return from_model_grid(probabilities, grid).argmax(0).astype(np.uint8)

    def _probabilities(
        self, array: np.ndarray, mode: str, report: ProgressCallback, cancelled: Callable[[], bool] | None
    ) -> np.ndarray:
        """Softmax probabilities (K, X, Y, Z): one pass or a sliding window, per flip of the TTA."""
        from .window_inference import sliding_window_logits, softmax, whole_volume_logits

        meta = self.bundle.meta
        flips = TTA_FLIPS if self.tta else ((),)
        windows = 1 if mode == "whole" else count_windows(array.shape[1:], meta.patch_size, self.overlap)
        total = len(flips) * math.ceil(windows / (1 if mode == "whole" else meta.sw_batch_size))
        done = 0

        def network(batch: np.ndarray) -> np.ndarray:
            nonlocal done
            if cancelled is not None and cancelled():
                raise CancelledError("segmentation cancelled")
            output = self.network(batch)
            done += 1
            report(0.1 + 0.8 * min(done / total, 1.0), f"network: window batch {done}/{total}")
            return output

        result: np.ndarray | None = None
        for flip in flips:
            axes = tuple(1 + a for a in flip)
            image = np.ascontiguousarray(np.flip(array, axes)) if flip else array
            if mode == "whole":
                logits = whole_volume_logits(image, network, meta.patch_size, self.divisor)
            else:
                logits = sliding_window_logits(
                    image, network, meta.patch_size, self.overlap, meta.blend_mode, meta.sw_batch_size
                )
            probabilities = softmax(logits.astype(np.float32, copy=False))
            if flip:
                probabilities = np.flip(probabilities, axes)
            result = probabilities if result is None else result + probabilities
        assert result is not None
        return result / len(flips) if len(flips) > 1 else result

    def segment_file(
        self,
        input_path: str | os.PathLike,
        output_path: str | os.PathLike,
        channel: int | None = None,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
        cancelled: Callable[[], bool] | None = None,
        series: str | int | None = None,
    ) -> SegmentationResult:
        """Read ``input_path``, segment it and write the mask to ``output_path`` atomically.

        The output path is checked before any work, so a run that would fail to
        write fails at once and nothing is written. ``series`` (SeriesInstanceUID or
        SeriesNumber) picks the series of a DICOM folder (default: the axial T2).
        """
        from .image_io import check_output_path, read_volume, write_mask
        from .safe_paths import check_not_input

        check_not_input(output_path, input_path)  # never replace the input, even through a link
        output = check_output_path(output_path, overwrite=overwrite)
        start = time.perf_counter()
        image = read_volume(input_path, channel=channel, series=series)
        read_seconds = time.perf_counter() - start
        result = self.segment(image, progress=progress, cancelled=cancelled)
        start = time.perf_counter()
        write_mask(result.mask, output, overwrite=overwrite, segments=self.segments())
        result.timings = {"read": read_seconds, **result.timings, "write": time.perf_counter() - start}
        result.input_path, result.output_path = str(input_path), str(output)
        return result

    def segments(self) -> list[Any]:
        """The bundle's labels as ``SegmentInfo`` for segmentation files."""
        from .image_io import SegmentInfo
        from .terminology import slicer_terminology_tag

        return [
            SegmentInfo(label.value, label.name, tuple(label.color), slicer_terminology_tag(label.terminology))
            for label in self.bundle.meta.labels
        ]
