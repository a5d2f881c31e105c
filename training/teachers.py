"""Teachers of a distillation run: find their bundles, check their grid, describe them.

A config's ``teachers`` entries (expanded by :mod:`training.config` at load
time) are model bundles (folder, ``.zip`` or ``model.json``), the names of
installed ones, or external teachers (folders of per-case probability maps, see
:mod:`training.external_teacher`; their maps are on each case's own grid, so no grid check); a run folder stands for its ``bundle/`` and a ``train-teacher``
folder for every teacher listed in its ``teachers.json``.

Voxel-wise distillation compares teacher and student probabilities voxel by
voxel, so every teacher must have been trained on the student's preprocessing
grid: same orientation, spacing and intensity normalisation (and the same input
channels and classes). :func:`check_teacher_grid` refuses anything else with a
:class:`~ProstateKDLib.errors.ConfigError` naming the config key::

    config <file>: key 'preprocessing.spacing' is [2.0, 2.0, 4.0] but teacher 'x' (<path>) was trained
    with [1.0, 1.0, 3.0]; teacher and student must share orientation, spacing and normalization
    for voxel-wise distillation
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ProstateKDLib.errors import BundleError, ConfigError

from .config import Config

GRID_HINT = "teacher and student must share orientation, spacing and normalization for voxel-wise distillation"


@dataclass
class Teacher:
    """A loaded, frozen-to-be teacher: its network, bundle and a provenance record.

    For an external teacher (a folder of probability maps, :mod:`training.external_teacher`)
    ``network`` is a :class:`~training.cached_teacher.CachedTeacher`, ``bundle`` is None and
    ``external`` the opened folder.
    """

    network: Any
    bundle: Any
    entry: str
    external: Any = None

    def describe(self) -> dict[str, Any]:
        """Name, version, path, network, parameters, training subset and validation Dice."""
        if self.external is not None:
            return self.external.describe()
        meta = self.bundle.meta
        prov = dict(meta.provenance)
        return {
            "name": meta.name,
            "version": meta.version,
            "path": str(self.bundle.path),
            "network": meta.network_name,
            "parameters": sum(p.numel() for p in self.network.parameters()),
            "training_subset": prov.get("training_subset"),
            "training_cases": prov.get("training_cases"),
            "validation_dice": prov.get("validation_dice"),
            "method": prov.get("method"),
        }


def _normalization(value: Any) -> dict[str, Any]:
    data = dict(value or {})
    out: dict[str, Any] = {"name": data.get("name", "zscore")}
    if data.get("clip_percentiles") is not None:
        out["clip_percentiles"] = [float(v) for v in data["clip_percentiles"]]
    return out


def check_teacher_grid(config: Config, bundle: Any) -> None:
    """ConfigError unless the teacher bundle shares the config's grid, channels and classes.

    Checked in this order: ``preprocessing.orientation``, ``preprocessing.spacing``,
    ``preprocessing.normalization``, the input channels (``data.channels`` when set: a
    cross-modality teacher sees every loaded channel; else ``model.in_channels``), ``model.num_classes``.
    """
    meta = bundle.meta
    pre = config.preprocessing
    checks = [
        ("preprocessing.orientation", pre.orientation.upper(), meta.orientation.upper(),
         lambda a, b: a == b),
        ("preprocessing.spacing", [float(v) for v in pre.spacing], [float(v) for v in meta.spacing],
         lambda a, b: all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b))),
        ("preprocessing.normalization", _normalization(pre.normalization.as_dict()),
         _normalization(meta.normalization), lambda a, b: a == b),
        ("data.channels" if config.data.channels else "model.in_channels",
         len(config.data.channels) if config.data.channels else config.model.in_channels,
         len(meta.channels), lambda a, b: a == b),  # channels the teacher gets: all that are loaded
        ("model.num_classes", config.model.num_classes, meta.num_classes, lambda a, b: a == b),
    ]
    for key, mine, theirs, same in checks:
        if not same(mine, theirs):
            raise ConfigError(
                f"config {config.source}: key '{key}' is {mine!r} but teacher {meta.name!r} ({bundle.path}) "
                f"was trained with {theirs!r}; {GRID_HINT}"
            )


def load_teachers(config: Config) -> list[Teacher]:
    """Load every teacher of ``config`` (CPU, eval mode), checking each one's grid.

    Raises:
        ConfigError: a teacher is missing, unreadable, or on another grid
            (the message names the config key).
    """
    from ProstateKDLib.bundle import resolve_model

    from .cached_teacher import CachedTeacher
    from .external_teacher import is_external_teacher, read_external_teacher

    teachers: list[Teacher] = []
    for entry in config.teachers:
        if is_external_teacher(entry):
            external = read_external_teacher(entry)
            channel = sum(1 for t in teachers if t.external is not None)
            teachers.append(Teacher(CachedTeacher(external.name, channel), None, entry, external))
            continue
        try:
            bundle = resolve_model(entry)
            check_teacher_grid(config, bundle)
            network = bundle.build_network()
        except BundleError as exc:
            raise ConfigError(f"config {config.source}: key 'teachers': {exc}") from None
        teachers.append(Teacher(network.eval(), bundle, entry))
    return teachers
