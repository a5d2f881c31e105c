"""Add an ONNX export of the network to a model bundle (for the onnxruntime backend).

``prostatekd export`` writes it with every bundle; for an existing bundle folder::

    python -m ProstateKDLib.onnx_export Resources/Models/prostatekd-student

writes ``model.onnx`` (opset 17, batch and spatial sizes dynamic), checks that
onnxruntime's logits match torch's on two seeded random inputs, and records in
``model.json`` the file and the SHA-256 of the weights it came from
(``"onnx": {"file", "weights_sha256", "opset"}``). Needs torch, MONAI and
onnxruntime (the training install); running the export needs only onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .bundle import load_bundle
from .errors import BundleError, OutputError, ProstateKDError

ONNX_FILE = "model.onnx"
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"
RELATIVE_TOLERANCE = 1e-3  # of the largest logit; float32 reordering gives about 1e-5


def export_network(network: Any, path: Path, in_channels: int, patch_size: Sequence[int]) -> None:
    """Write ``network`` (eval mode, CPU) as ONNX with dynamic batch and spatial axes."""
    import torch

    dynamic = {0: "batch", 2: "x", 3: "y", 4: "z"}
    example = torch.zeros((1, in_channels, *patch_size), dtype=torch.float32)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and instance-norm notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network.eval().cpu(), (example,), str(path), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
        )


def check_export(path: Path, network: Any, in_channels: int, patch_size: Sequence[int],
                 divisor: Sequence[int]) -> float:
    """Largest |onnxruntime - torch| logit difference on a patch and on a larger odd-sized volume.

    Raises:
        BundleError: a difference above ``RELATIVE_TOLERANCE`` of the largest logit.
    """
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for shape in (tuple(patch_size), tuple(p + d for p, d in zip(patch_size, divisor))):
        x = rng.standard_normal((1, in_channels, *shape)).astype(np.float32)
        with torch.inference_mode():
            expected = network(torch.from_numpy(x)).float().numpy()
        got = session.run(None, {INPUT_NAME: x})[0]
        difference = float(np.abs(got - expected).max())
        if difference > RELATIVE_TOLERANCE * max(1.0, float(np.abs(expected).max())):
            raise BundleError(f"{path}: ONNX logits differ from torch's by {difference:.3g} on {shape}")
        worst = max(worst, difference)
    return worst


def add_onnx_export(folder: str | os.PathLike) -> tuple[Any, float]:
    """Write ``model.onnx`` into the bundle folder and name it in ``model.json`` (both atomic).

    Returns:
        ``(bundle, difference)``: the reloaded bundle and the largest logit difference found.

    Raises:
        BundleError: not a bundle folder, or the export does not match the network.
        OutputError: the folder cannot be written.
    """
    from .network_divisor import network_divisor
    from .onnx_backend import weights_sha256

    bundle = load_bundle(folder)
    if not bundle.path.is_dir():
        raise BundleError(f"{bundle.path}: an ONNX export can be added to a bundle folder, not a zip")
    meta = bundle.meta
    network = bundle.build_network()
    target = bundle.path / ONNX_FILE
    tmp_onnx, tmp_json = target.with_name(f".{ONNX_FILE}.tmp"), bundle.path / ".model.json.tmp"
    data = json.loads((bundle.path / "model.json").read_text(encoding="utf-8"))
    data["onnx"] = {"file": ONNX_FILE, "weights_sha256": weights_sha256(bundle), "opset": OPSET}
    try:
        export_network(network, tmp_onnx, len(meta.channels), meta.patch_size)
        difference = check_export(tmp_onnx, network, len(meta.channels), meta.patch_size,
                                  network_divisor(meta.network_name, meta.network_kwargs))
        tmp_json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_onnx, target)
        os.replace(tmp_json, bundle.path / "model.json")
    except PermissionError as exc:
        raise OutputError(f"cannot write the ONNX export into {bundle.path}: {exc.strerror}") from None
    finally:
        for leftover in (tmp_onnx, tmp_json):
            leftover.unlink(missing_ok=True)
    return load_bundle(bundle.path), difference


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ProstateKDLib.onnx_export BUNDLE...``: add or refresh the ONNX export."""
    parser = argparse.ArgumentParser(prog="python -m ProstateKDLib.onnx_export", description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", help="bundle folders (model.json + weights)")
    args = parser.parse_args(argv)
    for folder in args.bundles:
        try:
            bundle, difference = add_onnx_export(folder)
        except ProstateKDError as exc:
            print(f"onnx_export: error: {exc}", file=sys.stderr)
            return exc.exit_code
        size = (bundle.path / ONNX_FILE).stat().st_size / 1e6
        print(f"{bundle.path}: wrote {ONNX_FILE} ({size:.1f} MB, opset {OPSET}); "
              f"largest logit difference to torch {difference:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
