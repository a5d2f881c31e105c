"""Dataset index: check every case once and fix a held-out test set and K folds in a JSON file.

``prepare_index`` indexes a data source (multi-site folder, Decathlon folder or
``.csv``; see :func:`ProstateKDLib.datasets.index_cases`), reads and checks every
case (readable, image and label on the same grid, labels 0/1/2) and writes
the index; ``load_index`` reads it back as ``(train, val, test)`` case lists.

Split algorithm (reproducible: it depends only on the case ids, their sites,
the options and the seed; sites are taken in sorted order and each site's
cases sorted by case id before shuffling):

1. Test set, per site: shuffle with ``numpy.random.default_rng([seed,
   crc32(site), 1])`` and take the first ``min(round(n * test_fraction), n - 1)``
   cases (halves round up; every site keeps a development case). When that
   gives no test case at all while ``test_fraction > 0`` and the first largest
   site has two or more cases, it gives one.
2. Folds, on the remaining development cases. ``folds == 1``: one train/val
   split by :func:`ProstateKDLib.datasets.split_cases` with ``val_fraction``
   (the trainer's own per-site split). ``folds = K >= 2``: each site's cases are
   shuffled with ``default_rng([seed, crc32(site), 2])`` and dealt round-robin
   into K parts, the deal continuing where the previous site stopped, so parts
   differ in size by at most one and every site with K or more development
   cases is in every part; fold k validates on part k and trains on the rest.
   ``folds = "by-site"``: leave one site out: fold k validates on the
   development cases of the k-th site (sorted) and trains on the other sites'.

Each case keeps its metadata from a ``cases.csv`` in the data root (a ``case``
column; ``site`` when case names repeat across sites): every other column, for
example PROMISE12's ``spacing_source``, lands under the case's ``metadata``.
A relative data path is stored relative to the index's folder, so a committed
index keeps working in any checkout with the data beside it.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ProstateKDLib.datasets import CaseRecord, check_case, index_cases, split_cases
from ProstateKDLib.errors import DataError, OutputError

INDEX_FORMAT = "prostatekd-dataset-index"
INDEX_VERSION = 1
SPLITS = ("train", "val", "test", "all")
_TEST_STREAM, _FOLD_STREAM = 1, 2
#: Written into every index as it was first worded (``ProstateKDLib.dataset`` is now ``ProstateKDLib.datasets``),
#: so indexes stay byte-identical.
SPLIT_ALGORITHM = (
    "test: per site, shuffle with default_rng([seed, crc32(site), 1]) and take min(round(n*test_fraction), n-1); "
    "folds=1: ProstateKDLib.dataset.split_cases(dev, val_fraction, seed); folds=K>=2: per site, shuffle with "
    "default_rng([seed, crc32(site), 2]) and deal round-robin into K parts continuing across sites (sorted)"
)


class BadCaseError(DataError):
    """A case failed the check of :func:`prepare_index` (message from :mod:`ProstateKDLib.datasets`)."""

    def __init__(self, message: str, case_id: str) -> None:
        super().__init__(message)
        self.case_id = case_id


def detect_layout(source: str | os.PathLike) -> str:
    """``"csv"``, ``"nnunet"`` / ``"msd"`` (folder with a v2 / Decathlon ``dataset.json``) or ``"multisite"``."""
    path = Path(source).expanduser()
    if str(source).lower().endswith(".csv"):
        return "csv"
    if not (path / "dataset.json").is_file():
        return "multisite"
    from ProstateKDLib.datasets.nnunet import is_nnunet_v2, read_descriptor

    return "nnunet" if is_nnunet_v2(read_descriptor(path)) else "msd"


def _by_site(cases: Sequence[CaseRecord]) -> dict[str, list[CaseRecord]]:
    groups: dict[str, list[CaseRecord]] = {}
    for case in sorted(cases, key=lambda c: c.case_id):
        groups.setdefault(case.site, []).append(case)
    return {site: groups[site] for site in sorted(groups)}


def _shuffled(items: list[CaseRecord], seed: int, site: str, stream: int) -> list[CaseRecord]:
    rng = np.random.default_rng([seed, zlib.crc32(site.encode()), stream])
    return [items[i] for i in rng.permutation(len(items))]


def split_test(
    cases: Sequence[CaseRecord], test_fraction: float, seed: int
) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """``(development, test)``, stratified per site (step 1 of the module docstring); both sorted."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    groups = _by_site(cases)
    counts = {site: min(math.floor(len(items) * test_fraction + 0.5), len(items) - 1) for site, items in groups.items()}
    if test_fraction > 0 and groups and sum(counts.values()) == 0:
        largest = max(groups, key=lambda s: len(groups[s]))  # first of the largest sites
        if len(groups[largest]) >= 2:
            counts[largest] = 1
    dev: list[CaseRecord] = []
    test: list[CaseRecord] = []
    for site, items in groups.items():
        order = _shuffled(items, seed, site, _TEST_STREAM)
        test += order[: counts[site]]
        dev += order[counts[site]:]
    return sorted(dev, key=lambda c: c.case_id), sorted(test, key=lambda c: c.case_id)


