"""The MRML logic of the Slicer module, with real MRML classes from the ``slicer-core`` wheel.

Outside 3D Slicer: ``pip install slicer-core`` (needs vtk 9.6.2). Without it
these tests are skipped.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

slicer = pytest.importorskip(
    "slicer", reason="slicer-core is not installed (pip install slicer-core): no real MRML classes"
)
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402
from vtkmodules.vtkCommonCore import vtkCollection  # noqa: E402

from conftest import assert_same_geometry  # noqa: E402
from ProstateKDLib import slicer_logic  # noqa: E402
from ProstateKDLib.cli import main as cli_main  # noqa: E402
from ProstateKDLib.errors import BundleError, CancelledError, DeviceError, InputError, OutputError  # noqa: E402
from ProstateKDLib.seg_nrrd import PROSTATE_COLOR  # noqa: E402
from ProstateKDLib.slicer_logic import (  # noqa: E402
    ProstateKDLogic,
    ProstateKDParameters,
    image_to_volume_node,
    segmentation_node_to_mask,
    volume_node_to_image,
)
from ProstateKDLib.terminology import PROSTATE_TERMINOLOGY, slicer_terminology_tag  # noqa: E402

PROSTATE_TAG = slicer_terminology_tag(PROSTATE_TERMINOLOGY)


@pytest.fixture
def scene() -> Any:
    """An MRML scene with application, colors, volumes and segmentations logics (about 15 ms)."""
    scene = new_scene()
    yield scene
    scene.Clear(1)


def new_scene() -> Any:
    """A new MRML scene with application, colors, volumes and segmentations logics."""
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetSliceLogics(vtkCollection())
    app.SetViewLogics(vtkCollection())
    logics = []
    for name, cls in (("Colors", slicer.vtkMRMLColorLogic), ("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        logics.append(logic)
    scene._keep_alive = (app, logics)  # the logics live as long as the scene
    return scene


def scene_state(scene: Any) -> list[tuple[str, str]]:
    nodes = scene.GetNodes()
    return [(nodes.GetItemAsObject(i).GetID(), nodes.GetItemAsObject(i).GetName() or "")
            for i in range(nodes.GetNumberOfItems())]


def segmentation_state(node: Any) -> tuple:
    segmentation = node.GetSegmentation()
    ids = tuple(segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments()))
    names = tuple(segmentation.GetSegment(i).GetName() for i in ids)
    return ids, names, node.GetTransformNodeID()


def ras_matrix(image: Any) -> np.ndarray:
    """IJK-to-RAS computed independently from a SimpleITK (LPS) image."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag([-1, -1, 1]) @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = np.diag([-1, -1, 1]) @ np.asarray(image.GetOrigin())
    return matrix


def node_matrix(node: Any) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def add_volume(scene: Any, image: Any, name: str = "T2") -> Any:
    return image_to_volume_node(image, scene, name)


# ------------------------------------------------------------------ geometry
def test_volume_node_geometry_matches_slicer_reader(scene, make_volume, tmp_path):
    """A file read by Slicer's own reader converts to the image SimpleITK reads from the same file."""
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(sitk.Cast(make_volume(), sitk.sitkInt16), str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "read by Slicer")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    expected = sitk.ReadImage(str(path))
    image = volume_node_to_image(node)
    assert_same_geometry(image, expected, tol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(expected))
    assert image.GetPixelID() == expected.GetPixelID()
    np.testing.assert_allclose(node_matrix(node), ras_matrix(expected), atol=1e-5)


def test_image_to_volume_node_round_trip(scene, make_volume):
    image = make_volume()
    node = add_volume(scene, image)
    np.testing.assert_allclose(node.GetSpacing(), (0.5, 0.6, 3.0))
    np.testing.assert_allclose(node_matrix(node), ras_matrix(image), atol=1e-12)
    back = volume_node_to_image(node)
    assert_same_geometry(back, image, tol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))


