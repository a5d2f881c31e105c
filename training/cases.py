"""Which cases a run trains and validates on: the config's ``data`` section applied to a data set.

Order: index ``data.root`` → keep ``data.sites`` → ``data.cases`` (round-robin
over sites) → ``data.subset`` (one of K random disjoint subsets) → train/val
split per site (``data.val_fraction``, ``data.seed``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ProstateKDLib.errors import DataError

from .config import Config, DataConfig


def random_subset(cases: Sequence[Any], index: int, count: int, seed: int) -> list[Any]:
    """The ``index``-th of ``count`` disjoint random subsets (sorted by case id).

    Cases are shuffled with ``default_rng([seed, count])`` and dealt out in turn,
    so the subsets of one ``(seed, count)`` partition the cases and differ in
    size by at most one.

    Raises:
        ValueError: ``index`` not in ``[0, count)``.
    """
    if not 0 <= index < count:
        raise ValueError(f"subset index must be in [0, {count}), got {index}")
    ordered = sorted(cases, key=lambda c: c.case_id)
    order = np.random.default_rng([seed, count]).permutation(len(ordered))
    return sorted((ordered[i] for i in order[index::count]), key=lambda c: c.case_id)


def filter_cases(cases: Sequence[Any], data: DataConfig) -> list[Any]:
    """Apply ``data.sites``, ``data.cases`` and ``data.subset`` to indexed cases.

    Raises:
        DataError: a listed site has no case, or nothing is left.
    """
    from ProstateKDLib.dataset import limit_cases

    cases = list(cases)
    if data.sites is not None:
        present = sorted({c.site for c in cases})
        missing = [s for s in data.sites if s not in present]
        if missing:
            raise DataError(f"no cases of site {missing[0]!r} in {data.root} (sites: {', '.join(present)})")
        cases = [c for c in cases if c.site in data.sites]
    cases = limit_cases(cases, data.cases)
    if data.subset is not None:
        cases = random_subset(cases, data.subset.index, data.subset.count, data.seed)
    if not cases:
        raise DataError(f"no cases left in {data.root} after data.sites / data.cases / data.subset")
    return cases


def select_cases(config: Config) -> tuple[list[Any], list[Any]]:
    """``(train, val)`` case records of a config (see the module docstring).

    Raises:
        DataError: unreadable data folder, missing site, or no training case.
    """
    from ProstateKDLib.dataset import index_cases, split_cases

    cases = filter_cases(index_cases(config.data.root), config.data)
    if config.data.channels:  # multi-channel input (e.g. T2 + ADC for a cross-modality teacher)
        from dataclasses import replace

        cases = [replace(c, channels=tuple(config.data.channels)) for c in cases]
    train, val = split_cases(cases, config.data.val_fraction, config.data.seed)
    if not train:
        raise DataError(f"no training cases in {config.data.root}")
    return train, val


def describe_subset(data: DataConfig) -> str:
    """One line: which part of the data a run was trained on (for provenance)."""
    parts = []
    if data.sites is not None:
        parts.append(f"site{'s' if len(data.sites) > 1 else ''} {', '.join(data.sites)}")
    if data.subset is not None:
        parts.append(f"random subset {data.subset.index + 1} of {data.subset.count} (seed {data.seed})")
    if data.cases is not None:
        parts.append(f"first {data.cases} cases")
    return "; ".join(parts) if parts else "all training cases"
