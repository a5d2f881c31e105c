"""PythonQt's Python view of Qt objects, built on PyQt5, so ProstateKD.py runs unchanged in a real Qt.

3D Slicer exposes Qt through PythonQt: properties are attributes
(``button.enabled = False``, ``label.text``), signals are connected by their
C++ signature (``button.connect("clicked(bool)", slot)``) and ``qt.QTimer()``
and ``qt.QUiLoader`` are the Qt classes. :func:`wrap` gives any PyQt5 object
that view; it is strict where PythonQt would fail in Slicer:

* setting an attribute that is no Qt property raises AttributeError (a misspelt
  property fails the test instead of silently creating a Python attribute);
* ``connect`` accepts only a signal the object really declares with exactly that
  signature (the Qt meta-object for Qt classes, ``CPP_SIGNALS`` for stand-ins of
  Slicer/CTK widgets), else raises ValueError;
* an exception raised in a slot is recorded in :data:`SLOT_ERRORS` (PyQt5 would
  abort the process) so the test can fail on it.

``qt_module()`` is the ``qt`` module the widget code imports; its ``QUiLoader``
loads a real ``.ui`` file with ``PyQt5.uic`` and makes the ``<connections>`` through
the same strict ``connect``.
"""

from __future__ import annotations

import inspect
import re
import sys
import tempfile
import traceback
import types
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable

from PyQt5 import QtCore, QtGui, QtWidgets, uic

#: Exceptions raised inside slots, as formatted tracebacks (the tests assert it stays empty).
SLOT_ERRORS: list[str] = []

_CPP_TO_PYTHON = {"bool": bool, "int": int, "double": float, "QString": str, "QStringList": list}
_SIGNATURE = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$")


def parse_signature(signature: str) -> tuple[str, tuple[str, ...]]:
    """``"currentNodeChanged(vtkMRMLNode*)"`` -> ``("currentNodeChanged", ("vtkMRMLNode*",))``."""
    match = _SIGNATURE.match(signature)
    if not match:
        raise ValueError(f"not a Qt signature: {signature!r}")
    normalized = bytes(QtCore.QMetaObject.normalizedSignature(signature)).decode()
    args = _SIGNATURE.match(normalized).group(2)
    return match.group(1), tuple(a for a in args.split(",") if a)


def python_type(cpp_type: str) -> Any:
    """The PyQt5 signal argument type standing for a C++ type (pointers to VTK/MRML objects: object)."""
    return _CPP_TO_PYTHON.get(cpp_type, object)


def cpp_signals(*signatures: str) -> dict[str, Any]:
    """Class attributes for a stand-in: one ``pyqtSignal`` per name (overloads by argument type).

    ``CPP_SIGNALS`` keeps the exact C++ signatures, which :meth:`PythonQtObject.connect` checks.
    """
    by_name: dict[str, list[tuple[Any, ...]]] = {}
    for signature in signatures:
        name, args = parse_signature(signature)
        by_name.setdefault(name, []).append(tuple(python_type(a) for a in args))
    attributes: dict[str, Any] = {
        name: QtCore.pyqtSignal(*[list(overload) for overload in overloads]) if len(overloads) > 1
        else QtCore.pyqtSignal(*overloads[0])
        for name, overloads in by_name.items()
    }
    attributes["CPP_SIGNALS"] = tuple(bytes(QtCore.QMetaObject.normalizedSignature(s)).decode() for s in signatures)
    return attributes


def declared_signals(cls: type) -> set[str]:
    """All C++ signatures declared by ``CPP_SIGNALS`` along the class hierarchy."""
    return {s for klass in cls.__mro__ for s in vars(klass).get("CPP_SIGNALS", ())}


def declared_slots(cls: type) -> set[str]:
    """All C++ slot signatures declared by ``CPP_SLOTS`` along the class hierarchy."""
    return {s for klass in cls.__mro__ for s in vars(klass).get("CPP_SLOTS", ())}


_wrappers: dict[int, "PythonQtObject"] = {}


def wrap(value: Any) -> Any:
    """PyQt5 QObjects (also inside lists) in their PythonQt view; anything else as it is."""
    if isinstance(value, PythonQtObject) or not isinstance(value, QtCore.QObject):
        if isinstance(value, list):
            return [wrap(v) for v in value]
        return value
    key = id(value)
    wrapper = _wrappers.get(key)
    if wrapper is None or wrapper._qobject is not value:
        wrapper = _wrappers[key] = PythonQtObject(value)
    return wrapper


def unwrap(value: Any) -> Any:
    """The PyQt5 object behind a PythonQt view."""
    return value._qobject if isinstance(value, PythonQtObject) else value


