"""Model bundles: find, load and save the folder (or zip) a trained model ships in.

Weights are read with ``safetensors`` or ``torch.load(weights_only=True)``:
a bundle can never run code on load. See :mod:`ProstateKDLib.bundle_format`
for the ``model.json`` fields.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .bundle_format import BundleMeta, parse_model_json
from .errors import BundleError, OutputError

MODELS_ENV = "PROSTATEKD_MODELS"
DEFAULT_MODEL = "prostatekd-student"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def resources_dir() -> Path:
    """The module's ``Resources/`` folder (sibling of ``ProstateKDLib/``)."""
    return Path(__file__).resolve().parent.parent / "Resources"


def bundled_models_dir() -> Path:
    """Where the bundled default student lives: ``Resources/Models``."""
    return resources_dir() / "Models"


def model_search_paths() -> list[Path]:
    """Folders searched for bundles: ``$PROSTATEKD_MODELS`` entries, then the bundled folder."""
    paths = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return paths + [bundled_models_dir()]


@dataclass(frozen=True)
class ModelBundle:
    """A validated bundle on disk: its location and parsed ``model.json``."""

    path: Path
    meta: BundleMeta

    @property
    def name(self) -> str:
        return self.meta.name

    def size_bytes(self) -> int:
        """Size on disk of the bundle (folder contents or zip file)."""
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def read_file(self, name: str) -> bytes:
        """Bytes of a file inside the bundle (folder or zip)."""
        if self.path.is_file():
            with zipfile.ZipFile(self.path) as archive:
                member = _zip_member(archive, name)
                if member is None:
                    raise BundleError(f"{self.path}: file {name!r} named in model.json is missing")
                return archive.read(member)
        target = self.path / name
        if not target.is_file():
            raise BundleError(f"{self.path}: file {name!r} named in model.json is missing")
        return target.read_bytes()

    def load_state_dict(self) -> dict[str, Any]:
        """The weights as a state dict, without unpickling any code."""
        name = self.meta.weights
        data = self.read_file(name)
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load as load_safetensors

                return load_safetensors(data)
            import torch

            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt file or pickled code
            raise BundleError(f"{self.path}: cannot read weights {name!r}: {_first_line(exc)}") from None
        if not isinstance(state, Mapping):
            raise BundleError(f"{self.path}: weights {name!r} hold no state dict")
        return dict(state["state_dict"]) if "state_dict" in state else dict(state)

    def build_network(self) -> Any:
        """Build the network named in ``model.json`` and load its weights (CPU, eval mode)."""
        from .networks import NETWORKS, build_network

        meta = self.meta
        if meta.network_name not in NETWORKS:
            raise BundleError(
                f"{self.path}: unknown network {meta.network_name!r} "
                f"(known: {', '.join(NETWORKS.names())})"
            )
        kwargs = {"in_channels": len(meta.channels), "out_channels": meta.num_classes}
        kwargs.update(meta.network_kwargs)
        try:
            network = build_network(meta.network_name, kwargs)
        except (TypeError, ValueError, AssertionError) as exc:
            raise BundleError(f"{self.path}: cannot build network: {_first_line(exc)}") from None
        check_weights_match(network, self.load_state_dict(), str(self.path))
        return network.eval()


