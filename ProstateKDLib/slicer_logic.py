"""The MRML logic of the 3D Slicer module: volume and segmentation nodes <-> SimpleITK images.

The only module of ProstateKDLib that imports ``slicer`` and ``vtk`` (never
``qt``), so it runs inside 3D Slicer and, for tests, with the ``slicer-core``
wheel. Everything takes the MRML scene as an argument (no ``slicer.mrmlScene``).

Geometry: Slicer works in RAS, SimpleITK in LPS. For a volume node with
IJK-to-RAS directions ``D`` (unit columns), origin ``o`` and spacing ``s``, the
SimpleITK image has direction ``diag(-1,-1,1) @ D``, origin
``diag(-1,-1,1) @ o`` and spacing ``s``; the voxel arrays have the same
``(K, J, I)`` order in both, so voxels are copied as they are.

Failures raise :class:`~ProstateKDLib.errors.ProstateKDError` subclasses with a
one-line message and leave the scene as it was: a segmentation node created
by a failed run is removed, an existing output node keeps its segments.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from .background import BackgroundSegmentation, default_launcher, library_parent
from .errors import InputError, ProstateKDError
from .seg_nrrd import AUTO_COLOR, TERMINOLOGY_TAG, SegmentInfo
from .segment_worker import WarmWorker
from .training_case import TrainingCase, save_training_case
from .warm_segmentation import WarmSegmentation

MODULE_NAME = "ProstateKD"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
PROSTATE_CODE = "41216001"  # SNOMED CT "Prostate"
ProgressCallback = Callable[[float, str], None]

__all__ = [
    "ProstateKDLogic",
    "ProstateKDParameters",
    "bundle_segments",
    "image_to_volume_node",
    "mask_to_segmentation_node",
    "segment_terminology",
    "segmentation_node_to_mask",
    "set_segment_terminology",
    "set_terminology_tag",
    "terminology_tag",
    "volume_node_to_image",
]


def _node_name(node: Any) -> str:
    return node.GetName() or node.GetID() or node.GetClassName()


# ------------------------------------------------------------------ volumes
def volume_node_to_image(volume_node: Any, channel: int | None = None) -> sitk.Image:
    """A scalar volume node as a SimpleITK image with the same voxels and exact geometry (LPS).

    The voxel type is kept. Multi-channel volumes (4D or vector voxels) need ``channel``.

    Raises:
        InputError: ``no input volume selected``; ``'<name>' is not a scalar volume (<class>)``;
            ``volume '<name>' is empty (it has no voxels)``;
            ``volume '<name>' has <n> channels (0-<n-1>) ...; choose one channel``;
            ``channel <c> out of range: volume '<name>' has <n> channels (0-<n-1>)``;
            ``volume '<name>' has a degenerate direction matrix; its orientation is corrupt``.
    """
    if volume_node is None:
        raise InputError("no input volume selected")
    name = _node_name(volume_node)
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{name}' is not a scalar volume ({volume_node.GetClassName()})")
    data = volume_node.GetImageData()
    if data is None or data.GetPointData() is None or data.GetPointData().GetScalars() is None \
            or min(data.GetDimensions()) < 1 or data.GetNumberOfPoints() == 0:
        raise InputError(f"volume '{name}' is empty (it has no voxels)")
    components = data.GetNumberOfScalarComponents()
    described = f"{components} channel{'s' if components > 1 else ''} (0-{components - 1})"
    if channel is not None and not 0 <= channel < components:
        raise InputError(f"channel {channel} out of range: volume '{name}' has {described}")
    from vtk.util.numpy_support import vtk_to_numpy

    shape = tuple(reversed(data.GetDimensions())) + ((components,) if components > 1 else ())
    array = vtk_to_numpy(data.GetPointData().GetScalars()).reshape(shape)  # (k, j, i[, c]) view
    if components > 1:
        if channel is None:
            raise InputError(
                f"volume '{name}' has {described} (a 4D or multi-channel volume); choose one channel "
                "(for example with the Vector to Scalar Volume module)"
            )
        array = array[..., channel]
    image = sitk.GetImageFromArray(np.array(array, copy=True))
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASDirectionMatrix(matrix)
    directions = np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])
    norms = np.linalg.norm(directions, axis=0)
    if not np.all(np.isfinite(directions)) or np.any(norms < 1e-12) or abs(np.linalg.det(directions)) < 1e-12:
        raise InputError(f"volume '{name}' has a degenerate direction matrix; its orientation is corrupt")
    image.SetSpacing([float(s) for s in volume_node.GetSpacing()])
    image.SetOrigin([float(v) for v in LPS_FROM_RAS @ np.asarray(volume_node.GetOrigin(), dtype=float)])
    image.SetDirection([float(v) for v in (LPS_FROM_RAS @ (directions / norms)).ravel()])
    return image


def _set_node_geometry(node: Any, image: sitk.Image) -> None:
    """IJK-to-RAS of ``node`` from the geometry of the LPS ``image``."""
    direction = LPS_FROM_RAS @ np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    node.SetIJKToRASDirections([[float(v) for v in row] for row in direction])
    node.SetSpacing(*[float(s) for s in image.GetSpacing()])
    node.SetOrigin(*[float(v) for v in LPS_FROM_RAS @ np.asarray(image.GetOrigin(), dtype=float)])


def image_to_volume_node(
    image: sitk.Image, scene: Any = None, name: str = "Volume", labelmap: bool = False
) -> Any:
    """A new volume node (labelmap node when ``labelmap``) with the voxels and geometry of ``image``.

    With a ``scene`` the node is added to it, with default display nodes.
    """
    if image.GetDimension() != 3:
        raise InputError(f"the image must be 3D, got {image.GetDimension()}D")
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    if scene is not None:
        node = scene.AddNode(node)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    _set_node_geometry(node, image)
    if scene is not None:
        node.CreateDefaultDisplayNodes()
    return node


# ----------------------------------------------------------- segmentations
def bundle_segments(bundle: Any) -> list[SegmentInfo]:
    """The labels of a model bundle as ``SegmentInfo`` (name, colour, Slicer terminology)."""
    from .terminology import slicer_terminology_tag

    return [
        SegmentInfo(label.value, label.name, tuple(label.color), slicer_terminology_tag(label.terminology))
        for label in bundle.meta.labels
    ]


def set_segment_terminology(segment: Any, terminology: str | None) -> None:
    """Give a ``vtkSegment`` its terminology entry string (nothing for None or "").

    ``vtkSegment::SetTerminology`` exists from Slicer 5.10; Slicer 5.6-5.8 keep
    the entry in the segment's ``TerminologyEntry`` tag (5.10+ stores it there too).
    """
    if not terminology:
        return
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(terminology)
    else:  # Slicer 5.6-5.8
        set_terminology_tag(segment, terminology)


def set_terminology_tag(segment: Any, terminology: str) -> None:
    """The Slicer 5.6-5.8 way: the entry string in the segment's ``TerminologyEntry`` tag."""
    segment.SetTag(TERMINOLOGY_TAG, terminology)


