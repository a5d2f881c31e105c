"""Stand-ins, in PyQt5, for the Slicer/CTK C++ widgets that ProstateKD's .ui file and widget use.

Each stand-in carries exactly the Qt properties, signals, slots and enum values
of its real header (Slicer v5.8 / its CTK), so a property, signal or enum that
ProstateKD.py or the .ui file misspells fails the test as it would in Slicer:

* ``qMRMLWidget`` - Libs/MRML/Widgets/qMRMLWidget.h
* ``qMRMLNodeComboBox`` - Libs/MRML/Widgets/qMRMLNodeComboBox.h
* ``ctkCollapsibleButton`` - CTK Libs/Widgets/ctkCollapsibleButton.h
* ``ctkPathLineEdit`` - CTK Libs/Widgets/ctkPathLineEdit.h

Behaviour is kept small but real: the node combo box lists the scene's nodes
of its ``nodeTypes`` (observing the real MRML scene), the collapsible button
collapses, the path line edit edits a path. ``SegmentEditorWidget`` stands for
the Segment Editor module's ``qMRMLSegmentEditorWidget`` with only the two slots
ProstateKD calls (Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h).
"""

from __future__ import annotations

from typing import Any

from PyQt5 import QtCore, QtGui, QtWidgets

from pythonqt_shim import cpp_signals


def stored_property(name: str, kind: Any, default: Any, notify: Any = None) -> Any:
    """A Qt property backed by ``self._values`` (READ name, WRITE set<Name>)."""

    def read(self: Any) -> Any:
        return self._values.get(name, default)

    def write(self: Any, value: Any) -> None:
        self._values[name] = list(value) if kind == "QStringList" else value
        self._changed(name)

    if notify is not None:
        return QtCore.pyqtProperty(kind, read, write, notify=notify)
    return QtCore.pyqtProperty(kind, read, write)


def setters(*names: str) -> dict[str, Any]:
    """``set<Name>(value)`` methods (the properties' WRITE accessors of the real header)."""

    def make(name: str) -> Any:
        def setter(self: Any, value: Any) -> None:
            self.setProperty(name, value)

        setter.__name__ = "set" + name[0].upper() + name[1:]
        return setter

    return {("set" + n[0].upper() + n[1:]): make(n) for n in names}


class _Stored:
    """Mixin: ``_values`` for stored properties and a hook when one changes."""

    def _init_values(self) -> None:
        self._values: dict[str, Any] = {}

    def _changed(self, name: str) -> None:
        pass


# ------------------------------------------------------------------ qMRMLWidget
class qMRMLWidget(QtWidgets.QWidget):  # noqa: N801 - the C++ class name
    """qMRMLWidget.h: no own properties; signal mrmlSceneChanged(vtkMRMLScene*); slot setMRMLScene."""

    locals().update(cpp_signals("mrmlSceneChanged(vtkMRMLScene*)"))
    CPP_SLOTS = ("setMRMLScene(vtkMRMLScene*)",)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self) -> Any:
        return self._scene

    def setMRMLScene(self, scene: Any) -> None:
        if scene is self._scene:
            return
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)


