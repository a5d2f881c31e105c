"""Which cases a run trains and validates on: the config's ``data`` section applied to a data set.

Without a dataset index: index ``data.root`` → keep ``data.sites`` →
``data.cases`` (round-robin over sites) → ``data.subset`` (one of K random
disjoint subsets) → train/val split per site (``data.val_fraction``, ``data.seed``).

With ``data.index`` (written by ``prostatekd prepare``): the training cases of
fold ``data.fold`` → the same filters; validation on that fold's validation
cases (of the kept sites). The index's test cases are never used, and a case
that is both in the test split and in a training or validation list (a
hand-edited or mismatched index) is refused before anything is written.
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
    from ProstateKDLib.datasets import limit_cases

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


def check_no_test_leak(used: Sequence[Any], test: Sequence[Any], index: str) -> None:
    """DataError if a training/validation case is a test case of ``index`` (same id or same image file)."""
    test_ids = {c.case_id for c in test}
    test_files = {str(c.image.resolve()) for c in test}
    for case in used:
        if case.case_id in test_ids or str(case.image.resolve()) in test_files:
            raise DataError(
                f"case {case.case_id} is in the test split of {index}; refusing to train or validate on it "
                "(the index's splits overlap: rewrite it with 'prostatekd prepare')"
            )


def index_cases_of(config: Config) -> tuple[list[Any], list[Any]]:
    """``(train, val)`` cases of fold ``data.fold`` of ``data.index`` (root: ``data.root``), leak-checked."""
    from .prepare import index_split

    data = config.data
    assert data.index is not None
    train, val, test = (index_split(data.index, split, data.fold, data.root) for split in ("train", "val", "test"))
    check_no_test_leak(train + val, test, data.index)
    return train, val


def development_cases(config: Config) -> list[Any]:
    """Every case a run of ``config`` may train or validate on, before ``data.sites``/``cases``/``subset``."""
    from ProstateKDLib.datasets import index_cases

    if config.data.index is not None:
        train, val = index_cases_of(config)
        return train + val
    return index_cases(config.data.root)


def select_cases(config: Config) -> tuple[list[Any], list[Any]]:
    """``(train, val)`` case records of a config (see the module docstring).

    Raises:
        DataError: unreadable data folder, missing site, or no training case.
    """
    from dataclasses import replace

    from ProstateKDLib.datasets import index_cases, split_cases

    if config.data.index is not None:
        train, val = index_cases_of(config)
        train = filter_cases(train, config.data)
        val = [c for c in val if config.data.sites is None or c.site in config.data.sites]
    else:
        cases = filter_cases(index_cases(config.data.root), config.data)
        train, val = split_cases(cases, config.data.val_fraction, config.data.seed)
    if config.data.channels:  # multi-channel input (e.g. T2 + ADC for a cross-modality teacher)
        train = [replace(c, channels=tuple(config.data.channels)) for c in train]
        val = [replace(c, channels=tuple(config.data.channels)) for c in val]
    if not train:
        raise DataError(f"no training cases in {config.data.root}")
    return train, val


def unlabelled_cases(config: Config) -> list[Any]:
    """The images of ``data.unlabelled`` (none when unset), refused when one is a test case of ``data.index``.

    Raises:
        DataError: unreadable folder, no image, or an image of the index's test split.
    """
    from ProstateKDLib.datasets import index_images

    if config.data.unlabelled is None:
        return []
    images = index_images(config.data.unlabelled)
    if config.data.index is not None:
        from .prepare import index_split

        check_no_test_leak(images, index_split(config.data.index, "test", config.data.fold, config.data.root),
                           config.data.index)
    return images


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