BY_SITE = "by-site"


def make_folds(
    cases: Sequence[CaseRecord], folds: int | str, seed: int, val_fraction: float = 0.2
) -> list[tuple[list[CaseRecord], list[CaseRecord]]]:
    """``[(train, val)]`` for each fold, stratified per site (step 2 of the module docstring).

    Raises:
        DataError: ``cannot make <K> folds from <n> development cases``; ``--folds by-site
            needs cases of 2 or more sites``.
    """
    if folds == BY_SITE:
        groups = _by_site(cases)
        if len(groups) < 2:
            raise DataError(f"--folds {BY_SITE} needs cases of 2 or more sites, found {', '.join(groups) or 'none'}")
        return [([c for c in cases if c.site != site], list(items)) for site, items in groups.items()]
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds must be an int >= 1, got {folds!r}")
    if folds == 1:
        return [split_cases(cases, val_fraction, seed)]
    if len(cases) < folds:
        raise DataError(f"cannot make {folds} folds from {len(cases)} development cases")
    parts: list[list[CaseRecord]] = [[] for _ in range(folds)]
    dealt = 0
    for site, items in _by_site(cases).items():
        for case in _shuffled(items, seed, site, _FOLD_STREAM):
            parts[dealt % folds].append(case)
            dealt += 1
    result = []
    for k in range(folds):
        train = [c for j, part in enumerate(parts) if j != k for c in part]
        result.append((sorted(train, key=lambda c: c.case_id), sorted(parts[k], key=lambda c: c.case_id)))
    return result


CASE_METADATA_CSV = "cases.csv"


def case_metadata(root: Path, cases: Sequence[CaseRecord]) -> dict[str, dict[str, str]]:
    """Per case id, the extra columns of ``root/cases.csv`` (empty when there is none).

    Rows are matched by ``case`` (the file stem, e.g. ``Case07``) and, when the
    file has a ``site`` column, by site too.
    """
    import csv

    table = root / CASE_METADATA_CSV
    if not table.is_file():
        return {}
    try:
        with table.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    keyed = {}
    for row in rows:
        if row.get("case"):
            keyed[(row.get("site") or "", row["case"])] = {k: v for k, v in row.items() if k not in ("case", "site") and k}
    out = {}
    for case in cases:
        stem = case.case_id.rsplit("/", 1)[-1]
        found = keyed.get((case.site, stem)) or keyed.get(("", stem))
        if found:
            out[case.case_id] = found
    return out