def _slot_caller(slot: Callable, count: int) -> Callable:
    """Call ``slot`` as PythonQt does: with at most as many arguments as it accepts; record exceptions."""
    try:
        parameters = list(inspect.signature(slot).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        accepted = count
    else:
        accepted = min(count, len([p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]))

    def call(*args: Any) -> None:
        try:
            slot(*[wrap(a) for a in args[:accepted]])
        except BaseException:  # noqa: BLE001 - PythonQt prints it and goes on; the test fails on it
            SLOT_ERRORS.append(traceback.format_exc())

    return call


class PythonQtObject:
    """A QObject as PythonQt shows it (see the module docstring)."""

    __slots__ = ("_qobject", "__weakref__")

    def __init__(self, qobject: QtCore.QObject) -> None:
        object.__setattr__(self, "_qobject", qobject)

    def _property_index(self, name: str) -> int:
        return self._qobject.metaObject().indexOfProperty(name)

    def __getattr__(self, name: str) -> Any:
        qobject = self._qobject
        if name == "name":  # PythonQt: objectName
            return qobject.objectName()
        index = self._property_index(name)
        if index >= 0:
            return wrap(qobject.metaObject().property(index).read(qobject))
        attribute = getattr(qobject, name)
        if callable(attribute) and not isinstance(attribute, (QtCore.pyqtBoundSignal, type)):
            def method(*args: Any, **kwargs: Any) -> Any:
                return wrap(attribute(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()}))

            return method
        return wrap(attribute)

    def __setattr__(self, name: str, value: Any) -> None:
        qobject = self._qobject
        index = self._property_index(name)
        if index < 0:
            raise AttributeError(f"{qobject.metaObject().className()} has no Qt property '{name}'")
        prop = qobject.metaObject().property(index)
        if not prop.isWritable() or not prop.write(qobject, unwrap(value)):
            raise TypeError(f"cannot set {qobject.metaObject().className()}.{name} to {value!r}")

    def __eq__(self, other: Any) -> bool:
        return unwrap(other) is self._qobject

    def __hash__(self) -> int:
        return id(self._qobject)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<PythonQt {self._qobject.metaObject().className()} '{self._qobject.objectName()}'>"

    def className(self) -> str:
        return self._qobject.metaObject().className()

    def children(self) -> list:
        return [wrap(c) for c in self._qobject.children()]

    def signal(self, signature: str) -> Any:
        """The PyQt5 bound signal for an exact C++ signature; ValueError when the object has none."""
        qobject = self._qobject
        name, args = parse_signature(signature)
        normalized = f"{name}({','.join(args)})"
        if normalized in declared_signals(type(qobject)):  # a stand-in's own signal
            bound = getattr(qobject, name)
            overloads = [s for s in declared_signals(type(qobject)) if s.startswith(name + "(")]
            return bound[tuple(python_type(a) for a in args)] if len(overloads) > 1 and args else bound
        index = qobject.metaObject().indexOfSignal(normalized)
        if index < 0 or qobject.metaObject().method(index).methodType() != QtCore.QMetaMethod.Signal \
                or "PyQt_PyObject" in normalized:
            raise ValueError(f"{qobject.metaObject().className()} has no signal {signature}")
        bound = getattr(qobject, name)
        try:
            return bound[args] if len(args) > 1 else (bound[args[0]] if args else bound)
        except (KeyError, TypeError):
            return bound

    def connect(self, signature: str, slot: Callable) -> None:
        """PythonQt's ``obj.connect("signal(args)", callable)``."""
        _, args = parse_signature(signature)
        self.signal(signature).connect(_slot_caller(slot, len(args)))

    def disconnect(self, signature: str, slot: Callable | None = None) -> None:
        self.signal(signature).disconnect()


def connect_by_signature(sender: PythonQtObject, signal: str, receiver: PythonQtObject, slot: str) -> None:
    """A ``.ui`` ``<connection>``: the receiver's slot must be declared with exactly that signature."""
    name, args = parse_signature(slot)
    normalized = f"{name}({','.join(args)})"
    target = unwrap(receiver)
    if normalized not in declared_slots(type(target)) and target.metaObject().indexOfSlot(normalized) < 0:
        raise ValueError(f"{target.metaObject().className()} has no slot {slot}")
    sender.connect(signal, getattr(receiver, name))


class QUiLoader:
    """``qt.QUiLoader``: builds the widgets of a ``.ui`` file (custom widgets from ``standins``)."""

    standins: dict[str, type] = {}

    def load(self, qfile: Any, parent: Any = None) -> Any:
        path = unwrap(qfile).fileName()
        tree = ElementTree.parse(path)
        root = tree.getroot()
        connections = root.find("connections")
        if connections is not None:
            root.remove(connections)  # made below, by signature, as Qt's own loader does
        for custom in root.iter("customwidget"):
            cls = custom.findtext("class")
            if cls not in self.standins:
                raise ValueError(f"no stand-in for the custom widget {cls} used in {path}")
            module = custom.findtext("header").rsplit(".", 1)[0]
            sys.modules.setdefault(module, types.SimpleNamespace(**{cls: self.standins[cls]}))
        with tempfile.NamedTemporaryFile("wb", suffix=".ui", delete=False) as handle:
            tree.write(handle, encoding="utf-8", xml_declaration=True)
        widget = uic.loadUi(handle.name)
        widget.setObjectName(root.find("widget").get("name"))
        wrapped = wrap(widget)
        if connections is not None:
            objects = {w.objectName(): w for w in [widget, *widget.findChildren(QtCore.QObject)]}
            for connection in connections.iter("connection"):
                connect_by_signature(
                    wrap(objects[connection.findtext("sender")]), connection.findtext("signal"),
                    wrap(objects[connection.findtext("receiver")]), connection.findtext("slot"),
                )
        return wrapped


class QFile:
    """``qt.QFile`` as ``slicer.util.loadUI`` uses it."""

    ReadOnly = QtCore.QIODevice.ReadOnly

    def __new__(cls, path: str) -> Any:
        return wrap(QtCore.QFile(path))


def qt_module() -> types.ModuleType:
    """The ``qt`` module of PythonQt, for what ProstateKD.py and slicer.util use."""
    qt = types.ModuleType("qt")
    qt.QFile = QFile
    qt.QUiLoader = QUiLoader
    qt.QTimer = lambda *args: wrap(QtCore.QTimer(*args))
    qt.QWidget = lambda *args: wrap(QtWidgets.QWidget(*[unwrap(a) for a in args]))
    qt.QVBoxLayout = lambda *args: wrap(QtWidgets.QVBoxLayout(*[unwrap(a) for a in args]))
    qt.QApplication = QtWidgets.QApplication
    qt.QPixmap = QtGui.QPixmap
    qt.Qt = QtCore.Qt
    return qt
