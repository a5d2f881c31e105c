"""Segment a prostate MRI with a model bundle: the path every front end uses.

``Segmenter`` loads a bundle once and segments many images: MONAI
preprocessing driven by the bundle's ``model.json`` (orientation, spacing,
normalisation), sliding-window inference with gaussian blending, the
probabilities mapped back to the input grid, largest connected component and
plausibility checks. The returned mask has exactly the input's size, spacing,
origin and direction.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .bundle import ModelBundle, resolve_model
from .errors import CancelledError, InputError
from .postprocessing import keep_largest_component, mask_volume_ml, plausibility_warnings
from .quality_checks import measure_quality, quality_warnings, thresholds_from_model

ProgressCallback = Callable[[float, str], None]


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
            "input_size": list(self.input_size),
            "input_spacing_mm": [round(s, 4) for s in self.input_spacing],
            "volume_ml": round(self.volume_ml, 2),
            "warnings": list(self.warnings),
            "quality": {k: (None if v != v else v) for k, v in self.quality.items()},  # NaN -> null
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "seconds": round(sum(self.timings.values()), 3),
        }


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI's inferer visits for a volume of ``shape``."""
    total = 1
    for size, window in zip(shape, roi):
        size = max(size, window)
        interval = window if size == window else max(int(window * (1 - overlap)), 1)
        total *= math.ceil((size - window) / interval) + 1
    return total


class Segmenter:
    """Loads a model bundle once and segments images with it.

    Args:
        model: a :class:`ModelBundle`, a bundle name or path, or ``None`` for the default student.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        largest_component: keep the largest connected component; ``None`` follows the bundle.
        num_threads: CPU threads for torch (``None`` leaves torch's default).
    """

    def __init__(
        self,
        model: ModelBundle | str | os.PathLike | None = None,
        device: str = "auto",
        largest_component: bool | None = None,
        num_threads: int | None = None,
    ) -> None:
        import torch

        from .device import resolve_device

        self.device = resolve_device(device)
        self.bundle = model if isinstance(model, ModelBundle) else resolve_model(model)
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        meta = self.bundle.meta
        self.largest_component = meta.largest_component if largest_component is None else largest_component
        self.network = self.bundle.build_network().to(self.device)

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
            cancelled: polled between windows; returning True raises ``CancelledError``.
            return_probabilities: also keep the foreground probability map (``result.probabilities``).
        """
        import SimpleITK as sitk

        from .preprocessing import preprocess_image

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
        tensor, transform = preprocess_image(image, meta.orientation, meta.spacing, meta.normalization)
        timings["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        probabilities = self._run_network(tensor, report, cancelled)
        timings["network"] = time.perf_counter() - start

        start = time.perf_counter()
        report(0.9, "mapping back to the input grid")
        labels = self._labels_on_input_grid(probabilities, tensor, transform).transpose(2, 1, 0)  # (z, y, x)
        if self.largest_component:
            labels = keep_largest_component(labels)
        mask = sitk.GetImageFromArray(np.ascontiguousarray(labels))
        mask.CopyInformation(image)
        spacing = image.GetSpacing()
        quality = measure_quality(sitk.GetArrayViewFromImage(image), labels, spacing, probabilities)
        warnings = plausibility_warnings(labels, spacing, meta.volume_ml_range)
        warnings += quality_warnings(quality, thresholds_from_model(meta.raw))
        foreground = (
            self._foreground_on_input_grid(probabilities, tensor, transform, image) if return_probabilities else None
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
        )

    @staticmethod
    def _foreground_on_input_grid(probabilities: Any, tensor: Any, transform: Any, image: Any) -> Any:
        """The foreground probability (1 - background) resampled to the input grid, as a SimpleITK image."""
        import SimpleITK as sitk

        from .preprocessing import invert_prediction

        foreground = probabilities[1:].sum(0, keepdim=True)
        inverted = invert_prediction(foreground, tensor, transform).as_tensor()[0].numpy()
        result = sitk.GetImageFromArray(np.ascontiguousarray(inverted.transpose(2, 1, 0), dtype=np.float32))
        result.CopyInformation(image)
        return result

    @staticmethod
    def _labels_on_input_grid(probabilities: Any, tensor: Any, transform: Any) -> np.ndarray:
        """Invert the probabilities to the input grid and take the most likely class (x, y, z).

        With two classes only the foreground channel is resampled: linear
        interpolation keeps the two channels summing to one, so thresholding it
        at 0.5 equals the argmax of both, at half the cost.
        """
        from .preprocessing import invert_prediction

        if probabilities.shape[0] == 2:
            foreground = invert_prediction(probabilities[1:], tensor, transform).as_tensor()[0]
            return (foreground > 0.5).numpy().astype(np.uint8)
        inverted = invert_prediction(probabilities, tensor, transform).as_tensor()
        return inverted.argmax(0).numpy().astype(np.uint8)

    def _run_network(
        self, tensor: Any, report: ProgressCallback, cancelled: Callable[[], bool] | None
    ) -> Any:
        """Sliding-window inference -> softmax probabilities (C, X, Y, Z) on the CPU."""
        import torch
        from monai.inferers import SlidingWindowInferer

        meta = self.bundle.meta
        windows = count_windows(tensor.shape[1:], meta.patch_size, meta.overlap)
        batches = math.ceil(windows / meta.sw_batch_size)
        done = 0

        def network(batch: torch.Tensor) -> torch.Tensor:
            nonlocal done
            if cancelled is not None and cancelled():
                raise CancelledError("segmentation cancelled")
            output = self.network(batch)
            done += 1
            report(0.1 + 0.8 * min(done / batches, 1.0), f"network: window batch {done}/{batches}")
            return output

        inferer = SlidingWindowInferer(
            roi_size=meta.patch_size,
            sw_batch_size=meta.sw_batch_size,
            overlap=meta.overlap,
            mode=meta.blend_mode,
            padding_mode="replicate",
        )
        data = tensor.as_tensor()[None].to(self.device)
        with torch.inference_mode():
            logits = inferer(data, network)
            probabilities = torch.softmax(logits.float(), dim=1)[0]
        return probabilities.cpu()

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
