"""Model bundles: validation of model.json, safe weights, discovery, zip bundles."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
import torch

from ProstateKDLib.bundle import find_bundles, load_bundle, resolve_model, save_bundle
from ProstateKDLib.bundle_format import parse_model_json
from ProstateKDLib.errors import BundleError, OutputError

from conftest import make_bundle


def test_valid_bundle_loads_and_builds(tiny_bundle):
    network = tiny_bundle.build_network()
    assert not network.training
    assert tiny_bundle.meta.num_classes == 2
    assert tiny_bundle.meta.spacing == (1.0, 1.0, 3.0)
    out = network(torch.zeros(1, 1, 32, 32, 16))
    assert out.shape == (1, 2, 32, 32, 16)


@pytest.mark.parametrize(
    "key, message",
    [
        ("input.spacing", "model.json: missing field 'input.spacing'"),
        ("license", "model.json: missing field 'license'"),
        ("provenance.validation_dice", "model.json: missing field 'provenance.validation_dice'"),
        ("network.name", "model.json: missing field 'network.name'"),
    ],
)
def test_missing_field_is_named(model_json, key, message):
    node = model_json
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    del node[last]
    with pytest.raises(BundleError) as info:
        parse_model_json(model_json)
    assert str(info.value) == message


def test_wrong_values_are_named(model_json):
    model_json["input"]["spacing"] = [1.0, -1.0, 3.0]
    with pytest.raises(BundleError, match=r"field 'input.spacing' must be positive"):
        parse_model_json(model_json)
    model_json["input"]["spacing"] = [1.0, 1.0, 3.0]
    model_json["format_version"] = 9
    with pytest.raises(BundleError, match="field 'format_version' is 9; this ProstateKD reads version 1"):
        parse_model_json(model_json)
    model_json["format_version"] = 1
    model_json["labels"][0]["color"] = [2, 0, 0]
    with pytest.raises(BundleError, match=r"field 'labels\[0\].color' must hold 3 values in 0-1"):
        parse_model_json(model_json)


def copy_bundle(source, bundle_dir, changes):
    """Copy a bundle folder and set ``{"dotted.key": value}`` in its model.json."""
    shutil.copytree(source.path, bundle_dir)
    data = json.loads((bundle_dir / "model.json").read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    (bundle_dir / "model.json").write_text(json.dumps(data))
    return bundle_dir


def test_unknown_network_is_refused(tmp_path, tiny_bundle):
    bundle_dir = copy_bundle(tiny_bundle, tmp_path / "b", {"network.name": "transformer9000"})
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_dir).build_network()
    assert str(info.value).startswith(f"{bundle_dir}: unknown network 'transformer9000' (known: ")


def test_mismatched_weights_are_refused(tmp_path, tiny_bundle):
    bundle_dir = copy_bundle(tiny_bundle, tmp_path / "b", {"network.kwargs.channels": [8, 16, 32]})
    with pytest.raises(BundleError, match=r"weights do not match the network: .* of wrong shape"):
        load_bundle(bundle_dir).build_network()


def test_pickled_code_is_never_loaded(tmp_path, tiny_bundle):
    """A .pt file holding a pickled object is refused by weights_only loading."""
    bundle_dir = copy_bundle(tiny_bundle, tmp_path / "b", {"weights": "model.pt"})

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Payload()}, bundle_dir / "model.pt")
    with pytest.raises(BundleError, match=r"cannot read weights 'model.pt'"):
        load_bundle(bundle_dir).build_network()


def test_pt_weights_load(tmp_path, tiny_bundle):
    bundle_dir = copy_bundle(tiny_bundle, tmp_path / "b", {"weights": "model.pt"})
    torch.save(tiny_bundle.load_state_dict(), bundle_dir / "model.pt")
    load_bundle(bundle_dir).build_network()


def test_zip_bundle(tmp_path, tiny_bundle):
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in tiny_bundle.path.iterdir():
            zf.write(f, f"tiny-test-model/{f.name}")
    bundle = load_bundle(archive)
    assert bundle.name == "tiny-test-model"
    bundle.build_network()


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path)
    assert str(info.value) == f"{tmp_path} is not a model bundle: model.json is missing"
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "nope")
    assert str(info.value) == f"model bundle not found: {tmp_path / 'nope'}"
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match="model.json is not valid JSON"):
        load_bundle(tmp_path)


def test_discovery_through_env(tmp_path, monkeypatch, tiny_bundle):
    shutil.copytree(tiny_bundle.path, tmp_path / "mine")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{}")
    monkeypatch.setenv("PROSTATEKD_MODELS", str(tmp_path))
    bundles, problems = find_bundles()
    assert "tiny-test-model" in [b.name for b in bundles]
    assert any("broken" in p and "missing field 'format_version'" in p for p in problems)
    assert resolve_model("tiny-test-model").path == tmp_path / "mine"
    with pytest.raises(BundleError, match=r"model 'absent' not found \(installed: .*tiny-test-model"):
        resolve_model("absent")


def test_save_bundle_refuses_overwrite(tmp_path, tiny_bundle, model_json):
    target = tmp_path / "out"
    make_bundle(target)
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(OutputError) as info:
        save_bundle(target, model_json, tiny_bundle.load_state_dict())
    assert str(info.value) == f"{target} exists (use --overwrite to replace it)"
    assert (target / "model.safetensors").read_bytes() == before
    save_bundle(target, model_json, tiny_bundle.load_state_dict(), overwrite=True)
    assert list(tmp_path.iterdir()) == [target]  # no temp folders left


def test_save_bundle_refuses_mismatched_weights(tmp_path, tiny_bundle, model_json):
    model_json["network"]["kwargs"]["channels"] = [8, 16, 32]
    with pytest.raises(BundleError, match="weights do not match"):
        save_bundle(tmp_path / "out", model_json, tiny_bundle.load_state_dict())
    assert list(tmp_path.iterdir()) == []