# ----------------------------------------------------------------- segmenting
def exported_labels(scene: Any, segmentation_node: Any, volume_node: Any) -> np.ndarray:
    """All segments exported to a labelmap on the volume grid, by Slicer's own export."""
    segmentation = segmentation_node.GetSegmentation()
    ids = vtk.vtkStringArray()
    for i in range(segmentation.GetNumberOfSegments()):
        ids.InsertNextValue(segmentation.GetNthSegmentID(i))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation_node, ids, labelmap, volume_node
    )
    labels = slicer.util.arrayFromVolume(labelmap).copy()
    scene.RemoveNode(labelmap)
    return labels


def check_prostate_segment(segmentation_node: Any) -> None:
    segmentation = segmentation_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "Prostate"
    assert slicer_logic.segment_terminology(segment) == PROSTATE_TAG
    value = vtk.reference("")
    assert segment.GetTag("TerminologyEntry", value) and str(value) == PROSTATE_TAG
    assert "SCT^41216001^Prostate" in PROSTATE_TAG
    np.testing.assert_allclose(segment.GetColor(), PROSTATE_COLOR, atol=1e-3)
    assert segmentation_node.GetDisplayNode() is not None
    assert segmentation.ContainsRepresentation("Closed surface")


@pytest.fixture
def cli_case(tmp_path, make_volume, tiny_bundle) -> dict[str, Any]:
    """A volume written to disk, and what ``prostatekd segment`` writes for it."""
    volume = tmp_path / "t2.nrrd"
    sitk.WriteImage(make_volume(), str(volume))
    output = tmp_path / "cli_mask.nii.gz"
    code = cli_main(["segment", str(volume), str(output), "--model", str(tiny_bundle.path), "--device", "cpu"])
    assert code == 0
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))
    assert 0 < expected.mean() < 1, "the tiny model must give a non-trivial mask for a meaningful comparison"
    return {"volume": volume, "expected": expected, "image": sitk.ReadImage(str(volume))}


def test_segment_equals_cli_voxel_for_voxel(scene, cli_case, tiny_bundle):
    volume_node = add_volume(scene, cli_case["image"])
    logic = ProstateKDLogic(scene)
    steps: list[float] = []
    node, result = logic.segment(volume_node, model=str(tiny_bundle.path), device="cpu",
                                 progress=lambda fraction, message: steps.append(fraction))
    check_prostate_segment(node)
    assert node.GetScene() is scene
    np.testing.assert_array_equal(exported_labels(scene, node, volume_node), cli_case["expected"])
    mask = segmentation_node_to_mask(node, volume_node, scene)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mask), cli_case["expected"])
    assert_same_geometry(mask, cli_case["image"])
    assert result.volume_ml == pytest.approx(cli_case["expected"].sum() * 0.5 * 0.6 * 3.0 / 1000)
    assert steps[0] == 0.0 and steps[-1] == 1.0

    # Applying again into the same node replaces its segments.
    existing = node
    node, _ = logic.segment(volume_node, model=str(tiny_bundle.path), device="cpu",
                            output_segmentation_node=existing, largest_component=False)
    assert node is existing
    check_prostate_segment(node)


@pytest.mark.parametrize("warm", [True, False], ids=["warm-worker", "one-process"])
def test_background_process_gives_the_same_voxels(scene, cli_case, tiny_bundle, warm):
    volume_node = add_volume(scene, cli_case["image"])
    logic = ProstateKDLogic(scene)
    job = logic.start_segmentation(volume_node, model=str(tiny_bundle.path), device="cpu", python=sys.executable,
                                   warm=warm)
    job.wait(timeout=300)
    logic.close()
    assert job.finished
    node, result = logic.finish_segmentation(job, volume_node)
    assert not job.folder.exists()  # temporary folder removed
    check_prostate_segment(node)
    np.testing.assert_array_equal(exported_labels(scene, node, volume_node), cli_case["expected"])
    assert result.volume_ml == pytest.approx(cli_case["expected"].sum() * 0.5 * 0.6 * 3.0 / 1000, abs=0.01)


