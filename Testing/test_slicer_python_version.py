"""Defect 7: the module and the library run on the Python of every supported Slicer (5.6 and 5.8 ship 3.9).

Three checks: ``vermin`` (no language feature or standard-library API newer than
3.9), a check of ``X | Y`` unions (vermin's own check for them ignores
``from __future__ import annotations``, so it is done here: allowed in
annotations of files with that import, nowhere else), and a real Python 3.9
interpreter when one is installed (pyenv's, on this project's machines):
every file compiles, and the torch-free modules the module's GUI side uses
import and work.
"""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OLDEST = (3, 9)  # Slicer 5.6 and 5.8
TYPE_NAMES = {"None", "int", "str", "float", "bool", "bytes", "list", "dict", "tuple", "set", "type", "object", "Any"}


def checked_files() -> list[Path]:
    """ProstateKD.py and the library (the inference part and the module's logic)."""
    return [ROOT / "ProstateKD.py", *sorted(p for p in (ROOT / "ProstateKDLib").rglob("*.py")
                                            if "__pycache__" not in p.parts)]


def test_requires_python_matches_the_oldest_supported_slicer():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.9"
    # MONAI's Orientation imports nibabel at run time: wherever MONAI is installed, so is nibabel
    torch_extra = project["optional-dependencies"]["torch"]
    assert any(d.startswith("monai") for d in torch_extra) and "nibabel>=5" in torch_extra
    assert not any(d.startswith(("monai", "torch")) for d in project["dependencies"])


def test_vermin_finds_nothing_newer_than_python_3_9():
    pytest.importorskip("vermin", reason="vermin is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())", "--no-tips", "--violations", "-t=3.9-", "--no-parse-comments",
         *[str(p) for p in checked_files()]],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "Target versions not met" not in result.stdout, result.stdout + result.stderr


def _is_type_like(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    if isinstance(node, ast.Name):
        return node.id in TYPE_NAMES or (node.id[:1].isupper() and not node.id.isupper())
    if isinstance(node, ast.Subscript):
        return _is_type_like(node.value)
    if isinstance(node, ast.Attribute):
        return node.attr[:1].isupper() and not node.attr.isupper()  # a class, not a constant like os.W_OK
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and _is_type_like(node.left)


def _annotations(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        roots = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            roots += [a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs,
                                              args.vararg, args.kwarg] if a is not None and a.annotation]
            roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        for root in roots:
            if root is not None:
                inside |= {id(n) for n in ast.walk(root)}
    return inside


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_union_types_only_in_postponed_annotations(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                    and any(a.name == "annotations" for a in n.names) for n in tree.body)
    in_annotation = _annotations(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) \
                and _is_type_like(node.left) and _is_type_like(node.right):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert id(node) in in_annotation, f"{where}: 'X | Y' evaluated at run time needs Python 3.10"
            assert postponed, f"{where}: 'X | Y' annotation without 'from __future__ import annotations'"


def python39() -> str | None:
    """A Python 3.9 interpreter of this machine, or None."""
    candidates = [shutil.which("python3.9"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))),
                  *sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9"))]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            out = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return candidate
    return None


@pytest.fixture(scope="module")
def py39() -> str:
    found = python39()
    if found is None:
        pytest.skip("no Python 3.9 interpreter on this machine (vermin still checked the code)")
    return found


def test_every_file_compiles_on_a_real_python_3_9(py39, tmp_path):
    script = textwrap.dedent(
        """
        import py_compile, sys
        for i, path in enumerate(sys.argv[1:]):
            py_compile.compile(path, cfile=f"{OUT}/{i}.pyc", doraise=True)
        print("compiled", len(sys.argv) - 1)
        """
    ).replace("{OUT}", str(tmp_path))
    files = [str(p) for p in checked_files()]
    result = subprocess.run([py39, "-c", script, *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"compiled {len(files)}"


def test_gui_side_modules_run_on_a_real_python_3_9(py39):
    """What runs in Slicer's own Python around the child process: output reading, requirements, terminology."""
    script = textwrap.dedent(
        r"""
        import subprocess, sys
        from ProstateKDLib.background import parse_progress, read_lines
        from ProstateKDLib.errors import InputError
        from ProstateKDLib.slicer_dependencies import module_requirements, torch_backend_requirements
        from ProstateKDLib.terminology import PROSTATE_TERMINOLOGY, slicer_terminology_tag

        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'progress 0.5 half\\n\\xff\\nlast\\n')"],
            stdout=subprocess.PIPE, universal_newlines=True)
        lines = list(read_lines(child.stdout))
        child.wait()
        assert lines == ["progress 0.5 half", "last"], lines
        assert parse_progress(lines[0]) == (0.5, "half")
        assert torch_backend_requirements("2.8.0")[0] == "monai>=1.5.2,<1.6", torch_backend_requirements("2.8.0")
        assert module_requirements() == ["onnxruntime>=1.17"], module_requirements()
        assert slicer_terminology_tag(PROSTATE_TERMINOLOGY).endswith("~^^~^^")
        assert InputError.exit_code == 3
        print("ok", sys.version_info[:2])
        """
    )
    result = subprocess.run([py39, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok (3, 9)"
