"""``--set key=value``: override any config key from the command line of a training command.

``prostatekd train cfg.yaml --run-dir r --set train.learning_rate=3e-4 --set data.sites=[RUNMC,HK]``.
Values are YAML (``3``, ``0.5``, ``true``, ``[1, 2]``, ``null``), numbers also
in the forms YAML 1.1 reads as text (``3e-4``). The overrides apply to every
:func:`training.config.load_config` call while the command runs, after the
command's own options (``--epochs`` ...), and are validated like the file:
an unknown key fails with the config's ``unknown key`` message.
"""

from __future__ import annotations

import contextlib
import re
from contextvars import ContextVar
from typing import Any, Iterator, Mapping, Sequence

from ProstateKDLib.errors import UsageError

__all__ = ["active_overrides", "parse_set_options", "using_overrides"]

_ACTIVE: ContextVar[Mapping[str, Any]] = ContextVar("prostatekd_config_overrides", default={})
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def parse_set_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``["train.learning_rate=3e-4", ...]`` -> ``{"train.learning_rate": 0.0003, ...}`` (later items win).

    Raises:
        UsageError: ``--set needs KEY=VALUE, got '<item>'``,
            ``--set key '<key>' is not a dotted config key``,
            ``--set <key>: value is not valid YAML: <reason>``.
    """
    import yaml

    overrides: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set needs KEY=VALUE, got {item!r}")
        if not _KEY.match(key):
            raise UsageError(f"--set key {key!r} is not a dotted config key such as train.epochs")
        text = text.strip()
        if _NUMBER.match(text):
            overrides[key] = float(text)
            continue
        try:
            overrides[key] = yaml.safe_load(text) if text else None
        except yaml.YAMLError as exc:
            reason = str(exc).strip().splitlines()[0]
            raise UsageError(f"--set {key}: value is not valid YAML: {reason}") from None
    return overrides


def active_overrides() -> Mapping[str, Any]:
    """The ``--set`` overrides of the running command (empty outside one)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using_overrides(overrides: Mapping[str, Any]) -> Iterator[None]:
    """Make ``overrides`` apply to every ``load_config`` call inside the block."""
    token = _ACTIVE.set(dict(overrides))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
