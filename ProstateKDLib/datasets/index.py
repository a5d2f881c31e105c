"""Index any supported data source, pick and split its cases.

:func:`index_cases` reads a ``.csv`` case list (:mod:`.csv_list`), a Medical
Segmentation Decathlon folder (:mod:`.msd`) or a multi-site folder
(:mod:`.multisite`, plus the Slicer-saved cases of :mod:`.saved`).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .csv_list import read_case_csv
from .records import CaseRecord


def index_cases(source: str | os.PathLike, channel: int | None = None) -> list[CaseRecord]:
    """Cases of a ``.csv`` case list, a Decathlon folder or a multi-site folder.

    * ``*.csv``: :func:`read_case_csv`;
    * a folder with ``dataset.json``: an nnU-Net v2 raw dataset
      (:func:`~ProstateKDLib.datasets.nnunet.index_nnunet`, one file per channel) or the
      Medical Segmentation Decathlon layout (:func:`~ProstateKDLib.datasets.msd.index_msd`);
      ``channel`` defaults to the one named T2;
    * any other folder: :func:`index_multisite`, plus the cases listed in its
      ``dataset_index.csv`` (cases saved from Slicer) that the folder scan did
      not find (:func:`~ProstateKDLib.datasets.saved.index_multisite_root`).

    ``channel`` (when given) is set on every case.
    """
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or channel < 0):
        raise ValueError(f"channel must be a non-negative int or None, got {channel!r}")
    if str(source).lower().endswith(".csv"):
        records = read_case_csv(source)
    else:
        from .msd import MSD_DESCRIPTOR, index_msd

        if (Path(source).expanduser() / MSD_DESCRIPTOR).is_file():
            from .nnunet import index_nnunet, is_nnunet_v2, read_descriptor

            if is_nnunet_v2(read_descriptor(Path(source).expanduser())):
                return index_nnunet(source, channel=channel)
            return index_msd(source, channel=channel)
        from .saved import index_multisite_root

        records = index_multisite_root(source)
    if channel is not None:
        records = [replace(r, channel=channel) for r in records]
    return records


def limit_cases(cases: Sequence[CaseRecord], limit: int | None) -> list[CaseRecord]:
    """The first ``limit`` cases taken round-robin over sites (all when ``limit`` is None)."""
    if limit is None or limit >= len(cases):
        return list(cases)
    by_site: dict[str, list[CaseRecord]] = {}
    for case in cases:
        by_site.setdefault(case.site, []).append(case)
    chosen: list[CaseRecord] = []
    depth = 0
    while len(chosen) < limit:
        for site in sorted(by_site):
            if depth < len(by_site[site]) and len(chosen) < limit:
                chosen.append(by_site[site][depth])
        depth += 1
    return sorted(chosen, key=lambda c: c.case_id)


def split_cases(
    cases: Sequence[CaseRecord], val_fraction: float, seed: int
) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """Split into (train, val), stratified per site and reproducible for a seed.

    Each site gives ``round(n * val_fraction)`` validation cases but keeps at
    least one training case; when that gives no validation case at all while
    ``val_fraction > 0`` and there are two or more cases, the largest site gives one.
    Both lists are sorted by case id.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_site: dict[str, list[CaseRecord]] = {}
    for case in sorted(cases, key=lambda c: c.case_id):
        by_site.setdefault(case.site, []).append(case)
    shuffled: dict[str, list[CaseRecord]] = {}
    counts: dict[str, int] = {}
    for site, items in by_site.items():
        rng = np.random.default_rng([seed, zlib.crc32(site.encode())])
        shuffled[site] = [items[i] for i in rng.permutation(len(items))]
        counts[site] = min(int(np.floor(len(items) * val_fraction + 0.5)), len(items) - 1)
    if val_fraction > 0 and sum(counts.values()) == 0 and len(cases) >= 2:
        site = max(sorted(by_site), key=lambda s: len(by_site[s]))  # first of the largest sites
        counts[site] = 1
    val = [c for site, items in shuffled.items() for c in items[: counts[site]]]
    train = [c for site, items in shuffled.items() for c in items[counts[site]:]]
    return sorted(train, key=lambda c: c.case_id), sorted(val, key=lambda c: c.case_id)