class qSlicerScriptedLoadableModuleWidget(qMRMLWidget):  # noqa: N801
    """The module panel Slicer gives a scripted module widget as parent (isEntered of qSlicerAbstractModuleWidget)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._entered = True

    @QtCore.pyqtProperty(bool)
    def isEntered(self) -> bool:  # noqa: N802
        return self._entered


# ------------------------------------------------------------ qMRMLNodeComboBox
class qMRMLNodeComboBox(_Stored, QtWidgets.QWidget):  # noqa: N801
    """qMRMLNodeComboBox.h (a QWidget holding a QComboBox) listing the scene's nodes of ``nodeTypes``."""

    locals().update(cpp_signals(
        "currentNodeChanged(vtkMRMLNode*)",
        "currentNodeIDChanged(QString)",
        "nodeActivated(vtkMRMLNode*)",
        "currentNodeChanged(bool)",
        "nodeAdded(vtkMRMLNode*)",
        "nodeAddedByUser(vtkMRMLNode*)",
        "nodeAddedByUserAction(vtkMRMLNode*)",
        "nodeAboutToBeRemoved(vtkMRMLNode*)",
        "currentNodeRenamed(QString)",
        "nodeAboutToBeEdited(vtkMRMLNode*)",
    ))
    CPP_SLOTS = (
        "setMRMLScene(vtkMRMLScene*)", "setCurrentNode(vtkMRMLNode*)", "setCurrentNode(QString)",
        "setCurrentNodeID(QString)", "setCurrentNodeIndex(int)", "addNode(QString)", "addNode()",
        "removeCurrentNode()", "editCurrentNode()", "renameCurrentNode()",
    )

    nodeTypes = stored_property("nodeTypes", "QStringList", [])
    showHidden = stored_property("showHidden", bool, False)
    showChildNodeTypes = stored_property("showChildNodeTypes", bool, True)
    hideChildNodeTypes = stored_property("hideChildNodeTypes", "QStringList", [])
    baseName = stored_property("baseName", str, "")
    noneEnabled = stored_property("noneEnabled", bool, False)
    addEnabled = stored_property("addEnabled", bool, True)
    removeEnabled = stored_property("removeEnabled", bool, True)
    editEnabled = stored_property("editEnabled", bool, False)
    renameEnabled = stored_property("renameEnabled", bool, False)
    interactionNodeSingletonTag = stored_property("interactionNodeSingletonTag", str, "Singleton")
    selectNodeUponCreation = stored_property("selectNodeUponCreation", bool, True)
    noneDisplay = stored_property("noneDisplay", str, "None")
    sizeAdjustPolicy = stored_property("sizeAdjustPolicy", int, QtWidgets.QComboBox.AdjustToContentsOnFirstShow)
    locals().update(setters(
        "nodeTypes", "showHidden", "showChildNodeTypes", "hideChildNodeTypes", "baseName", "noneEnabled",
        "addEnabled", "removeEnabled", "editEnabled", "renameEnabled", "interactionNodeSingletonTag",
        "selectNodeUponCreation", "noneDisplay", "sizeAdjustPolicy",
    ))

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._init_values()
        self._scene = None
        self._observers: list[int] = []
        self._nodes: list[Any] = []
        self._current = None
        self._combo = QtWidgets.QComboBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._combo)
        self._combo.activated.connect(self._on_activated)
        self.setEnabled(False)  # until a scene is set, as the real one

    # currentNodeID / currentNodeId (DESIGNABLE false)
    def currentNodeID(self) -> str:  # noqa: N802
        return self._current.GetID() if self._current is not None else ""

    currentNodeID = QtCore.pyqtProperty(str, currentNodeID, lambda self, i: self.setCurrentNodeID(i),  # noqa: F811
                                        notify=currentNodeIDChanged)
    currentNodeId = QtCore.pyqtProperty(str, lambda self: self.currentNodeID,
                                        lambda self, i: self.setCurrentNodeID(i))

    def _changed(self, name: str) -> None:
        if name in ("nodeTypes", "showHidden", "showChildNodeTypes", "hideChildNodeTypes", "noneEnabled",
                    "noneDisplay"):
            self._refresh()

    def mrmlScene(self) -> Any:
        return self._scene

    def setMRMLScene(self, scene: Any) -> None:
        if self._scene is not None:
            for tag in self._observers:
                self._scene.RemoveObserver(tag)
        self._scene, self._observers = scene, []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent):
                self._observers.append(scene.AddObserver(event, lambda *args: self._refresh()))
        self.setEnabled(scene is not None)
        self._refresh()

    def _accepts(self, node: Any) -> bool:
        if node.GetHideFromEditors() and not self.showHidden:
            return False
        types = self.nodeTypes
        if not any(node.IsA(t) and (self.showChildNodeTypes or node.GetClassName() == t) for t in types):
            return False
        return not any(node.IsA(t) for t in self.hideChildNodeTypes)

    def _refresh(self) -> None:
        scene = self._scene
        nodes = []
        if scene is not None:
            collection = scene.GetNodes()
            nodes = [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]
            nodes = [n for n in nodes if self._accepts(n)]
        self._nodes = nodes
        if self._current is not None and all(n is not self._current for n in nodes):
            self._set_current(None)
        if self._current is None and not self.noneEnabled and nodes:
            self._set_current(nodes[0])
        self._update_combo()

    def _items(self) -> list[Any]:
        return ([None] if self.noneEnabled else []) + list(self._nodes)

    def _update_combo(self) -> None:
        self._combo.blockSignals(True)
        self._combo.clear()
        for node in self._items():
            self._combo.addItem(self.noneDisplay if node is None else node.GetName())
        items = self._items()
        index = next((i for i, n in enumerate(items) if n is self._current), -1)
        self._combo.setCurrentIndex(index)
        self._combo.blockSignals(False)

    def _on_activated(self, index: int) -> None:
        items = self._items()
        if 0 <= index < len(items):
            self._set_current(items[index])
            self.nodeActivated.emit(items[index])

    def _set_current(self, node: Any) -> None:
        if node is self._current:
            return
        self._current = node
        self._update_combo()
        self.currentNodeChanged[object].emit(node)
        self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")
        self.currentNodeChanged[bool].emit(node is not None)

    # Q_INVOKABLE and slots used by scripted modules
    def currentNode(self) -> Any:
        return self._current

    def setCurrentNode(self, node: Any) -> None:
        if isinstance(node, str):  # the deprecated setCurrentNode(const QString&)
            self.setCurrentNodeID(node)
            return
        if node is not None and all(n is not node for n in self._nodes):
            node = None  # not listed (other type or scene): none, as the real one
        self._set_current(node)

    def setCurrentNodeID(self, node_id: str) -> None:  # noqa: N802
        node = self._scene.GetNodeByID(node_id) if self._scene is not None and node_id else None
        self.setCurrentNode(node)

    def setCurrentNodeIndex(self, index: int) -> None:  # noqa: N802
        self.setCurrentNode(self._nodes[index] if 0 <= index < len(self._nodes) else None)

    def nodeCount(self) -> int:  # noqa: N802
        return len(self._nodes)

    def nodeFromIndex(self, index: int) -> Any:  # noqa: N802
        return self._nodes[index] if 0 <= index < len(self._nodes) else None

    def nodes(self) -> list[Any]:
        return list(self._nodes)

    def addNode(self, node_type: str = "") -> Any:  # noqa: N802
        node_type = node_type or (self.nodeTypes[0] if self.nodeTypes else "")
        if self._scene is None or node_type not in self.nodeTypes:
            return None
        node = self._scene.AddNewNodeByClass(node_type, self._scene.GenerateUniqueName(self.baseName or node_type))
        self.nodeAddedByUserAction.emit(node)
        if self.selectNodeUponCreation:
            self.setCurrentNode(node)
        return node

    def removeCurrentNode(self) -> None:  # noqa: N802
        if self._current is not None and self._scene is not None:
            self.nodeAboutToBeRemoved.emit(self._current)
            self._scene.RemoveNode(self._current)