@pytest.mark.parametrize("warm", [True, False], ids=["warm-worker", "one-process"])
def test_background_process_cancel_kills_it(scene, make_volume, tiny_bundle, warm):
    volume_node = add_volume(scene, make_volume())
    before = scene_state(scene)
    logic = ProstateKDLogic(scene)
    job = logic.start_segmentation(volume_node, model=str(tiny_bundle.path), device="cpu", python=sys.executable,
                                   warm=warm)
    process = job.process
    job.cancel()
    job.wait(timeout=30)
    logic.close()
    assert process.returncode is not None and process.returncode != 0
    with pytest.raises(CancelledError):
        logic.finish_segmentation(job, volume_node)
    assert scene_state(scene) == before
    assert not job.folder.exists()


@pytest.mark.parametrize("warm", [True, False], ids=["warm-worker", "one-process"])
def test_background_process_reports_the_cli_error(scene, make_volume, tiny_bundle, warm):
    volume_node = add_volume(scene, make_volume())
    logic = ProstateKDLogic(scene)
    job = logic.start_segmentation(volume_node, model=str(tiny_bundle.path), device="cuda:7", python=sys.executable,
                                   warm=warm)
    job.wait(timeout=300)
    logic.close()
    before = scene_state(scene)
    with pytest.raises(DeviceError, match="device cuda:7 is not available"):
        logic.finish_segmentation(job, volume_node)
    assert scene_state(scene) == before


# ------------------------------------------------------------------ failures
def invalid_bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "broken-bundle"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"format_version": 1, "name": "broken"}))
    return folder


def failure_cases(scene: Any, make_volume: Any, tmp_path: Path) -> list[tuple[str, Any, dict, type, str]]:
    four_d = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "four channels")
    slicer.util.updateVolumeFromArray(four_d, np.random.default_rng(0).random((12, 40, 48, 4)).astype(np.float32))
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no voxels")
    constant = add_volume(scene, sitk.Image([48, 40, 12], sitk.sitkFloat32), "constant")
    good = add_volume(scene, make_volume(), "good")
    return [
        ("no volume", None, {}, InputError, "no input volume selected"),
        ("4D", four_d, {}, InputError, r"has 4 channels \(0-3\).*choose one channel"),
        ("empty", empty, {}, InputError, "volume 'no voxels' is empty"),
        ("constant", constant, {}, InputError, "volume 'constant' is constant"),
        ("invalid bundle", good, {"model": str(invalid_bundle(tmp_path))}, BundleError, "missing field"),
        ("missing bundle", good, {"model": "no-such-model"}, BundleError, "model 'no-such-model' not found"),
    ]


@pytest.mark.parametrize("background", [False, True], ids=["in-process", "background"])
def test_failures_leave_the_scene_unchanged(scene, make_volume, tmp_path, tiny_bundle, background):
    logic = ProstateKDLogic(scene)
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "earlier result")
    existing.GetSegmentation().AddEmptySegment("Gland", "Gland", [0.1, 0.2, 0.3])
    for label, volume, kwargs, error, message in failure_cases(scene, make_volume, tmp_path):
        options = {"model": str(tiny_bundle.path), "device": "cpu", **kwargs}
        for output in (None, existing):
            before, segments = scene_state(scene), segmentation_state(existing)
            with pytest.raises(error, match=message):
                if background:
                    logic.start_segmentation(volume, python=sys.executable, **options)
                else:
                    logic.segment(volume, output_segmentation_node=output, **options)
            assert scene_state(scene) == before, label
            assert segmentation_state(existing) == segments, label


