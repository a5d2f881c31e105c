"""Static checks of the Slicer extension: CMake file lists, the .ui file, and import rules.

Slicer installs only the files listed in CMakeLists.txt, so a new
``ProstateKDLib`` module that is not listed works in a source checkout but
breaks the installed extension: these tests catch that without Slicer.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CMAKE = ROOT / "CMakeLists.txt"
MODULE = ROOT / "ProstateKD.py"
UI_FILE = ROOT / "Resources" / "UI" / "ProstateKD.ui"
GUI_PACKAGES = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "PythonQt", "qSlicerSegmentationsModuleWidgetsPythonQt"}
LOGIC_FILE = "ProstateKDLib/slicer_logic.py"


def _cmake_list(variable: str) -> list[str]:
    text = CMAKE.read_text(encoding="utf-8")
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"CMakeLists.txt does not set {variable}"
    entries = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [e.replace("${MODULE_NAME}", "ProstateKD") for e in entries if e]


def _files(folder: str, pattern: str) -> list[str]:
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / folder).rglob(pattern)
        if p.is_file() and "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.parts[-1:])
    )


def _module_needs() -> list[str]:
    """Files the module runs, and all they import: ProstateKD.py and the library's ``python -m`` entry points.

    The entry points are ``ProstateKDLib/__main__.py``, ``ProstateKDLib/cli/`` and every library module
    with a ``__main__`` block (the worker and the ONNX export the module and its messages start).
    """
    from conftest import imports_of, module_name

    runnable = [p for p in sorted((ROOT / "ProstateKDLib").rglob("*.py"))
                if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")]
    start = [MODULE, ROOT / "ProstateKDLib" / "__main__.py", *sorted((ROOT / "ProstateKDLib" / "cli").glob("*.py")),
             *runnable]
    needed: dict[str, Path] = {}
    todo = list(start)
    while todo:
        path = todo.pop()
        name = "ProstateKD" if path == MODULE else module_name(path)
        if name in needed:
            continue
        needed[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))]
        for imported in imports_of(path) | set(parents):
            base = ROOT.joinpath(*imported.split("."))
            todo += [f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()]
    return sorted(p.relative_to(ROOT).as_posix() for p in needed.values())


def test_cmake_lists_exactly_the_python_files_the_module_needs():
    listed = _cmake_list("MODULE_PYTHON_SCRIPTS")
    needed = _module_needs()
    assert "ProstateKDLib/slicer_logic.py" in needed and "ProstateKDLib/cli/segment.py" in needed
    missing = [f for f in needed if f not in listed]
    assert not missing, f"add to MODULE_PYTHON_SCRIPTS in CMakeLists.txt: {missing}"
    extra = [f for f in listed if f not in needed]
    assert not extra, f"the module never imports these; remove them from MODULE_PYTHON_SCRIPTS: {extra}"
    assert len(listed) == len(set(listed)), "duplicate entries in MODULE_PYTHON_SCRIPTS"
    assert not any(f.startswith("training/") for f in listed)


def test_every_resource_is_listed_in_cmake():
    listed = _cmake_list("MODULE_PYTHON_RESOURCES")
    resources = _files("Resources", "*")
    for required in ("Resources/Icons/ProstateKD.png", "Resources/UI/ProstateKD.ui"):
        assert required in resources, f"{required} is missing"
    assert any(f.startswith("Resources/Models/") for f in resources)
    assert any(f.startswith("Resources/Samples/") for f in resources)
    missing = [f for f in resources if f not in listed]
    assert not missing, f"add to MODULE_PYTHON_RESOURCES in CMakeLists.txt: {missing}"
    stale = [f for f in listed if not (ROOT / f).is_file()]
    assert not stale, f"listed in MODULE_PYTHON_RESOURCES but missing: {stale}"


def test_cmake_builds_the_extension_and_its_tests():
    text = CMAKE.read_text(encoding="utf-8")
    for required in (
        r"find_package\(Slicer REQUIRED\)",
        r"include\(\$\{Slicer_USE_FILE\}\)",
        r'set\(EXTENSION_CATEGORY "Segmentation"\)',
        r'set\(EXTENSION_DEPENDS "NA"\)',
        r"set\(EXTENSION_HOMEPAGE ",
        r"set\(EXTENSION_CONTRIBUTORS ",
        r"set\(EXTENSION_DESCRIPTION ",
        r"set\(EXTENSION_ICONURL ",
        r"set\(EXTENSION_SCREENSHOTURLS ",
        r"set\(MODULE_NAME ProstateKD\)",
        r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}\s*SCRIPTS \$\{MODULE_PYTHON_SCRIPTS\}\s*"
        r"RESOURCES \$\{MODULE_PYTHON_RESOURCES\}\s*WITH_GENERIC_TESTS\s*\)",
        r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)",
        r"include\(\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\)",
        r"include\(\$\{Slicer_EXTENSION_CPACK\}\)",
    ):
        assert re.search(required, text), f"CMakeLists.txt lacks {required}"


def _ui_widgets() -> dict[str, str]:
    tree = ElementTree.parse(UI_FILE)
    return {w.get("name"): w.get("class") for w in tree.iter("widget")}


def test_ui_file_is_valid_and_declares_its_custom_widgets():
    tree = ElementTree.parse(UI_FILE)
    assert tree.getroot().findtext("class") == "ProstateKD"
    widgets = _ui_widgets()
    assert widgets["ProstateKD"] == "qMRMLWidget"
    declared = {c.findtext("class") for c in tree.iter("customwidget")}
    custom = {cls for cls in widgets.values() if not cls.startswith("Q")}
    assert custom <= declared, f"declare in <customwidgets>: {custom - declared}"
    names = [w.get("name") for w in tree.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names in the .ui file"
    expected = {
        "inputVolumeSelector": "qMRMLNodeComboBox",
        "outputSegmentationSelector": "qMRMLNodeComboBox",
        "modelComboBox": "QComboBox",
        "deviceComboBox": "QComboBox",
        "largestComponentCheckBox": "QCheckBox",
        "applyButton": "QPushButton",
        "cancelButton": "QPushButton",
        "progressBar": "QProgressBar",
        "statusLabel": "QLabel",
        "editButton": "QPushButton",
        "datasetFolderPathLineEdit": "ctkPathLineEdit",
        "siteLineEdit": "QLineEdit",
        "saveCaseButton": "QPushButton",
    }
    for name, cls in expected.items():
        assert widgets.get(name) == cls, f"{name} should be a {cls}"
    output = next(w for w in tree.iter("widget") if w.get("name") == "outputSegmentationSelector")
    properties = {p.get("name"): p for p in output.iter("property")}
    assert properties["noneEnabled"].findtext("bool") == "true"  # "create new on Apply" by default
    assert properties["addEnabled"].findtext("bool") == "true"
    receivers = {c.findtext("receiver") for c in tree.iter("connection")}
    assert {"inputVolumeSelector", "outputSegmentationSelector"} <= receivers  # they get the scene


def test_widget_uses_only_names_from_the_ui_file():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text(encoding="utf-8")))
    assert used, "ProstateKD.py does not use self.ui"
    missing = used - set(_ui_widgets())
    assert not missing, f"ProstateKD.py uses widgets the .ui file lacks: {sorted(missing)}"


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    packages = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            packages.add(node.args[0].value.split(".")[0])
    return packages


@pytest.mark.parametrize("path", _files("ProstateKDLib", "*.py"))
def test_library_imports_no_gui_packages(path):
    imported = _imported_packages(ROOT / path)
    if path == LOGIC_FILE:
        forbidden = imported & (GUI_PACKAGES - {"slicer", "vtk", "vtkmodules"})
        assert not forbidden, f"{path} may import slicer and vtk but not {sorted(forbidden)}"
    else:
        forbidden = imported & GUI_PACKAGES
        assert not forbidden, f"{path} imports {sorted(forbidden)}; only {LOGIC_FILE} may import slicer/vtk"


def test_module_file_defines_module_widget_and_test():
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}
    assert "ScriptedLoadableModule" in classes["ProstateKD"]
    assert "ScriptedLoadableModuleWidget" in classes["ProstateKDWidget"]
    assert "ScriptedLoadableModuleTest" in classes["ProstateKDTest"]
    text = MODULE.read_text(encoding="utf-8")
    assert 'self.parent.title = "ProstateKD"' in text
    assert 'self.parent.categories = ["Segmentation"]' in text
    assert "Knowledge Distillation for Adaptive MRI Prostate Segmentation" in text
    assert "PROMISE12_HK_Case13.nii.gz" in text and (ROOT / "Resources/Samples/PROMISE12_HK_Case13.nii.gz").is_file()


# ------------------------------------------------------------ Extensions Index
RAW_PREFIX = "https://raw.githubusercontent.com/ProstateKD/ProstateKD/main/"
INDEX_FILE = ROOT / "ExtensionsIndex" / "ProstateKD.json"
# Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json: required keys,
# every allowed key with its JSON type (additionalProperties is false), scm_type enum, tier range.
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
SCHEMA_REQUIRED = ("$schema", "category", "scm_url")
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str,
                "enabled": bool, "tier": int}


def _cmake_value(variable: str) -> str:
    match = re.search(rf'set\({variable}\s+"([^"]*)"\)', CMAKE.read_text(encoding="utf-8"))
    assert match, f"CMakeLists.txt does not set {variable} to a quoted string"
    return match.group(1)


def test_extension_urls_are_literal_and_point_to_the_right_files():
    """check_description_files.py of the Extensions Index reads these as text: no ${VAR}."""
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        value = _cmake_value(variable)
        assert re.fullmatch(r"https?://\S+", value) and "${" not in value, f"{variable} is not a literal URL: {value}"
    icon, screenshot = _cmake_value("EXTENSION_ICONURL"), _cmake_value("EXTENSION_SCREENSHOTURLS")
    assert icon == RAW_PREFIX + "Resources/Icons/ProstateKD.png"
    assert screenshot.startswith(RAW_PREFIX) and screenshot != icon
    shot = ROOT / screenshot[len(RAW_PREFIX):]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{shot} is not a PNG in the repository"
    assert shot.read_bytes() != (ROOT / "Resources/Icons/ProstateKD.png").read_bytes()
    assert shot.relative_to(ROOT).as_posix() in (ROOT / "README.md").read_text(encoding="utf-8")  # shown there


def test_extensions_index_description_follows_schema_1_0_2():
    import json

    entry = json.loads(INDEX_FILE.read_text(encoding="utf-8"))
    assert entry["$schema"] == SCHEMA_URL
    missing = [key for key in SCHEMA_REQUIRED if key not in entry]
    assert not missing, f"{INDEX_FILE.name} lacks required {missing}"
    unknown = sorted(set(entry) - set(SCHEMA_TYPES))
    assert not unknown, f"{INDEX_FILE.name} has keys the schema does not allow: {unknown}"
    for key, value in entry.items():
        assert isinstance(value, SCHEMA_TYPES[key]) and not (SCHEMA_TYPES[key] is int and isinstance(value, bool)), \
            f"{key} must be a {SCHEMA_TYPES[key].__name__}"
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert entry.get("scm_type", "git") in ("git", "local")
    assert 1 <= entry.get("tier", 1) <= 5
    # and it agrees with CMakeLists.txt
    assert entry["category"] == _cmake_value("EXTENSION_CATEGORY")
    # no PyTorch extension: the module segments with onnxruntime only
    assert entry.get("build_dependencies", []) == [] and _cmake_value("EXTENSION_DEPENDS") == "NA"
    assert entry["scm_url"] == _cmake_value("EXTENSION_HOMEPAGE") + ".git"
    assert entry["scm_revision"]


def test_licence_file_at_the_root():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_module_installs_only_onnxruntime_and_matches_monai_to_torch_for_the_torch_backend():
    from ProstateKDLib.slicer_dependencies import (
        TORCH_BACKEND_REQUIREMENTS,
        module_requirements,
        monai_requirement,
        requirement_name,
        torch_backend_requirements,
    )

    assert [requirement_name(r) for r in module_requirements()] == ["onnxruntime"]  # no torch, no MONAI
    assert "nibabel>=5" in TORCH_BACKEND_REQUIREMENTS
    assert monai_requirement("2.13.0+cpu", (3, 12)) == "monai>=1.6,<1.7"
    assert monai_requirement("2.8.0", (3, 9)) == "monai>=1.5.2,<1.6"  # MONAI 1.6 needs Python 3.10
    assert monai_requirement("2.5.1+cu121", (3, 12)) == "monai>=1.5.2,<1.6"
    assert monai_requirement("2.4.0", (3, 12)) == "monai>=1.4,<1.5"  # MONAI 1.5.2 needs torch 2.4.1
    assert monai_requirement("2.2.2", (3, 9)) == "monai>=1.4,<1.5"
    assert torch_backend_requirements("2.13.0")[0].startswith("monai")
    assert "nibabel>=5" in torch_backend_requirements("2.13.0")
    import monai
    import torch

    from ProstateKDLib.slicer_dependencies import requirement_satisfied

    assert requirement_satisfied(monai_requirement(torch.__version__)), (torch.__version__, monai.__version__)