# ---------------------------------------------------------- ctkCollapsibleButton
class ctkCollapsibleButton(_Stored, QtWidgets.QAbstractButton):  # noqa: N801
    """ctkCollapsibleButton.h: a header button that shows or hides its children (checked = expanded)."""

    locals().update(cpp_signals("contentsCollapsed(bool)"))
    CPP_SLOTS = ()

    collapsedHeight = stored_property("collapsedHeight", int, 14)
    contentsFrameShape = stored_property("contentsFrameShape", int, QtWidgets.QFrame.NoFrame)
    contentsFrameShadow = stored_property("contentsFrameShadow", int, QtWidgets.QFrame.Plain)
    contentsLineWidth = stored_property("contentsLineWidth", int, 1)
    contentsMidLineWidth = stored_property("contentsMidLineWidth", int, 0)
    buttonTextAlignment = stored_property("buttonTextAlignment", int, int(QtCore.Qt.AlignLeft | QtCore.Qt.AlignVCenter))
    indicatorAlignment = stored_property("indicatorAlignment", int, int(QtCore.Qt.AlignLeft | QtCore.Qt.AlignVCenter))
    locals().update(setters("collapsedHeight", "contentsFrameShape", "contentsFrameShadow", "contentsLineWidth",
                            "contentsMidLineWidth", "buttonTextAlignment", "indicatorAlignment"))

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._init_values()
        self.setCheckable(True)
        self.setChecked(True)
        self.toggled.connect(lambda checked: self._collapse(not checked))
        self.setSizePolicy(QtWidgets.QSizePolicy.Preferred, QtWidgets.QSizePolicy.Preferred)
        self.setContentsMargins(4, self._header_height() + 2, 4, 4)

    def _header_height(self) -> int:
        return self.fontMetrics().height() + 10

    def collapsed(self) -> bool:
        return not self.isChecked()

    def setCollapsed(self, collapsed: bool) -> None:  # noqa: N802
        self.setChecked(not collapsed)

    collapsed = QtCore.pyqtProperty(bool, collapsed, setCollapsed, notify=contentsCollapsed)  # noqa: F811

    def _collapse(self, collapsed: bool) -> None:
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not collapsed)
        self.setMaximumHeight(self._header_height() if collapsed else 16777215)
        self.contentsCollapsed.emit(collapsed)

    def hitButton(self, pos: QtCore.QPoint) -> bool:  # noqa: N802
        return pos.y() < self._header_height()

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802
        hint = self.layout().sizeHint() if self.layout() is not None and not self.collapsed else QtCore.QSize(0, 0)
        return QtCore.QSize(max(hint.width(), 200), hint.height() + self._header_height() + 6)

    def minimumSizeHint(self) -> QtCore.QSize:  # noqa: N802
        return self.sizeHint() if not self.collapsed else QtCore.QSize(100, self._header_height())

    def paintEvent(self, event: Any) -> None:  # noqa: N802
        painter = QtWidgets.QStylePainter(self)
        option = QtWidgets.QStyleOptionButton()
        option.initFrom(self)
        option.rect = QtCore.QRect(0, 0, self.width(), self._header_height())
        option.text = ""
        painter.drawControl(QtWidgets.QStyle.CE_PushButton, option)
        arrow = QtWidgets.QStyleOption()
        arrow.initFrom(self)
        size = self._header_height() - 12
        arrow.rect = QtCore.QRect(6, 6, size, size)
        element = QtWidgets.QStyle.PE_IndicatorArrowRight if self.collapsed else QtWidgets.QStyle.PE_IndicatorArrowDown
        painter.drawPrimitive(element, arrow)
        painter.drawText(QtCore.QRect(size + 12, 0, self.width() - size - 16, self._header_height()),
                         int(QtCore.Qt.AlignLeft | QtCore.Qt.AlignVCenter), self.text())
        if not self.collapsed:
            painter.setPen(self.palette().color(QtGui.QPalette.Mid))
            painter.drawRect(0, self._header_height(), self.width() - 1, self.height() - self._header_height() - 1)


