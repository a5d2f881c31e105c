"""The Widget of ProstateKD.py driven outside Slicer: real MRML (slicer-core), fake Qt widgets.

Qt is not available outside 3D Slicer, so the widgets named in the .ui file are
replaced by small fakes that keep their state; the rest (parameter node,
logic, background process through ``slicer.util.launchConsoleProcess``,
training-case saving) is real. This checks the wiring, not the look.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import sys
import time
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest

slicer = pytest.importorskip(
    "slicer", reason="slicer-core is not installed (pip install slicer-core): no real MRML classes"
)
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True)

from test_slicer_logic import add_volume, new_scene  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class FakeWidget:
    """Just enough of QWidget, QComboBox, QLabel, ctkPathLineEdit, qMRMLNodeComboBox... to keep state."""

    def __init__(self, cls: str) -> None:
        self.cls = cls
        self.enabled, self.visible, self.checked = True, True, False
        self.text, self.toolTip, self.currentPath, self.value = "", "", "", 0
        self.items: list[tuple[str, Any]] = []
        self.index = -1
        self.node = None
        self.slots: dict[str, list] = {}

    def connect(self, signal: str, slot: Any) -> None:
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args: Any) -> None:
        """Call the slots as PythonQt does: with no more arguments than a slot accepts."""
        for slot in self.slots.get(signal, []):
            parameters = inspect.signature(slot).parameters.values()
            if any(p.kind == p.VAR_POSITIONAL for p in parameters):
                slot(*args)
            else:
                slot(*args[: len(parameters)])

    # QComboBox
    def clear(self) -> None:
        self.items, self.index = [], -1

    def addItem(self, text: str, data: Any = None) -> None:
        self.items.append((text, data))
        if self.index < 0:
            self.index = 0

    def findData(self, data: Any) -> int:
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def setCurrentIndex(self, index: int) -> None:
        self.index = index if self.items else -1

    @property
    def currentData(self) -> Any:
        return self.items[self.index][1] if 0 <= self.index < len(self.items) else None

    # qMRMLNodeComboBox
    def setCurrentNode(self, node: Any) -> None:
        self.node = node

    def currentNode(self) -> Any:
        return self.node

    def setMRMLScene(self, scene: Any) -> None:
        self.scene = scene

    # QProgressBar, QWidget
    def setRange(self, low: int, high: int) -> None:
        self.range = (low, high)

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    # QTimer
    def setInterval(self, milliseconds: int) -> None:
        self.interval = milliseconds

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


@pytest.fixture
def scene() -> Any:
    """An MRML scene with the logics Slicer's application would attach."""
    scene = new_scene()
    yield scene
    scene.Clear(1)


@pytest.fixture
def widget(scene, monkeypatch, tmp_path):
    """ProstateKDWidget set up on ``scene`` with fake Qt widgets from the .ui file's names."""
    tree = ElementTree.parse(ROOT / "Resources" / "UI" / "ProstateKD.ui")
    fakes = {w.get("name"): FakeWidget(w.get("class")) for w in tree.iter("widget")}

    qt = types.ModuleType("qt")
    qt.QTimer = lambda: FakeWidget("QTimer")
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class Base:
        def __init__(self, parent=None):
            self.parent = parent or types.SimpleNamespace(isEntered=True)
            self.layout = FakeWidget("QVBoxLayout")
            self.layout.addWidget = lambda widget: None

        def setup(self):
            pass

        def resourcePath(self, name):
            return str(ROOT / "Resources" / name)

    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleTest"):
        setattr(scripted, name, type(name, (Base,), {}))
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", scripted, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=lambda: None), raising=False)
    root = fakes["ProstateKD"]
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: root)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: types.SimpleNamespace(**fakes))
    errors: list[str] = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: errors.append(text))
    monkeypatch.delenv("PROSTATEKD_MODELS", raising=False)

    sys.modules.pop("ProstateKD", None)
    module = importlib.import_module("ProstateKD")
    widget = module.ProstateKDWidget()
    widget.setup()
    widget.fakes, widget.errors = fakes, errors
    yield widget
    widget.cleanup()
    sys.modules.pop("ProstateKD", None)


