"""Defects found by reading the Slicer module against the real Slicer/PythonQt sources (issue 16).

Each test failed before its fix. Defects 2 (job bound to the volume chosen at
Apply), 4 (torch installation errors) and 8 (self-test without torch) are
tested through the widget in a real Qt event loop in ``test_slicer_widget.py``;
defect 7 (Python 3.9) in ``test_slicer_python_version.py``.
"""

from __future__ import annotations

import sys
import textwrap
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

from ProstateKDLib.background import BackgroundSegmentation  # noqa: E402
from ProstateKDLib.seg_nrrd import PROSTATE_SEGMENT  # noqa: E402
from ProstateKDLib.slicer_logic import (  # noqa: E402
    ProstateKDLogic,
    segment_terminology,
    segmentation_node_to_mask,
    set_segment_terminology,
    set_terminology_tag,
    terminology_tag,
)
from ProstateKDLib.terminology import PROSTATE_TERMINOLOGY, slicer_terminology_tag  # noqa: E402
from test_slicer_logic import add_volume, new_scene  # noqa: E402

TERMINOLOGIES = slicer.vtkSlicerTerminologiesModuleLogic


@pytest.fixture
def scene() -> Any:
    scene = new_scene()
    yield scene
    scene.Clear(1)


def serialized(entry_string: str) -> str:
    """Slicer's own ``SerializeTerminologyEntry`` form of an entry string."""
    entry = slicer.vtkSlicerTerminologyEntry()
    assert TERMINOLOGIES.DeserializeTerminologyEntry(entry_string, entry)
    return TERMINOLOGIES.SerializeTerminologyEntry(entry)


# ---------------------------------------------------------------- defect 1
def test_defect1_second_apply_under_a_transform_keeps_the_segment(scene):
    """A 400-voxel box under a 25 mm translation: the second Apply into the same node must not move it."""
    image = sitk.Image([40, 40, 10], sitk.sitkFloat32)
    image.SetSpacing((1.0, 1.0, 3.0))
    volume = add_volume(scene, image)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 25.0)
    transform.SetMatrixTransformToParent(matrix)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    labels = np.zeros((10, 40, 40), np.uint8)
    labels[3:7, 10:20, 10:20] = 1
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)

    logic = ProstateKDLogic(scene)
    node = logic.apply_mask(volume, mask, [PROSTATE_SEGMENT])
    for attempt in ("first", "second", "third"):
        if attempt != "first":
            assert logic.apply_mask(volume, mask, [PROSTATE_SEGMENT], node) is node
        assert node.GetTransformNodeID() == transform.GetID()
        exported = sitk.GetArrayFromImage(segmentation_node_to_mask(node, volume, scene))
        assert exported.sum() == 400, f"{attempt} Apply: {exported.sum()} voxels"
        np.testing.assert_array_equal(exported, labels)


# ---------------------------------------------------------------- defect 3
def test_defect3_terminology_string_is_slicers_serialized_form(scene, tmp_path):
    entry = slicer_terminology_tag(PROSTATE_TERMINOLOGY)
    assert "|" not in entry
    assert entry == serialized(entry)
    image = sitk.Image([16, 16, 4], sitk.sitkFloat32)
    volume = add_volume(scene, image)
    labels = np.zeros((4, 16, 16), np.uint8)
    labels[1:3, 4:9, 4:9] = 1
    mask = sitk.GetImageFromArray(labels)
    node = ProstateKDLogic(scene).apply_mask(volume, mask, [PROSTATE_SEGMENT])
    assert segment_terminology(node.GetSegmentation().GetNthSegment(0)) == entry

    # saved as .seg.nrrd by Slicer and read back: the same string
    path = tmp_path / "prostate.seg.nrrd"
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    reloaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(path))
    assert reader.ReadData(reloaded)
    segment = reloaded.GetSegmentation().GetNthSegment(0)
    assert segment.GetName() == "Prostate"
    assert segment_terminology(segment) == entry == serialized(segment_terminology(segment))


# ---------------------------------------------------------------- defect 5
CHILD = textwrap.dedent(
    """
    import sys, json
    import SimpleITK as sitk
    out = sys.stdout.buffer
    out.write(b"progress 0.1 reading\\n")
    out.write(b"a line the locale codec cannot decode: \\xff\\xfe\\n")
    for i in range(20000):  # about 600 kB: far more than a pipe holds
        out.write(("progress %.4f network: window %d\\n" % (i / 20000, i)).encode())
    image = sitk.ReadImage(sys.argv[1])
    sitk.WriteImage(sitk.Cast(image > 1e9, sitk.sitkUInt8), sys.argv[2])
    out.write((json.dumps({"model": "m", "device": "cpu", "volume_ml": 0.0}) + "\\n").encode())
    out.flush()
    """
)


def test_defect5_an_undecodable_line_does_not_stop_reading(tmp_path):
    """Through slicer.util.launchConsoleProcess (a text pipe with the locale's strict codec)."""

    def launcher(args: list[str], cwd: str) -> Any:
        input_path, output_path = args[args.index("segment") + 1: args.index("segment") + 3]
        return slicer.util.launchConsoleProcess([sys.executable, "-c", CHILD, input_path, output_path],
                                                useStartupEnvironment=False, cwd=cwd)

    image = sitk.Image([8, 8, 4], sitk.sitkFloat32)
    job = BackgroundSegmentation(image, device="cpu", launcher=launcher).start()
    try:
        job.wait(timeout=60)  # before the fix: the reader stopped, the child blocked on the full pipe
        assert job.finished
        assert job.fraction == pytest.approx(1.0, abs=1e-3)  # the last progress line was read
        assert job.summary == {"model": "m", "device": "cpu", "volume_ml": 0.0}
        assert not any("cannot decode" in line for line in job.log)  # skipped
        assert job.result().mask.GetSize() == (8, 8, 4)
    finally:
        job.cleanup()


# ---------------------------------------------------------------- defect 6
class Slicer58Segment:
    """A real vtkSegment seen as in Slicer 5.6-5.8, whose vtkSegment has no (Set|Get)Terminology."""

    def __init__(self) -> None:
        self.segment = slicer.vtkSegment()

    def SetTag(self, *args: Any) -> Any:  # noqa: N802
        return self.segment.SetTag(*args)

    def GetTag(self, *args: Any) -> Any:  # noqa: N802
        return self.segment.GetTag(*args)

    def GetName(self) -> str:  # noqa: N802
        return self.segment.GetName() or ""


def test_defect6_the_slicer_5_6_to_5_8_tag_branch():
    entry = slicer_terminology_tag(PROSTATE_TERMINOLOGY)
    old = Slicer58Segment()
    assert not hasattr(old, "SetTerminology") and not hasattr(old, "GetTerminology")
    set_segment_terminology(old, entry)  # takes the tag branch
    assert terminology_tag(old.segment) == entry and segment_terminology(old) == entry
    # what 5.6-5.8 write is what 5.10+ read: vtkSegment::GetTerminology reads the same tag
    assert old.segment.GetTerminology() == entry

    direct = slicer.vtkSegment()
    set_terminology_tag(direct, entry)
    assert direct.GetTerminology() == entry
    new = slicer.vtkSegment()
    set_segment_terminology(new, entry)  # the 5.10+ branch writes the same tag
    assert terminology_tag(new) == entry
    set_segment_terminology(new, None)
    assert terminology_tag(new) == entry  # no terminology: the segment keeps what it has