# ---------------------------------------------------------------- ctkPathLineEdit
class ctkPathLineEdit(_Stored, QtWidgets.QWidget):  # noqa: N801
    """ctkPathLineEdit.h: a line edit and a browse button for a file or folder path."""

    # enum Filter (Q_DECLARE_FLAGS Filters)
    Dirs, Files, Drives, NoSymLinks = 0x001, 0x002, 0x004, 0x008
    AllEntries = Dirs | Files | Drives
    TypeMask = 0x00F
    Readable, Writable, Executable = 0x010, 0x020, 0x040
    PermissionMask = 0x070
    Modified, Hidden, System = 0x080, 0x100, 0x200
    AccessMask = 0x3F0
    AllDirs, CaseSensitive = 0x400, 0x800
    NoDotAndDotDot, NoDot, NoDotDot = 0x1000, 0x2000, 0x4000
    NoFilter = -1
    # enum Option (Q_DECLARE_FLAGS Options)
    ShowDirsOnly, DontResolveSymlinks, DontConfirmOverwrite = 0x01, 0x02, 0x04
    DontUseSheet, DontUseNativeDialog, ReadOnly, HideNameFilterDetails = 0x08, 0x10, 0x20, 0x40
    # enum SizeAdjustPolicy
    AdjustToContents, AdjustToContentsOnFirstShow, AdjustToMinimumContentsLength = 0, 1, 2

    locals().update(cpp_signals("validInputChanged(bool)", "currentPathChanged(QString)"))
    CPP_SLOTS = ("setCurrentPath(QString)", "browse()", "retrieveHistory()", "addCurrentPathToHistory()")

    label = stored_property("label", str, "")
    filters = stored_property("filters", int, AllEntries)
    options = stored_property("options", int, 0)
    settingKey = stored_property("settingKey", str, "")
    showBrowseButton = stored_property("showBrowseButton", bool, True)
    showHistoryButton = stored_property("showHistoryButton", bool, True)
    sizeAdjustPolicy = stored_property("sizeAdjustPolicy", int, AdjustToContentsOnFirstShow)
    minimumContentsLength = stored_property("minimumContentsLength", int, 0)
    nameFilters = stored_property("nameFilters", "QStringList", [])
    locals().update(setters("label", "filters", "options", "settingKey", "showBrowseButton", "showHistoryButton",
                            "sizeAdjustPolicy", "minimumContentsLength", "nameFilters"))

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._init_values()
        self._edit = QtWidgets.QLineEdit(self)
        self._button = QtWidgets.QToolButton(self)
        self._button.setText("...")
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._edit)
        layout.addWidget(self._button)
        self._edit.textChanged.connect(self.currentPathChanged.emit)

    def currentPath(self) -> str:  # noqa: N802
        return self._edit.text()

    def setCurrentPath(self, path: str) -> None:  # noqa: N802
        self._edit.setText(path)

    currentPath = QtCore.pyqtProperty(str, currentPath, setCurrentPath, user=True)  # noqa: F811

    def browse(self) -> None:
        raise NotImplementedError("no file dialog in tests")

    def retrieveHistory(self) -> None:  # noqa: N802
        pass

    def addCurrentPathToHistory(self) -> None:  # noqa: N802
        pass