def test_failure_after_node_creation_is_rolled_back(scene, make_volume, tiny_bundle, monkeypatch):
    volume_node = add_volume(scene, make_volume())
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "earlier result")
    existing.GetSegmentation().AddEmptySegment("Gland", "Gland", [0.1, 0.2, 0.3])
    logic = ProstateKDLogic(scene)
    original = slicer_logic.mask_to_segmentation_node

    def half_done(mask, node, reference, segments):
        original(mask, node, reference, segments)  # the node is fully modified ...
        raise OutputError("disk full")  # ... and then something fails

    monkeypatch.setattr(slicer_logic, "mask_to_segmentation_node", half_done)
    for output in (None, existing):
        before, segments = scene_state(scene), segmentation_state(existing)
        with pytest.raises(OutputError, match="disk full"):
            logic.segment(volume_node, model=str(tiny_bundle.path), device="cpu", output_segmentation_node=output)
        assert scene_state(scene) == before
        assert segmentation_state(existing) == segments


def test_mask_on_another_grid_is_refused(scene, make_volume):
    volume_node = add_volume(scene, make_volume())
    logic = ProstateKDLogic(scene)
    before = scene_state(scene)
    with pytest.raises(InputError, match="not on the grid"):
        logic.apply_mask(volume_node, sitk.Image([10, 10, 10], sitk.sitkUInt8), [])
    assert scene_state(scene) == before


# --------------------------------------------------------- training cases
def test_save_training_case_round_trip(scene, make_volume, tmp_path):
    from ProstateKDLib.seg_nrrd import PROSTATE_SEGMENT

    image = sitk.Cast(make_volume(), sitk.sitkInt16)
    volume_node = add_volume(scene, image)
    labels = (sitk.GetArrayFromImage(image) > 200).astype(np.uint8)
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    logic = ProstateKDLogic(scene)
    segmentation_node = logic.apply_mask(volume_node, mask, [PROSTATE_SEGMENT])
    # A second, unrelated segment (e.g. a lesion) is not saved as gland.
    segmentation_node.GetSegmentation().AddEmptySegment("Lesion", "Lesion", [1.0, 0.0, 0.0])
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    before = scene_state(scene)

    first = logic.save_training_case(volume_node, segmentation_node, str(dataset), "SLICER")
    second = logic.save_training_case(volume_node, segmentation_node, str(dataset), "SLICER")
    assert scene_state(scene) == before
    assert first.case_id == "SLICER/Case00" and second.case_id == "SLICER/Case01"
    assert first.image == dataset.resolve() / "SLICER" / "Case00.nii.gz"
    assert first.label == dataset.resolve() / "SLICER" / "Case00_segmentation.nii.gz"

    saved_image, saved_label = sitk.ReadImage(str(first.image)), sitk.ReadImage(str(first.label))
    assert_same_geometry(saved_image, image)
    assert_same_geometry(saved_label, image)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(saved_image), sitk.GetArrayViewFromImage(image))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(saved_label), labels)
    assert saved_label.GetPixelID() == sitk.sitkUInt8

    # Read back into Slicer, the saved case overlays the original volume exactly.
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(first.image))
    assert storage.ReadData(node)
    np.testing.assert_allclose(node_matrix(node), node_matrix(volume_node), atol=1e-4)

    with open(dataset / "dataset_index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == ["SLICER/Case00", "SLICER/Case01"]
    assert rows[0]["image"] == "SLICER/Case00.nii.gz" and rows[0]["label"] == "SLICER/Case00_segmentation.nii.gz"
    assert rows[0]["source"] == "slicer-correction" and rows[0]["site"] == "SLICER"

    dataset_module = pytest.importorskip("ProstateKDLib.datasets")
    if not hasattr(dataset_module, "index_multisite"):
        pytest.skip("ProstateKDLib.datasets.index_multisite does not exist yet")
    records = dataset_module.index_multisite(dataset)
    assert [r.case_id for r in records] == ["SLICER/Case00", "SLICER/Case01"]


def test_save_training_case_errors_leave_scene_unchanged(scene, make_volume, tmp_path):
    volume_node = add_volume(scene, make_volume())
    logic = ProstateKDLogic(scene)
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    blank = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "blank")
    blank.GetSegmentation().AddEmptySegment("Prostate", "Prostate", [1.0, 0.5, 0.5])
    two = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "two")
    two.GetSegmentation().AddEmptySegment("A", "A", [1.0, 0.5, 0.5])
    two.GetSegmentation().AddEmptySegment("B", "B", [1.0, 0.5, 0.5])
    before = scene_state(scene)
    cases = [
        (volume_node, None, str(tmp_path), "SITE", InputError, "no segmentation selected"),
        (None, blank, str(tmp_path), "SITE", InputError, "no input volume selected"),
        (volume_node, empty, str(tmp_path), "SITE", InputError, "has no segments"),
        (volume_node, two, str(tmp_path), "SITE", InputError, "none is named 'Prostate'"),
        (volume_node, blank, str(tmp_path), "SITE", InputError, "segmentation is empty"),
        (volume_node, blank, str(tmp_path / "missing"), "SITE", OutputError, "dataset folder does not exist"),
        (volume_node, blank, "", "SITE", InputError, "no dataset folder chosen"),
    ]
    for volume, segmentation, folder, site, error, message in cases:
        with pytest.raises(error, match=message):
            logic.save_training_case(volume, segmentation, folder, site)
        assert scene_state(scene) == before
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- parameters
def test_parameters_live_in_one_scene_node(scene):
    parameters = ProstateKDParameters.of_scene(scene)
    assert (parameters.model, parameters.device, parameters.largest_component) == ("", "auto", True)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T2")
    parameters.model, parameters.device, parameters.largest_component = "prostatekd-student", "cpu", False
    parameters.dataset_folder, parameters.site, parameters.input_volume = "/data/kd", "RUNMC", volume
    again = ProstateKDLogic(scene).parameters()
    assert again.node is parameters.node
    assert (again.model, again.device, again.largest_component) == ("prostatekd-student", "cpu", False)
    assert (again.dataset_folder, again.site, again.input_volume) == ("/data/kd", "RUNMC", volume)
    assert again.output_segmentation is None
    assert again.node.GetParameter("LargestComponent") == "false"


