"""Export a ProstateKD model bundle as a MONAI Bundle that ``python -m monai.bundle run`` executes.

The MONAI Bundle folder::

    configs/metadata.json    name, version, licence, provenance, input/output format (MONAI schema)
    configs/inference.json   the whole inference in MONAI's config syntax (no ProstateKD import)
    models/model.pt          the weights as a plain state dict (torch.save)
    docs/README.md           how to run it, and how it differs from ``prostatekd segment``

Run it on every ``*.nii.gz`` of a folder::

    python -m monai.bundle run --config_file BUNDLE/configs/inference.json --bundle_root BUNDLE \\
        --dataset_dir IMAGES --output_dir MASKS

``inference.json`` reproduces ``prostatekd segment``: LoadImage + Orientation to the
model's axis codes + Spacing to its voxel size (bilinear, border padding), percentile
clipping + z-score, sliding-window inference with gaussian blending and replicate
padding, softmax, the inverse of the spatial transforms (Invertd), the argmax and, where
the bundle asks for it, MONAI's KeepLargestConnectedComponentd (full connectivity, as
ProstateKD's; it needs scikit-image, listed in ``required_packages_version``).
Differences (:data:`DIFFERENCES`): percentiles of all voxels instead of a 200k-voxel
subsample, and no plausibility warnings.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ProstateKDLib.errors import BundleError, OutputError

__all__ = ["DIFFERENCES", "export_monai_bundle", "monai_inference_config", "monai_network_def"]

DIFFERENCES = (
    "clipping percentiles from every voxel (ProstateKD: a regular sub-sample of about 200k voxels)",
    "no plausibility warnings (gland volume range, empty mask, mask touching the border)",
    "the argmax of all classes after inversion (ProstateKD thresholds the resampled foreground at 0.5: "
    "the same for two classes)",
)
METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)


def monai_network_def(network_name: str, kwargs: dict[str, Any], in_channels: int, out_channels: int) -> dict:
    """The ``network_def`` of ``inference.json`` for a registered ProstateKD network.

    Raises:
        BundleError: the network has no MONAI equivalent written here.
    """
    import inspect

    from ProstateKDLib.networks import NETWORKS

    targets = {"unet": "UNet", "dynunet": "DynUNet", "segresnet": "SegResNet"}
    if network_name not in targets:
        raise BundleError(f"network {network_name!r} cannot be exported as a MONAI bundle (known: "
                          f"{', '.join(targets)})")
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(NETWORKS.get(network_name)).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    args = {**defaults, **kwargs, "in_channels": in_channels, "out_channels": out_channels}
    args = {key: _plain(value) for key, value in args.items()}
    if network_name == "dynunet":
        args["upsample_kernel_size"] = args["strides"][1:]
    return {"_target_": targets[network_name], "spatial_dims": 3, **args}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def monai_inference_config(meta: Any) -> dict[str, Any]:
    """``inference.json`` for a bundle's :class:`~ProstateKDLib.bundle_format.BundleMeta`."""
    normalization = dict(meta.normalization)
    intensity: list[dict[str, Any]] = []
    if normalization.get("name", "zscore") == "zscore":
        clip = normalization.get("clip_percentiles")
        if clip:
            intensity.append({"_target_": "ClipIntensityPercentilesd", "keys": "image",
                              "lower": float(clip[0]), "upper": float(clip[1])})
        intensity.append({"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": False})
    # every foreground label keeps its largest 3D component, 26-connected like keep_largest_component
    largest = [{"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "is_onehot": False,
                "independent": True, "applied_labels": [label.value for label in meta.labels],
                "connectivity": 3}] if meta.largest_component else []
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch"],
        "bundle_root": ".",
        "dataset_dir": ".",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "datalist": "$[{'image': f} for f in sorted(glob.glob(os.path.join(@dataset_dir, '*.nii.gz')))]",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": monai_network_def(meta.network_name, dict(meta.network_kwargs), len(meta.channels),
                                         meta.num_classes),
        "network": "$@network_def.to(@device)",
        "load_weights": (
            "$@network.load_state_dict(torch.load(os.path.join(@bundle_root, 'models', 'model.pt'), "
            "map_location=@device, weights_only=True))"
        ),
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "image_only": False},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": meta.orientation, "labels": None},
                {"_target_": "Spacingd", "keys": "image", "pixdim": list(meta.spacing), "mode": "bilinear",
                 "padding_mode": "border", "dtype": "$torch.float32"},
                *intensity,
            ],
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(meta.patch_size),
            "sw_batch_size": meta.sw_batch_size,
            "overlap": meta.overlap,
            "mode": meta.blend_mode,
            "padding_mode": "replicate",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                 "nearest_interp": False, "to_tensor": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                *largest,
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "resample": False,
                 "separate_folder": False, "print_log": False},
            ],
        },
        "predict": (
            "$lambda d: @postprocessing({**d, 'pred': @inferer(d['image'][None].to(@device), @network)[0].cpu()})"
        ),
        "run": [
            "$@load_weights",
            "$@network.eval()",
            "$torch.set_grad_enabled(False)",
            "$[@predict(@preprocessing(item)) for item in @datalist]",
        ],
    }