def check_weights_match(network: Any, state: Mapping[str, Any], source: str) -> None:
    """Load ``state`` into ``network`` strictly; BundleError says what does not match."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} of wrong shape (e.g. {wrong[0]})")
    if problems:
        raise BundleError(f"{source}: weights do not match the network: " + "; ".join(problems))
    network.load_state_dict(state, strict=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _zip_member(archive: zipfile.ZipFile, name: str) -> str | None:
    """Find ``name`` at the zip root or inside one top-level folder."""
    for member in archive.namelist():
        if member == name or (member.endswith("/" + name) and member.count("/") == 1):
            return member
    return None


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load and validate the bundle at ``path`` (folder, zip, or its ``model.json``).

    Raises:
        BundleError: not a bundle, unreadable or invalid ``model.json``.
    """
    path = Path(path).expanduser()
    if path.name == "model.json" and path.is_file():
        path = path.parent
    if path.is_dir():
        source = path / "model.json"
        if not source.is_file():
            raise BundleError(f"{path} is not a model bundle: model.json is missing")
        text = source.read_text(encoding="utf-8")
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = _zip_member(archive, "model.json")
            if member is None:
                raise BundleError(f"{path} is not a model bundle: model.json is missing")
            text = archive.read(member).decode("utf-8")
    elif path.exists():
        raise BundleError(f"{path} is not a model bundle (expected a folder or .zip with model.json)")
    else:
        raise BundleError(f"model bundle not found: {path}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}/model.json is not valid JSON: {exc}") from None
    return ModelBundle(path, parse_model_json(data, f"{path}/model.json"))


def find_bundles(search_paths: list[Path] | None = None) -> tuple[list[ModelBundle], list[str]]:
    """All bundles in the search paths (first found wins per name), plus problems found.

    Returns:
        ``(bundles, problems)``: valid bundles, and one line per invalid one.
    """
    bundles: dict[str, ModelBundle] = {}
    problems: list[str] = []
    for folder in search_paths if search_paths is not None else model_search_paths():
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if not ((candidate / "model.json").is_file() or candidate.suffix == ".zip"):
                continue
            try:
                bundle = load_bundle(candidate)
            except BundleError as exc:
                problems.append(str(exc))
                continue
            bundles.setdefault(bundle.name, bundle)
    return list(bundles.values()), problems


def resolve_model(name_or_path: str | os.PathLike | None = None) -> ModelBundle:
    """Find a bundle by path, or by name in the search paths (``None``: the default student).

    Raises:
        BundleError: nothing found; the message lists installed bundles.
    """
    name = str(name_or_path) if name_or_path else DEFAULT_MODEL
    as_path = Path(name).expanduser()
    if as_path.exists() or os.sep in name or name.endswith((".zip", ".json")):
        return load_bundle(as_path)
    bundles, _ = find_bundles()
    for bundle in bundles:
        if bundle.name == name:
            return bundle
    installed = ", ".join(b.name for b in bundles) or "none"
    raise BundleError(
        f"model {name!r} not found (installed: {installed}; search paths: "
        f"{', '.join(str(p) for p in model_search_paths())})"
    )


def save_bundle(
    outdir: str | os.PathLike,
    model_json: Mapping[str, Any],
    state_dict: Mapping[str, Any],
    overwrite: bool = False,
    finish: Callable[[Path], Any] | None = None,
) -> ModelBundle:
    """Write a bundle folder atomically (validated ``model.json`` + safetensors weights).

    The weights are checked against the network first, so a bundle written
    here always loads. ``finish`` is called with the still temporary folder
    before it becomes ``outdir`` (e.g. :func:`~ProstateKDLib.onnx_export.add_onnx_export`);
    if it raises, nothing is written.

    Raises:
        BundleError: ``model_json`` is invalid or does not match ``state_dict``.
        OutputError: ``outdir`` exists and ``overwrite`` is false, or its parent is missing.
    """
    from safetensors.torch import save as save_safetensors

    outdir = Path(outdir).expanduser()
    data = dict(model_json)
    data.setdefault("weights", "model.safetensors")
    if not str(data["weights"]).endswith(".safetensors"):
        raise BundleError(f"save_bundle writes safetensors; 'weights' is {data['weights']!r}")
    meta = parse_model_json(data, "model.json")
    if outdir.exists() and not overwrite:
        raise OutputError(f"{outdir} exists (use --overwrite to replace it)")
    if not outdir.parent.is_dir():
        raise OutputError(f"output folder does not exist: {outdir.parent}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        (tmp / meta.weights).write_bytes(save_safetensors(tensors))
        (tmp / "model.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        load_bundle(tmp).build_network()  # refuses weights that do not match
        if finish is not None:
            finish(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        if outdir.exists():
            shutil.rmtree(outdir)
        os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(outdir)