def test_channel_of_a_multichannel_volume(scene, make_volume):
    image = make_volume()
    voxels = sitk.GetArrayFromImage(image)
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "two echoes")
    slicer.util.updateVolumeFromArray(node, np.stack([voxels * 0, voxels], axis=-1))
    node.SetIJKToRASMatrix(vtk.vtkMatrix4x4())
    reference = image_to_volume_node(image)
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    second = volume_node_to_image(node, channel=1)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(second), voxels)
    assert_same_geometry(second, image, tol=1e-12)
    with pytest.raises(InputError, match=r"channel 2 out of range: volume 'two echoes' has 2 channels \(0-1\)"):
        volume_node_to_image(node, channel=2)


def test_sample_scenario_with_the_default_model(scene, tmp_path):
    """What ProstateKDTest does inside Slicer: load the real sample, segment, check, save a training case."""
    samples = Path(__file__).resolve().parents[1] / "Resources" / "Samples"
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "PROMISE12_HK_Case13")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(samples / "PROMISE12_HK_Case13.nii.gz"))
    assert storage.ReadData(volume)
    logic = ProstateKDLogic(scene)
    node, result = logic.segment(volume, device="cpu")  # default model: the bundled student
    check_prostate_segment(node)
    assert 10 < result.volume_ml < 80 and result.warnings == []
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(samples / "PROMISE12_HK_Case13_segmentation.nii.gz"))) > 0
    mask = sitk.GetArrayFromImage(segmentation_node_to_mask(node, volume, scene)) > 0
    assert 2 * (mask & reference).sum() / (mask.sum() + reference.sum()) > 0.78  # expert mask; CLI: 0.807
    case = logic.save_training_case(volume, node, str(tmp_path), "PHANTOM")
    assert case.case_id == "PHANTOM/Case00"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))), mask)