def run_until_finished(widget: Any, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while widget.job is not None:
        assert time.monotonic() < end, "the background segmentation did not finish"
        widget.onPoll()
        time.sleep(0.05)


def test_module_metadata(widget):
    module = sys.modules["ProstateKD"]
    parent = types.SimpleNamespace()
    module.ProstateKD(parent)
    assert parent.title == "ProstateKD" and parent.categories == ["Segmentation"]
    assert "prostatekd-student" in parent.helpText and "licence Apache-2.0" in parent.helpText
    assert "Ben Loussaief" in parent.helpText


def test_panel_apply_edit_save(widget, scene, make_volume, tmp_path):
    ui = widget.fakes
    assert [d for _, d in ui["modelComboBox"].items] == ["prostatekd-student", "prostatekd-teacher"]
    assert ui["modelComboBox"].currentData == "prostatekd-student"  # the default student is preselected
    assert "Licence:</b> Apache-2.0" in ui["modelInfoLabel"].text and "MB" in ui["modelInfoLabel"].text
    assert [d for _, d in ui["deviceComboBox"].items][:2] == ["auto", "cpu"]
    assert not ui["applyButton"].enabled  # no volume yet

    volume = add_volume(scene, make_volume(size=(64, 64, 12)), "T2")
    ui["inputVolumeSelector"].setCurrentNode(volume)
    ui["inputVolumeSelector"].emit("currentNodeChanged(vtkMRMLNode*)", volume)
    ui["deviceComboBox"].setCurrentIndex(ui["deviceComboBox"].findData("cpu"))
    ui["deviceComboBox"].emit("currentIndexChanged(int)", 1)
    parameters = widget.parameters
    assert parameters.input_volume is volume and parameters.device == "cpu"
    assert parameters.model == "prostatekd-student" and parameters.largest_component is True
    assert ui["applyButton"].enabled and not ui["editButton"].enabled and not ui["saveCaseButton"].enabled

    ui["applyButton"].emit("clicked(bool)", False)
    assert widget.job is not None and ui["cancelButton"].enabled and not ui["applyButton"].enabled
    assert ui["progressBar"].visible
    run_until_finished(widget)
    assert widget.errors == []
    assert "Prostate" in ui["statusLabel"].text and " ml, " in ui["statusLabel"].text, ui["statusLabel"].text
    segmentation = parameters.output_segmentation
    assert segmentation is not None and segmentation.GetSegmentation().GetNthSegment(0).GetName() == "Prostate"
    assert ui["outputSegmentationSelector"].currentNode() is segmentation
    assert ui["editButton"].enabled and not ui["progressBar"].visible

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    ui["datasetFolderPathLineEdit"].currentPath = str(dataset)
    ui["datasetFolderPathLineEdit"].emit("currentPathChanged(QString)", str(dataset))
    ui["siteLineEdit"].text = "LOCAL"
    ui["siteLineEdit"].emit("textChanged(QString)", "LOCAL")
    assert ui["saveCaseButton"].enabled
    segmentation.GetSegmentation().GetNthSegment(0)  # (a radiologist would correct it here)
    ui["saveCaseButton"].emit("clicked(bool)", False)
    assert "Saved LOCAL/Case00" in ui["saveStatusLabel"].text, ui["saveStatusLabel"].text
    with open(dataset / "dataset_index.csv", newline="") as handle:
        assert [row["case_id"] for row in csv.DictReader(handle)] == ["LOCAL/Case00"]

    # The settings live in the scene's parameter node.
    node = scene.GetSingletonNode("ProstateKD", "vtkMRMLScriptedModuleNode")
    assert node.GetParameter("Site") == "LOCAL" and node.GetParameter("Device") == "cpu"
    assert node.GetParameter("DatasetFolder") == str(dataset)


def test_cancel_and_errors_are_reported(widget, scene, make_volume):
    ui = widget.fakes
    volume = add_volume(scene, make_volume(size=(64, 64, 12)), "T2")
    widget.parameters.input_volume = volume
    widget.parameters.device = "cpu"
    before = scene.GetNumberOfNodes()
    ui["applyButton"].emit("clicked(bool)", False)
    ui["cancelButton"].emit("clicked(bool)", False)
    run_until_finished(widget, timeout=60)
    assert ui["statusLabel"].text == "Cancelled."
    assert scene.GetNumberOfNodes() == before and widget.parameters.output_segmentation is None

    constant = add_volume(scene, __import__("SimpleITK").Image([32, 32, 8], 8), "flat")  # sitkFloat32
    widget.parameters.input_volume = constant
    ui["applyButton"].emit("clicked(bool)", False)
    assert widget.job is None and "is constant" in ui["statusLabel"].text

    widget.parameters.device = "cuda:7"
    assert "cuda:7" in ui["deviceInfoLabel"].text and "not available" in ui["deviceInfoLabel"].text
    assert not ui["applyButton"].enabled
    assert ui["deviceComboBox"].currentData == "cuda:7"  # kept, shown as not available


def test_entering_the_module_picks_a_volume_not_a_labelmap(widget, scene, make_volume):
    from ProstateKDLib.slicer_logic import image_to_volume_node

    image = make_volume(size=(32, 32, 8))

    image_to_volume_node(image, scene, "a labelmap", labelmap=True)
    volume = add_volume(scene, image, "T2")
    widget.enter()
    assert widget.parameters.input_volume is volume
    assert widget.fakes["inputVolumeSelector"].currentNode() is volume
    assert widget.parameters.model == "prostatekd-student"