def terminology_tag(segment: Any) -> str:
    """The Slicer 5.6-5.8 way: the segment's ``TerminologyEntry`` tag ("" when it has none)."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(TERMINOLOGY_TAG, value) else ""


def mask_to_segmentation_node(
    mask: sitk.Image,
    segmentation_node: Any,
    reference_volume_node: Any,
    segments: Sequence[SegmentInfo],
) -> None:
    """Replace the segments of ``segmentation_node`` by the labels of ``mask``.

    ``mask`` must be on the grid of ``reference_volume_node``; the volume's own
    IJK-to-RAS is used, so the segments match its voxels exactly. Every label
    of ``segments`` gets a segment (empty when absent from the mask), named,
    coloured and tagged with its terminology; a label value found in the mask
    without a segment description becomes ``"Label <value>"``. The node shows
    in slice and 3D views (closed surface).

    Raises:
        InputError: the mask is not on the volume's grid.
        ProstateKDError: Slicer could not import the labelmap.
    """
    data = reference_volume_node.GetImageData() if reference_volume_node is not None else None
    if data is None:
        raise InputError("no reference volume with voxels for the segmentation")
    if tuple(mask.GetSize()) != tuple(data.GetDimensions()) or mask.GetDimension() != 3:
        raise InputError(
            f"the mask ({'x'.join(map(str, mask.GetSize()))}) is not on the grid of volume "
            f"'{_node_name(reference_volume_node)}' ({'x'.join(map(str, data.GetDimensions()))})"
        )
    labels = sitk.GetArrayFromImage(mask)
    if labels.dtype.kind == "f" or labels.min() < 0 or labels.max() > 255:
        raise InputError("mask values must be integers in 0-255")
    labels = labels.astype(np.uint8)
    known = {segment.label_value: segment for segment in segments}
    extra = {
        value: SegmentInfo(value, f"Label {value}", AUTO_COLOR)
        for value in (int(v) for v in np.unique(labels) if v)
        if value not in known
    }
    ordered = sorted({**known, **extra}.values(), key=lambda s: s.label_value)

    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    slicer.util.updateVolumeFromArray(labelmap, labels)
    matrix = vtk.vtkMatrix4x4()
    reference_volume_node.GetIJKToRASMatrix(matrix)
    labelmap.SetIJKToRASMatrix(matrix)

    # The labelmap (not in the scene) has no parent transform: Slicer imports it as world
    # coordinates and resamples it by the inverse of the node's transform. So the node must be
    # untransformed during the import and placed under the volume's transform afterwards; else an
    # Apply into a node that is already under the transform would move the segment.
    segmentation_node.SetAndObserveTransformNodeID(None)
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation = segmentation_node.GetSegmentation()
    segmentation.RemoveAllSegments()
    ids = vtk.vtkStringArray()
    by_value: dict[int, str] = {}
    for segment in ordered:
        segment_id = segmentation.AddEmptySegment(
            segmentation.GenerateUniqueSegmentID(segment.name), segment.name, list(segment.color)
        )
        by_value[segment.label_value] = segment_id
        set_segment_terminology(segmentation.GetSegment(segment_id), segment.terminology)
    for value in range(1, max(by_value, default=0) + 1):
        ids.InsertNextValue(by_value.get(value, ""))
    if ordered and not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        labelmap, segmentation_node, ids
    ):
        raise ProstateKDError(f"Slicer could not import the mask into segmentation '{_node_name(segmentation_node)}'")
    segmentation_node.SetAndObserveTransformNodeID(reference_volume_node.GetTransformNodeID())
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.CreateClosedSurfaceRepresentation()


def segment_terminology(segment: Any) -> str:
    """The terminology entry string of a ``vtkSegment`` ("" when it has none)."""
    if hasattr(segment, "GetTerminology"):  # Slicer >= 5.10
        return segment.GetTerminology() or ""
    return terminology_tag(segment)  # Slicer 5.6-5.8


def _is_prostate(segment: Any) -> bool:
    return segment.GetName().strip().lower() == "prostate" or PROSTATE_CODE in segment_terminology(segment)


def segmentation_node_to_mask(
    segmentation_node: Any, reference_volume_node: Any, scene: Any, channel: int | None = None
) -> sitk.Image:
    """The gland of ``segmentation_node`` as a 0/1 uint8 image on the reference volume's grid.

    A segmentation with one segment gives that segment; with several, the
    segments named "Prostate" or coded SNOMED CT 41216001 are merged. The
    temporary labelmap node used for the export is removed from ``scene``.

    Raises:
        InputError: no segmentation selected, no segment, or several segments and none is the prostate.
    """
    if segmentation_node is None:
        raise InputError("no segmentation selected")
    name = _node_name(segmentation_node)
    reference = volume_node_to_image(reference_volume_node, channel=channel)
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if not ids:
        raise InputError(f"segmentation '{name}' has no segments")
    if len(ids) > 1:
        ids = [i for i in ids if _is_prostate(segmentation.GetSegment(i))]
        if not ids:
            raise InputError(
                f"segmentation '{name}' has several segments and none is named 'Prostate'; "
                "rename the gland segment to Prostate"
            )
    selected = vtk.vtkStringArray()
    for segment_id in ids:
        selected.InsertNextValue(segment_id)
    with _temporary_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{MODULE_NAME} export")
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, selected, labelmap, reference_volume_node
        ):
            raise ProstateKDError(f"Slicer could not export segmentation '{name}' to a labelmap")
        labels = slicer.util.arrayFromVolume(labelmap)
        if labels.shape != sitk.GetArrayViewFromImage(reference).shape:
            raise ProstateKDError(f"the exported labelmap of '{name}' is not on the volume's grid")
        mask = sitk.GetImageFromArray((labels != 0).astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


# ---------------------------------------------------------------- scene state
def _node_ids(scene: Any) -> list[str]:
    nodes = scene.GetNodes()
    return [nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())]


def _remove_nodes_added_since(scene: Any, before: set[str]) -> None:
    for node_id in reversed(_node_ids(scene)):
        if node_id not in before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)


@contextmanager
def _temporary_nodes(scene: Any) -> Iterator[None]:
    """Remove every node added to ``scene`` inside the block, however it ends."""
    before = set(_node_ids(scene))
    try:
        yield
    finally:
        _remove_nodes_added_since(scene, before)


@contextmanager
def _scene_unchanged_on_error(scene: Any, existing: Any = None) -> Iterator[None]:
    """On an exception, remove nodes added inside the block and restore ``existing``'s segments."""
    before = set(_node_ids(scene))
    backup = None
    transform_id = None
    if existing is not None:
        backup = slicer.vtkSegmentation()
        backup.DeepCopy(existing.GetSegmentation())
        transform_id = existing.GetTransformNodeID()
    try:
        yield
    except BaseException:
        _remove_nodes_added_since(scene, before)
        if existing is not None and backup is not None:
            existing.GetSegmentation().DeepCopy(backup)
            existing.SetAndObserveTransformNodeID(transform_id)
        raise