def _check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    """The index path, checked before any work."""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise OutputError("index path is empty")
    path = Path(out).expanduser()
    if path.suffix.lower() != ".json":
        raise OutputError(f"dataset index must be a .json file, got {out}")
    if path.is_dir():
        raise OutputError(f"index path is a folder: {out}; give a file name such as index.json")
    if not path.parent.is_dir():
        raise OutputError(f"output folder does not exist: {path.parent}")
    if path.exists() and not overwrite:
        raise OutputError(f"{out} exists (use --overwrite to replace it)")
    return path


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _label_names(data: Path, layout: str, keep_zones: bool) -> dict[str, str]:
    if not keep_zones:
        return {"1": "gland"}
    if layout == "msd":
        from ProstateKDLib.datasets import msd_label_names, read_msd_descriptor

        names = msd_label_names(read_msd_descriptor(data))
        if names:
            return {str(k): v for k, v in names.items()}
    if layout == "nnunet":
        from ProstateKDLib.datasets.nnunet import nnunet_label_names, read_descriptor

        names = nnunet_label_names(read_descriptor(data))
        if names:
            return {str(k): v for k, v in sorted(names.items())}
    return {"1": "zone 1", "2": "zone 2"}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        temporary.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def prepare_index(
    data: str | os.PathLike,
    out: str | os.PathLike,
    folds: int | str = 5,
    val_fraction: float | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    channel: int | None = None,
    keep_zones: bool = False,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Index and check every case of ``data``, split it, write the index to ``out``; return the index.

    Args:
        data: multi-site folder, Decathlon task folder or ``.csv`` case list.
        out: ``.json`` file to write (atomically).
        folds: number of train/val folds (1: a single split with ``val_fraction``), or
            ``"by-site"`` (leave one site out).
        val_fraction: validation fraction per site, only with ``folds == 1`` (default 0.2).
        test_fraction: held-out test fraction per site, in [0, 1).
        seed: seed of both splits.
        channel: image channel (Decathlon default: T2).
        keep_zones: label the index ``zones`` (values 1, 2 kept) instead of ``gland``.
        skip_bad: list cases that fail the check under ``skipped`` instead of raising.
        overwrite: replace an existing ``out``.
        progress: show a tqdm bar on stderr while checking.

    Raises:
        BadCaseError: a case fails the check (a ``DataError`` whose message names the case,
            such as ``case RUNMC/Case01: label values must be 0, 1 or 2, found 0, 1, 5``).
        DataError: indexing errors of ``index_cases``; ``no usable cases in <data>: every case
            failed the check``; ``cannot make <K> folds from <n> development cases``.
        OutputError: ``<out> exists (use --overwrite to replace it)``, ``dataset index must be a
            .json file, got <out>``, ``output folder does not exist: <folder>``.
        ValueError: an argument out of range.
    """
    from tqdm.auto import tqdm

    if folds != BY_SITE and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 1):
        raise ValueError(f"folds must be an int >= 1 or {BY_SITE!r}, got {folds!r}")
    if val_fraction is not None and folds != 1:
        raise ValueError(f"val_fraction applies only with folds=1 (with {folds} folds each fold validates on 1/{folds})")
    val_fraction = 0.2 if val_fraction is None else float(val_fraction)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    path = _check_out(out, overwrite)

    source = Path(data).expanduser()
    layout = detect_layout(source)
    root = (source.parent if layout == "csv" else source).resolve()
    records = index_cases(source, channel=channel)
    checked: list[tuple[CaseRecord, dict[str, Any]]] = []
    skipped: list[dict[str, str]] = []
    notes: list[str] = []
    for record in tqdm(records, desc="check cases", unit="case", file=sys.stderr, disable=not progress):
        try:
            info = check_case(record)
        except DataError as exc:
            if not skip_bad:
                raise BadCaseError(str(exc), record.case_id) from None
            skipped.append({"case_id": record.case_id, "error": str(exc)})
            continue
        if info["gland_ml"] == 0:
            notes.append(f"case {record.case_id}: label is empty (no gland)")
        checked.append((record, info))
    if not checked:
        raise DataError(f"no usable cases in {data}: every case failed the check")

    cases = [record for record, _ in checked]
    metadata = case_metadata(root, cases)
    dev, test = split_test(cases, test_fraction, seed)
    fold_list = make_folds(dev, folds, seed, val_fraction)
    groups_dev, groups_test = _by_site(dev), _by_site(test)
    sites = {
        site: {"cases": len(items), "test": len(groups_test.get(site, [])), "development": len(groups_dev.get(site, []))}
        for site, items in _by_site(cases).items()
    }
    for site, counts in sites.items():
        if test_fraction > 0 and counts["test"] == 0:
            notes.append(f"site {site} has no test case ({counts['cases']} cases)")
        missing = sum(1 for _, val in fold_list if folds != 1 and not any(c.site == site for c in val))
        if missing and folds != BY_SITE:
            notes.append(f"site {site} has {counts['development']} development cases for {folds} folds: "
                         f"it is missing from the validation set of {missing} folds")
    index = {
        "format": INDEX_FORMAT,
        "format_version": INDEX_VERSION,
        "source": str(source.resolve()),
        "layout": layout,
        "root": root.as_posix() if source.is_absolute() else Path(os.path.relpath(root, path.resolve().parent)).as_posix(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "options": {"folds": folds, "val_fraction": val_fraction if folds == 1 else None,
                    "test_fraction": test_fraction, "channel": channel, "keep_zones": keep_zones},
        "label_mode": "zones" if keep_zones else "gland",
        "labels": _label_names(source, layout, keep_zones),
        "split_algorithm": SPLIT_ALGORITHM,
        "sites": sites,
        "cases": [
            {"case_id": r.case_id, "site": r.site, "image": _relative(r.image, root),
             "label": _relative(r.label, root), "channel": r.channel, **info,
             **({"metadata": metadata[r.case_id]} if r.case_id in metadata else {})}
            for r, info in checked
        ],
        "skipped": skipped,
        "splits": {
            "test": [c.case_id for c in test],
            "folds": [{"train": [c.case_id for c in tr], "val": [c.case_id for c in va]} for tr, va in fold_list],
        },
        "notes": notes,
    }
    _write_json(path, index)
    return index


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed, validated index at ``path``.

    Raises:
        DataError: ``dataset index not found: <path>``; ``dataset index <path> is not valid JSON: <reason>``;
            ``<path> is not a ProstateKD dataset index (write one with 'prostatekd prepare')``;
            ``dataset index <path> has format_version <v>; this version of ProstateKD reads 1``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"dataset index not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"dataset index {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or "splits" not in data or "cases" not in data:
        raise DataError(f"{path} is not a ProstateKD dataset index (write one with 'prostatekd prepare')")
    version = data.get("format_version")
    if not isinstance(version, int) or version > INDEX_VERSION:
        raise DataError(f"dataset index {path} has format_version {version}; this version of ProstateKD reads {INDEX_VERSION}")
    return data


def index_split(
    path: str | os.PathLike, split: str = "test", fold: int = 0, root: str | os.PathLike | None = None
) -> list[CaseRecord]:
    """Cases of one split of the index at ``path``: ``train``/``val`` of ``fold``, ``test`` or ``all``.

    Relative case paths are resolved against ``root`` (default: the index's
    ``root``, or the index's folder for a relative root), so moved data only needs ``root``.

    Raises:
        DataError: messages of :func:`read_index`, or ``dataset index <path>: fold <k> out of range
            (it has <K> folds: 0-<K-1>)``; ``dataset index <path>: split lists unknown case <id>``;
            ``case <id>: image file not found: <file>`` (or ``label file``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(fold, bool) or not isinstance(fold, int):
        raise TypeError(f"fold must be an int, got {fold!r}")
    index = read_index(path)
    path = Path(path).expanduser()
    folds = index["splits"].get("folds") or []
    if split in ("train", "val") and not 0 <= fold < len(folds):
        raise DataError(f"dataset index {path}: fold {fold} out of range (it has {len(folds)} folds: 0-{len(folds) - 1})")
    base = Path(root).expanduser() if root is not None else Path(index.get("root") or ".")
    if not base.is_absolute():
        base = path.parent / base
    records: dict[str, CaseRecord] = {}
    for item in index["cases"]:
        image, label = (Path(item[k]) for k in ("image", "label"))
        records[item["case_id"]] = CaseRecord(
            item["case_id"], item["site"], image if image.is_absolute() else base / image,
            label if label.is_absolute() else base / label, item.get("channel"),
        )
    ids = list(records) if split == "all" else index["splits"]["test"] if split == "test" else folds[fold][split]
    result = []
    for case_id in ids:
        if case_id not in records:
            raise DataError(f"dataset index {path}: split lists unknown case {case_id}")
        record = records[case_id]
        for kind, file in (("image", record.image), ("label", record.label)):
            if not file.is_file():
                raise DataError(f"case {case_id}: {kind} file not found: {file}")
        result.append(record)
    return sorted(result, key=lambda r: r.case_id)


def load_index(
    path: str | os.PathLike, fold: int = 0, root: str | os.PathLike | None = None
) -> tuple[list[CaseRecord], list[CaseRecord], list[CaseRecord]]:
    """``(train, val, test)`` case lists of ``fold`` of the index at ``path`` (see :func:`index_split`)."""
    return tuple(index_split(path, split, fold, root) for split in ("train", "val", "test"))  # type: ignore[return-value]


def format_index_summary(index: dict[str, Any], out: str | os.PathLike) -> str:
    """A few lines: cases per site, test size, folds, skipped cases and notes."""
    folds = index["splits"]["folds"]
    sites = ", ".join(f"{s} {c['cases']} ({c['test']} test)" for s, c in index["sites"].items())
    val_sizes = "/".join(str(len(f["val"])) for f in folds)
    lines = [
        f"index:   {out} ({index['layout']} layout, {len(index['cases'])} cases, seed {index['seed']})",
        f"sites:   {sites}",
        f"test:    {len(index['splits']['test'])} cases",
        f"folds:   {len(folds)} (validation cases per fold: {val_sizes})",
    ]
    if index["skipped"]:
        lines.append(f"skipped: {len(index['skipped'])} bad cases: {', '.join(s['case_id'] for s in index['skipped'])}")
    lines += [f"note:    {note}" for note in index["notes"]]
    return "\n".join(lines)