def monai_metadata(meta: Any) -> dict[str, Any]:
    """``metadata.json``: identity, licence, provenance and the input/output format."""
    import monai
    import numpy
    import torch

    classes = {"0": "background", **{str(label.value): label.name for label in meta.labels}}
    return {
        "schema": METADATA_SCHEMA,
        "version": meta.version,
        "changelog": {meta.version: f"exported from the ProstateKD bundle {meta.name} {meta.version}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {
            "nibabel": _version("nibabel"),
            **({"scikit-image": _version("scikit-image")} if meta.largest_component else {}),
        },
        "name": meta.name,
        "task": "whole-gland prostate segmentation on T2-weighted MRI",
        "description": meta.description,
        "authors": "ProstateKD contributors",
        "copyright": "ProstateKD contributors",
        "license": meta.license,
        "intended_use": "research; see the provenance: not a clinical model unless it says otherwise",
        "provenance": dict(meta.provenance),
        "differences_from_prostatekd_segment": list(DIFFERENCES),
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "MR", "num_channels": len(meta.channels),
                "spatial_shape": list(meta.patch_size), "dtype": "float32", "value_range": [],
                "is_patch_data": True, "channel_def": {str(i): c for i, c in enumerate(meta.channels)},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": meta.num_classes,
                "spatial_shape": list(meta.patch_size), "dtype": "float32", "value_range": [0, 1],
                "is_patch_data": True, "channel_def": classes,
            }},
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def export_monai_bundle(source: str | os.PathLike | None, outdir: str | os.PathLike,
                        overwrite: bool = False, checkpoint: str = "best") -> Path:
    """Write the MONAI Bundle of ``source`` to ``outdir``; return ``outdir``.

    Args:
        source: a ProstateKD bundle (name, folder or zip; ``None`` = the default student)
            or a training run folder (its ``checkpoint`` is exported first).
        outdir: the MONAI Bundle folder to write (written to a temporary sibling, then renamed).
        overwrite: replace an existing ``outdir``.

    Raises:
        OutputError: ``<outdir> exists (use --overwrite to replace it)``, ``output folder does not exist``.
        BundleError: the source bundle is invalid, or its network has no MONAI equivalent here.
    """
    import torch

    from ProstateKDLib.bundle import resolve_model

    target = Path(outdir).expanduser()
    if target.exists() and not overwrite:
        raise OutputError(f"{outdir} exists (use --overwrite to replace it)")
    if not target.parent.is_dir():
        raise OutputError(f"output folder does not exist: {target.parent}")
    with tempfile.TemporaryDirectory(prefix=".prostatekd-export-", dir=target.parent) as scratch:
        if source is not None and (Path(source).expanduser() / "config.yaml").is_file():
            from .export import export_run

            bundle = export_run(source, Path(scratch) / "bundle", checkpoint=checkpoint)
        else:
            bundle = resolve_model(source)
        meta = bundle.meta
        state = bundle.build_network().state_dict()  # checks the weights against the network
        build = Path(scratch) / "monai"
        (build / "configs").mkdir(parents=True)
        (build / "models").mkdir()
        (build / "docs").mkdir()
        (build / "configs" / "inference.json").write_text(json.dumps(monai_inference_config(meta), indent=2) + "\n",
                                                          encoding="utf-8")
        (build / "configs" / "metadata.json").write_text(json.dumps(monai_metadata(meta), indent=2) + "\n",
                                                         encoding="utf-8")
        torch.save({k: v.detach().cpu() for k, v in state.items()}, build / "models" / "model.pt")
        (build / "docs" / "README.md").write_text(_readme(meta), encoding="utf-8")
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
            os.replace(target, old)
        os.replace(build, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _readme(meta: Any) -> str:
    differences = "\n".join(f"- {d}" for d in DIFFERENCES)
    return (
        f"# {meta.name} {meta.version} (MONAI Bundle, exported by ProstateKD)\n\n{meta.description}\n\n"
        "```bash\npython -m monai.bundle run --config_file configs/inference.json --bundle_root . "
        "--dataset_dir IMAGES --output_dir MASKS\n```\n\n"
        "Every `*.nii.gz` of IMAGES gets `MASKS/<name>_seg.nii.gz` (uint8 labels on the input grid).\n\n"
        f"Differences from `prostatekd segment`:\n\n{differences}\n\nLicence: {meta.license}.\n"
    )