# ---------------------------------------------------------------- parameters
class _Parameter:
    """A string parameter of the module's parameter node, with a default and a type."""

    def __init__(self, key: str, default: Any, kind: type = str) -> None:
        self.key, self.default, self.kind = key, default, kind

    def __get__(self, owner: Any, objtype: Any = None) -> Any:
        if owner is None:
            return self
        text = owner.node.GetParameter(self.key)
        if not text:
            return self.default
        return text.lower() in ("1", "true", "yes", "on") if self.kind is bool else text

    def __set__(self, owner: Any, value: Any) -> None:
        text = ("true" if value else "false") if self.kind is bool else str(value or "")
        if owner.node.GetParameter(self.key) != text:
            owner.node.SetParameter(self.key, text)


class _Reference:
    """A node reference of the parameter node."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __get__(self, owner: Any, objtype: Any = None) -> Any:
        return self if owner is None else owner.node.GetNodeReference(self.role)

    def __set__(self, owner: Any, node: Any) -> None:
        node_id = node.GetID() if node is not None else None
        if owner.node.GetNodeReferenceID(self.role) != node_id:
            owner.node.SetNodeReferenceID(self.role, node_id)


class ProstateKDParameters:
    """The module's settings, kept in a ``vtkMRMLScriptedModuleNode`` so they are saved with the scene.

    Plain string parameters and node references: the same in every Slicer version.
    """

    model = _Parameter("Model", "")
    device = _Parameter("Device", "auto")
    largest_component = _Parameter("LargestComponent", True, bool)
    dataset_folder = _Parameter("DatasetFolder", "")
    site = _Parameter("Site", "")
    input_volume = _Reference("InputVolume")
    output_segmentation = _Reference("OutputSegmentation")

    def __init__(self, node: Any) -> None:
        self.node = node

    @classmethod
    def of_scene(cls, scene: Any) -> "ProstateKDParameters":
        """The scene's parameter node for this module, created when missing."""
        node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(MODULE_NAME)
            node.SetModuleName(MODULE_NAME)
            node.SetName(f"{MODULE_NAME} parameters")
            node = scene.AddNode(node)
        return cls(node)


