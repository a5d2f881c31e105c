"""Export a training run as a model bundle (``model.json``, safetensors weights, ONNX export)."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from ProstateKDLib.errors import ConfigError, OutputError

from .config import Config, load_config
from .train import BLEND_MODE, INFERENCE_OVERLAP

CHECKPOINTS = ("best", "last")
VOLUME_ML_RANGE = [5, 250]


def prostate_label() -> dict[str, Any]:
    """The one output label: value 1, Slicer's prostate colour and SNOMED CT terminology."""
    from ProstateKDLib.seg_nrrd import PROSTATE_COLOR
    from ProstateKDLib.terminology import PROSTATE_TERMINOLOGY

    return {
        "value": 1,
        "name": "Prostate",
        "color": [round(c, 4) for c in PROSTATE_COLOR],
        "terminology": {k: list(v) for k, v in PROSTATE_TERMINOLOGY.items()},
    }


def method_record(config: Config) -> dict[str, Any]:
    """``{"distiller", "weights", "options"}``: the method with every default filled in."""
    from training.distillers import DISTILLERS

    cls = DISTILLERS.get(config.distiller.name)
    weights = {name: float({**cls.default_weights, **config.distiller.weights}[name]) for name in cls.loss_names}
    return {"distiller": config.distiller.name, "weights": weights, "options": config.distiller.resolved_options()}


def describe_method(config: Config) -> str:
    """One line naming the distiller, its weighted loss terms and its options (e.g. ``temperature=2``)."""
    record = method_record(config)
    losses = " + ".join(f"{w:g}*{name}" for name, w in record["weights"].items())
    kind = "supervised training, no distillation" if config.distiller.name == "none" else "knowledge distillation"
    options = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in record["options"].items() if v is not None)
    return f"distiller '{config.distiller.name}' ({kind}); loss {losses}" + (f"; {options}" if options else "")


CHANNEL_NAMES = ("T2", "ADC")  # channel order of the Decathlon prostate (and of phantom_adc)


def input_channel_names(config: Config) -> list[str]:
    """Names of the model's input channels for ``model.json``.

    Without ``data.channels``: ``["T2"]`` (single-channel models only). With it: the names
    (``T2``, ``ADC``, else ``channel <i>``) of the channels the model sees, i.e. ``data.channels``,
    or for a ``cross_modality`` student the ones its ``student_channels`` pick; as many as
    ``model.in_channels``.

    Raises:
        ConfigError: a multi-channel model without matching ``data.channels``.
    """
    n = config.model.in_channels
    chosen = tuple(config.data.channels or ())
    if chosen and config.distiller.name == "cross_modality":  # the student sees some of the loaded channels
        picked = config.distiller.options.get("student_channels") or [0]
        chosen = tuple(chosen[i] for i in picked if i < len(chosen))
    if n == 1 and not chosen:
        return ["T2"]
    if len(chosen) != n:
        raise ConfigError(
            f"config {config.source}: key 'model.in_channels' is {n} but 'data.channels' lists "
            f"{len(chosen)} channels; a multi-channel model needs data.channels naming its inputs"
        )
    return [CHANNEL_NAMES[c] if c < len(CHANNEL_NAMES) else f"channel {c}" for c in chosen]


def build_model_json(config: Config, epoch: int, epochs_trained: int, validation_dice: float | None,
                     parameters: int, git: dict[str, Any] | None,
                     teachers: list[dict[str, Any]] | None = None,
                     training_cases: int | None = None) -> dict[str, Any]:
    """``model.json`` (format 1) of a run, from its config and the exported checkpoint.

    ``provenance.method`` names the distiller with its loss weights and options
    (``provenance.distillation`` holds them as data); ``provenance.teachers``
    lists each teacher's name, version, training subset and validation Dice;
    ``provenance.training_subset`` says which cases this model saw.

    Raises:
        ConfigError: a multi-channel model whose channels ``data.channels`` does not name.
    """
    from ProstateKDLib import __version__

    channels = input_channel_names(config)
    from .cases import describe_subset

    pre = config.preprocessing
    return {
        "format_version": 1,
        "name": config.export.name,
        "version": config.export.version,
        "description": config.export.description,
        "network": {"name": config.model.network, "kwargs": dict(config.model.kwargs)},
        "weights": "model.safetensors",
        "input": {
            "channels": channels,
            "orientation": pre.orientation,
            "spacing": list(pre.spacing),
            "patch_size": list(pre.patch_size),
            "normalization": pre.normalization.as_dict(),
        },
        "inference": {"overlap": INFERENCE_OVERLAP, "blend_mode": BLEND_MODE, "sw_batch_size": 1},
        "labels": [prostate_label()],
        "postprocessing": {"largest_component": True, "volume_ml_range": list(VOLUME_ML_RANGE)},
        "license": config.export.license,
        "provenance": {
            "training_data": config.export.training_data,
            "method": describe_method(config),
            "distillation": method_record(config),
            "teachers": list(teachers or []),
            "training_subset": describe_subset(config.data),
            "training_cases": training_cases,
            "validation_dice": None if validation_dice is None else round(float(validation_dice), 4),
            "validation": "mean Dice of the gland on the validation cases, model grid, "
            "sliding window, no postprocessing",
            "date": _dt.date.today().isoformat(),
            "epochs_trained": epochs_trained,
            "checkpoint_epoch": epoch,
            "training_seed": config.train.seed,
            "git_commit": (git or {}).get("commit"),
            "software_version": f"prostatekd {__version__}",
            "parameters": parameters,
        },
    }


def export_run(
    run_dir: str | os.PathLike,
    outdir: str | os.PathLike,
    checkpoint: str = "best",
    overwrite: bool = False,
) -> Any:
    """Write the bundle of a run's ``best`` or ``last`` checkpoint to ``outdir``.

    Returns:
        the saved :class:`~ProstateKDLib.bundle.ModelBundle` (loaded back and checked).

    Raises:
        OutputError: no run there, checkpoint missing, or ``outdir`` exists without ``overwrite``.
        ConfigError: the run's ``config.yaml`` is invalid.
    """
    import json

    from ProstateKDLib.bundle import save_bundle
    from ProstateKDLib.networks import build_network, count_parameters
    from ProstateKDLib.onnx_export import add_onnx_export

    from .checkpoint import BEST, LAST, load_checkpoint

    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "config.yaml").is_file():
        raise OutputError(f"{run_dir} is not a training run: config.yaml is missing")
    config = load_config(run_dir / "config.yaml")
    last = load_checkpoint(run_dir / LAST)
    best = load_checkpoint(run_dir / BEST) if (run_dir / BEST).is_file() else None
    if checkpoint == "best" and best is None:
        raise OutputError(f"checkpoint not found: {run_dir / BEST}")
    chosen = best if checkpoint == "best" else last
    assert chosen is not None
    history = last.get("history") or []
    epoch = int(chosen["epoch"])
    dice = next((row.get("val_dice") for row in history if row.get("epoch") == epoch), chosen.get("val_dice"))
    network = build_network(config.model.network, config.model.network_kwargs())
    run_json = run_dir / "run.json"
    info = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else {}
    teachers = last.get("teachers") or info.get("teachers") or []
    n_cases = len((info.get("data") or {}).get("train_cases") or []) or None
    model_json = build_model_json(config, epoch, int(last["epoch"]), dice, count_parameters(network),
                                  info.get("git"), teachers, n_cases)
    return save_bundle(outdir, model_json, chosen["model"], overwrite=overwrite, finish=add_onnx_export)
