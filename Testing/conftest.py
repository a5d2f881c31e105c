"""Shared fixtures: tiny model bundles and oblique, anisotropic test volumes."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The project's real data (PROMISE12, ProstateX DICOM): ``../shared/data`` beside the checkout.
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real MRI; see its README); fails clearly when it is not beside the checkout."""
    if not (SHARED_DATA / "promise12").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}: put the project's shared/ folder beside the checkout")
    return SHARED_DATA

TINY_NETWORK = {"name": "unet", "kwargs": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}}

MODEL_JSON: dict[str, Any] = {
    "format_version": 1,
    "name": "tiny-test-model",
    "version": "0.0.1",
    "description": "random weights, for tests only",
    "network": TINY_NETWORK,
    "weights": "model.safetensors",
    "input": {
        "channels": ["T2"],
        "orientation": "RAS",
        "spacing": [1.0, 1.0, 3.0],
        "patch_size": [32, 32, 16],
        "normalization": {"name": "zscore", "clip_percentiles": [0.5, 99.5]},
    },
    "inference": {"overlap": 0.25, "blend_mode": "gaussian", "sw_batch_size": 2},
    "labels": [
        {
            "value": 1,
            "name": "Prostate",
            "color": [0.902, 0.62, 0.549],
            "terminology": {
                "category": ["SCT", "123037004", "Anatomical Structure"],
                "type": ["SCT", "41216001", "Prostate"],
            },
        }
    ],
    "postprocessing": {"largest_component": True, "volume_ml_range": [5, 250]},
    "license": "Apache-2.0",
    "provenance": {
        "training_data": "none (random weights)",
        "method": "none",
        "teachers": [],
        "validation_dice": None,
        "date": "2026-11-22",
    },
}


@pytest.fixture
def model_json() -> dict[str, Any]:
    """A fresh deep copy of a valid ``model.json`` for a tiny UNet."""
    return copy.deepcopy(MODEL_JSON)


def make_bundle(outdir: Path, data: dict[str, Any] | None = None, seed: int = 0) -> Any:
    """Write a bundle with random (seeded) weights for ``data`` (default MODEL_JSON)."""
    import torch

    from ProstateKDLib.bundle import save_bundle
    from ProstateKDLib.networks import build_network

    data = copy.deepcopy(data or MODEL_JSON)
    torch.manual_seed(seed)
    kwargs = {"in_channels": 1, "out_channels": 2, **data["network"]["kwargs"]}
    network = build_network(data["network"]["name"], kwargs)
    return save_bundle(outdir, data, network.state_dict())


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A valid bundle folder with random weights (session-wide, read-only use)."""
    return make_bundle(tmp_path_factory.mktemp("bundles") / "tiny-test-model")


def oblique_direction(angle_deg: float = 20.0, axis: tuple[float, float, float] = (0.3, 1.0, 0.5),
                      permute: bool = True) -> np.ndarray:
    """A rotation about ``axis`` combined with an axis flip and permutation: oblique and non-RAS."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_rotvec(np.radians(angle_deg) * np.asarray(axis) / np.linalg.norm(axis)).as_matrix()
    flip = np.diag([1.0, -1.0, 1.0])
    direction = rotation @ flip
    if permute:
        direction = direction[:, [1, 0, 2]]
    return direction


@pytest.fixture
def make_volume() -> Callable[..., Any]:
    """Factory for oblique, anisotropic SimpleITK volumes with a bright ellipsoid."""
    import SimpleITK as sitk

    def factory(size=(48, 40, 12), spacing=(0.5, 0.6, 3.0), origin=(12.5, -40.0, 7.0),
                direction=None, seed: int = 0) -> Any:
        rng = np.random.default_rng(seed)
        x, y, z = size
        kk, jj, ii = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
        inside = ((ii - x / 2) / (x / 4)) ** 2 + ((jj - y / 2) / (y / 4)) ** 2 + ((kk - z / 2) / (z / 3)) ** 2 < 1
        array = (100 + 200 * inside + rng.normal(0, 10, inside.shape)).astype(np.float32)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        direction = oblique_direction() if direction is None else np.asarray(direction)
        image.SetDirection(direction.ravel().tolist())
        return image

    return factory


def assert_same_geometry(a: Any, b: Any, tol: float = 1e-5) -> None:
    """Size, spacing, origin and direction of two SimpleITK images agree."""
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


# ------------------------------------------------------------------ tiny networks and batches
#: The patch of the distiller tests' batches.
PATCH = (16, 16, 8)


def unet(channels: Any = (4, 8, 16), seed: int = 0, in_channels: int = 1) -> Any:
    """A tiny MONAI UNet (two down-steps, no residual units), seeded."""
    import torch

    from ProstateKDLib.networks import build_network

    torch.manual_seed(seed)
    return build_network("unet", {"in_channels": in_channels, "channels": list(channels), "strides": [2, 2],
                                  "num_res_units": 0})


def batch(seed: int = 0) -> tuple[Any, Any]:
    """Two patches with a bright cube labelled as gland (a real, learnable signal)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(2, 1, *PATCH, dtype=torch.uint8)
    label[0, :, 4:12, 4:12, 2:6] = 1
    label[1, :, 2:8, 6:14, 1:5] = 1
    image = label.float() * 2 - 1 + 0.3 * torch.randn(2, 1, *PATCH, generator=g)
    return image, label


class FixedTeacher(torch.nn.Module):
    """A 1x1x1 convolution turning a {-1, +1} image into confident logits (``sign=-1``: the complement)."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([-4.0, 4.0]).view(2, 1, 1, 1, 1) * sign
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: a new folder of coarse multi-site phantoms (48 x 48 x 12 voxels by default)."""

    def make(cases_per_site: int, sites: Any, seed: int | None = None, size: Any = (48, 48, 12)) -> Path:
        from ProstateKDLib.phantom import write_phantom_dataset

        root = tmp_path_factory.mktemp("phantoms")
        extra = {} if seed is None else {"seed": seed}
        write_phantom_dataset(root, cases_per_site=cases_per_site, sites=list(sites), size=tuple(size), **extra)
        return root

    return make


# ------------------------------------------------------------------ the import graph (static)
def module_name(path: Path) -> str:
    """Dotted module name of a repository file (``ProstateKDLib/cli/__init__.py`` -> ``ProstateKDLib.cli``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    """Repository modules ``path`` imports anywhere in the file (top level, functions, ``import_module("...")``).

    ``from package import name`` counts as an import of ``package.name`` when that is a
    module, else of ``package``; modules outside the repository are left out.
    """
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if _module_file(f"{base}.{alias.name}") else base)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {name for name in found if name and _module_file(name) is not None}


def import_graph(*packages: str) -> dict[str, set[str]]:
    """``{module: the repository modules it imports}`` for every file of ``packages``."""
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                graph[module_name(path)] = imports_of(path)
    return graph