# ---------------------------------------------------------------------- logic
def slicer_python() -> str:
    """The interpreter for child processes: ``PythonSlicer`` inside 3D Slicer, else this one."""
    if getattr(slicer, "app", None) is not None:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def slicer_launcher(args: list[str], cwd: str) -> Any:
    """Start a child process through ``slicer.util.launchConsoleProcess`` inside 3D Slicer."""
    if getattr(slicer, "app", None) is None:
        return default_launcher(args, cwd)
    startup = Path(args[0]).name.lower().startswith("pythonslicer")  # the launcher sets its own paths
    return slicer.util.launchConsoleProcess(
        args, useStartupEnvironment=startup, updateEnvironment={"PYTHONUNBUFFERED": "1"}, cwd=cwd
    )


def slicer_worker_python() -> str:
    """The interpreter of the warm worker.

    Inside 3D Slicer the real interpreter next to ``PythonSlicer`` (``python-real``), run
    with this process's environment (the one Slicer's launcher set up), so the worker's
    stdin is the pipe this process writes and a kill reaches the interpreter itself; else
    ``PythonSlicer`` (its launcher forwards stdin); outside Slicer this interpreter.
    """
    launcher = slicer_python()
    if launcher == sys.executable:
        return launcher
    folder = Path(launcher).parent
    for name in ("python-real.exe", "python-real") if os.name == "nt" else ("python-real",):
        if (folder / name).is_file():
            return str(folder / name)
    return launcher