# ------------------------------------------------- the Segment Editor module's widget
class SegmentEditorWidget(QtWidgets.QWidget):
    """The two slots of qMRMLSegmentEditorWidget that ProstateKD calls (and their getters)."""

    CPP_SLOTS = ("setSegmentationNode(vtkMRMLNode*)", "setSourceVolumeNode(vtkMRMLNode*)")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._segmentation = self._source = None

    def setSegmentationNode(self, node: Any) -> None:  # noqa: N802
        self._segmentation = node

    def segmentationNode(self) -> Any:  # noqa: N802
        return self._segmentation

    def setSourceVolumeNode(self, node: Any) -> None:  # noqa: N802
        self._source = node

    def sourceVolumeNode(self) -> Any:  # noqa: N802
        return self._source


#: Custom widgets of .ui files, by class name, for :class:`pythonqt_shim.QUiLoader`.
STANDINS = {cls.__name__: cls for cls in (qMRMLWidget, qMRMLNodeComboBox, ctkCollapsibleButton, ctkPathLineEdit)}


# ------------------------------------------- slicer.ScriptedLoadableModule (Slicer 5.8)
def scripted_loadable_module(qt: Any, slicer: Any) -> Any:
    """A ``slicer.ScriptedLoadableModule`` module whose classes behave as Slicer 5.8's for ProstateKD.

    ``ScriptedLoadableModuleWidget(parent)`` keeps the module panel ``parent`` and
    its layout (``setup()`` is called by the caller, as Slicer does);
    ``resourcePath`` is ``<module folder>/Resources/<name>``;
    ``ScriptedLoadableModuleTest`` is a ``unittest.TestCase`` whose ``delayDisplay``
    records its messages in ``messages``.
    """
    import os
    import sys
    import types
    import unittest

    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent: Any) -> None:
            self.parent = parent
            self.moduleName = self.__class__.__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent: Any = None) -> None:
            self.moduleName = self.__class__.__name__[: -len("Widget")]
            self.developerMode = False
            if parent is None:
                raise ValueError("the test passes the module panel as parent")
            self.parent = parent
            self.layout = parent.layout()

        def resourcePath(self, filename: str) -> str:
            folder = os.path.dirname(os.path.abspath(sys.modules[self.__class__.__module__].__file__))
            return os.path.join(folder, "Resources", filename)

        def setup(self) -> None:
            pass

        def cleanup(self) -> None:
            pass

        def enter(self) -> None:
            pass

        def exit(self) -> None:
            pass

    class ScriptedLoadableModuleTest(unittest.TestCase):
        messages: list = []

        def delayDisplay(self, message: str, requestedDelay: Any = None, msec: Any = None) -> None:  # noqa: N802
            type(self).messages.append(message)

        def runTest(self) -> None:  # noqa: N802
            pass

    module.ScriptedLoadableModule = ScriptedLoadableModule
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    module.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    module.ScriptedLoadableModuleLogic = type("ScriptedLoadableModuleLogic", (), {})
    return module