def slicer_worker_launcher(args: list) -> "subprocess.Popen[str]":
    """Start the warm worker with text stdin/stdout/stderr pipes, in the library's parent folder.

    ``PythonSlicer`` gets Slicer's startup environment (its launcher adds its own paths);
    any other interpreter this process's environment.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if getattr(slicer, "app", None) is not None and Path(args[0]).name.lower().startswith("pythonslicer"):
        env = {**slicer.util.startupEnvironment(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, cwd=str(library_parent()), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1)


class ProstateKDLogic:
    """Segment volume nodes and save corrected segmentations as training cases.

    Background segmentations go to one warm worker process (:meth:`worker`): it keeps the
    model loaded, so only the first Apply pays Python start-up, imports and model load.
    :meth:`close` (the widget's cleanup, and the end of this Python) ends it; it also ends
    by itself once this process is gone.

    Args:
        scene: the MRML scene holding the nodes (``slicer.mrmlScene`` in the application).
    """

    def __init__(self, scene: Any) -> None:
        if scene is None:
            raise ValueError("ProstateKDLogic needs an MRML scene")
        self.scene = scene
        self._segmenter: Any = None
        self._segmenter_key: tuple | None = None
        self._worker: WarmWorker | None = None
        self._worker_key: tuple | None = None
        self._exit_hook = False

    def parameters(self) -> ProstateKDParameters:
        """The module settings stored in the scene."""
        return ProstateKDParameters.of_scene(self.scene)

    def prepare_input(self, volume_node: Any, channel: int | None = None) -> sitk.Image:
        """The volume as the float32 image the command line would read, validated.

        Raises:
            InputError: any message of :func:`volume_node_to_image` or
                :func:`~ProstateKDLib.image_io.validate_volume` (e.g. ``volume 'X' is constant ...``).
        """
        from .image_io import validate_volume

        image = sitk.Cast(volume_node_to_image(volume_node, channel), sitk.sitkFloat32)
        validate_volume(image, name=f"volume '{_node_name(volume_node)}'")
        return image

    def segmenter(self, model: Any = None, device: str = "auto", largest_component: bool | None = None) -> Any:
        """A :class:`~ProstateKDLib.inference.Segmenter`, reused while its settings do not change."""
        from .bundle import ModelBundle, resolve_model
        from .inference import Segmenter

        bundle = model if isinstance(model, ModelBundle) else resolve_model(model)
        key = (str(bundle.path), device, largest_component)
        if self._segmenter is None or self._segmenter_key != key:
            self._segmenter, self._segmenter_key = None, None
            self._segmenter = Segmenter(bundle, device=device, largest_component=largest_component)
            self._segmenter_key = key
        return self._segmenter

    def segment(
        self,
        volume_node: Any,
        model: Any = None,
        device: str = "auto",
        largest_component: bool | None = None,
        output_segmentation_node: Any = None,
        progress: ProgressCallback | None = None,
        cancelled: Callable[[], bool] | None = None,
        channel: int | None = None,
    ) -> tuple[Any, Any]:
        """Segment ``volume_node`` in this process with the same ``Segmenter`` as ``prostatekd segment``.

        Returns:
            ``(segmentation_node, SegmentationResult)``; the node is ``output_segmentation_node``
            (its segments replaced) or a new one.

        Raises:
            ProstateKDError: InputError, BundleError, DeviceError, CancelledError...; the scene is unchanged.
        """
        image = self.prepare_input(volume_node, channel)
        segmenter = self.segmenter(model, device, largest_component)
        result = segmenter.segment(image, progress=progress, cancelled=cancelled)
        node = self.apply_mask(volume_node, result.mask, segmenter.segments(), output_segmentation_node)
        return node, result

    def worker(self, model: Any = None, device: str = "auto", largest_component: bool | None = None,
               python: str | None = None, launcher: Any = None) -> WarmWorker:
        """The warm worker for these settings, kept while they do not change (else replaced)."""
        from .bundle import ModelBundle, resolve_model

        bundle = model if isinstance(model, ModelBundle) else resolve_model(model)
        key = (str(bundle.path), device, largest_component)
        if self._worker is None or self._worker_key != key:
            self.close()
            self._worker = WarmWorker(
                model=str(bundle.path),  # the child may not see this process's $PROSTATEKD_MODELS
                device=device, largest_component=largest_component,
                command=[python or slicer_worker_python()], launcher=launcher or slicer_worker_launcher,
            )
            self._worker_key = key
            if not self._exit_hook:
                atexit.register(self.close)
                self._exit_hook = True
        return self._worker

    def close(self) -> None:
        """End the warm worker (kills it at once: it holds nothing to save)."""
        worker, self._worker, self._worker_key = self._worker, None, None
        if worker is not None:
            worker.cancel()

    def start_segmentation(
        self,
        volume_node: Any,
        model: Any = None,
        device: str = "auto",
        largest_component: bool | None = None,
        channel: int | None = None,
        python: str | None = None,
        launcher: Any = None,
        warm: bool = True,
    ) -> "WarmSegmentation | BackgroundSegmentation":
        """Check the input and the bundle here, then segment in a background process.

        ``warm`` (default): send the volume to the warm worker (:meth:`worker`; ``launcher`` is
        then ``launcher(args) -> Popen`` with stdin/stdout pipes); else run one ``prostatekd
        segment`` process for this volume (``launcher(args, cwd)``, as
        ``slicer.util.launchConsoleProcess``). Poll the returned job (``poll()``, ``finished``,
        ``fraction``, ``message``, ``cancel()``) and pass it to :meth:`finish_segmentation`. The
        job carries ``segments`` (from the bundle) for that.
        """
        from .bundle import ModelBundle, resolve_model

        image = self.prepare_input(volume_node, channel)
        bundle = model if isinstance(model, ModelBundle) else resolve_model(model)
        if warm:
            worker = self.worker(bundle, device, largest_component, python=python, launcher=launcher)
            warm_job = WarmSegmentation(image, worker)
            warm_job.segments = bundle_segments(bundle)  # type: ignore[attr-defined]
            return warm_job.start()
        job = BackgroundSegmentation(
            image,
            model=str(bundle.path),  # the child may not see this process's $PROSTATEKD_MODELS
            device=device,
            largest_component=largest_component,
            python=python or slicer_python(),
            launcher=launcher or slicer_launcher,
        )
        job.segments = bundle_segments(bundle)  # type: ignore[attr-defined]
        return job.start()

    def finish_segmentation(
        self, job: "WarmSegmentation | BackgroundSegmentation", volume_node: Any, output_segmentation_node: Any = None
    ) -> tuple[Any, Any]:
        """Read a finished background job into a segmentation node; cleans the job up.

        Raises:
            ProstateKDError: the child's error (same class as its exit code), or CancelledError.
        """
        try:
            result = job.result()
            segments = getattr(job, "segments", None) or []
            node = self.apply_mask(volume_node, result.mask, segments, output_segmentation_node)
        finally:
            job.cleanup()
        return node, result

    def apply_mask(
        self,
        volume_node: Any,
        mask: sitk.Image,
        segments: Sequence[SegmentInfo],
        output_segmentation_node: Any = None,
    ) -> Any:
        """Put ``mask`` (on the volume's grid) into ``output_segmentation_node`` or a new segmentation node."""
        with _scene_unchanged_on_error(self.scene, output_segmentation_node):
            node = output_segmentation_node
            if node is None:
                node = self.scene.AddNewNodeByClass(
                    "vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(f"{_node_name(volume_node)} prostate")
                )
            mask_to_segmentation_node(mask, node, volume_node, segments)
        return node

    def save_training_case(
        self,
        volume_node: Any,
        segmentation_node: Any,
        dataset_dir: str,
        site: str,
        channel: int | None = None,
    ) -> TrainingCase:
        """Write the volume and its (corrected) gland segment as ``<dataset_dir>/<SITE>/CaseNN*.nii.gz``.

        Also appends a row to ``<dataset_dir>/dataset_index.csv``. The scene is left unchanged.

        Raises:
            InputError, OutputError: see :func:`ProstateKDLib.training_case.save_training_case`
                and :func:`segmentation_node_to_mask`.
        """
        if not dataset_dir:
            raise InputError("no dataset folder chosen")
        image = volume_node_to_image(volume_node, channel)
        mask = segmentation_node_to_mask(segmentation_node, volume_node, self.scene, channel)
        return save_training_case(image, mask, dataset_dir, site)
