"""``prostatekd teach-cache``: run a teacher bundle once per case and keep its probability maps.

Running a large teacher at every training step is unaffordable on a CPU. This writes, for
every case of a dataset index (and any unlabelled images), the teacher's foreground
probability on the case image's own grid, in the external-teacher layout of
:mod:`training.external_teacher`; a config then lists the folder as a teacher and distillers
that need only teacher outputs (``logit_kd``; ``seed_kd`` / ``multi_teacher_*`` with weight
``feature: 0``) read the maps instead of running the network. Features are not cached:
methods that match features run the network teacher.

Maps that exist are kept (rerun to resume an interrupted cache); each map is written to a
temporary file and renamed. A folder cached from another teacher is refused.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from ProstateKDLib.errors import ConfigError

from .external_teacher import SCALE_UINT8, is_external_teacher, read_external_teacher, write_teacher_json

SPLIT_CHOICES = ("dev", "all")


def cache_cases(index: str | os.PathLike, split: str = "dev", unlabelled: str | os.PathLike | None = None) -> list[Any]:
    """Cases to cache: ``dev`` (train + validation of every fold) or ``all`` (also the test split), plus images.

    Raises:
        DataError: unreadable index or folder.
    """
    from ProstateKDLib.datasets import index_images

    from .prepare import index_split

    if split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    everything = index_split(index, "all")
    test = {c.case_id for c in index_split(index, "test")}
    cases = [c for c in everything if split == "all" or c.case_id not in test]
    if unlabelled is not None:
        cases += index_images(unlabelled)
    return cases


def teacher_record(bundle: Any) -> dict[str, Any]:
    """``teacher.json`` fields of a bundle: name, version, licence, training data, how the maps were made."""
    meta = bundle.meta
    prov = dict(meta.provenance)
    return {
        "name": meta.name,
        "version": meta.version,
        "license": meta.license,
        "training_data": prov.get("training_data", "not stated"),
        "network": meta.network_name,
        "bundle": str(bundle.path),
        "maps": "foreground probability (softmax) on each case image's own grid",
        "scale": SCALE_UINT8,
        "made_by": "prostatekd teach-cache",
    }


def write_map(probability: Any, target: Path) -> None:
    """Atomically write a float [0, 1] SimpleITK image as uint8 x 255 NIfTI at ``target``."""
    import numpy as np
    import SimpleITK as sitk

    values = sitk.GetArrayFromImage(probability)
    out = sitk.GetImageFromArray(np.clip(np.rint(values * SCALE_UINT8), 0, SCALE_UINT8).astype(np.uint8))
    out.CopyInformation(probability)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name[:-7]}.tmp-{os.getpid()}.nii.gz")
    try:
        sitk.WriteImage(out, str(tmp), True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def teach_cache(
    teacher: str | os.PathLike, index: str | os.PathLike, out: str | os.PathLike, split: str = "dev",
    unlabelled: str | os.PathLike | None = None, threads: int | None = None, progress: bool = True,
) -> list[dict[str, Any]]:
    """Cache ``teacher``'s probability maps for the cases of ``index`` into ``out``; one row per case.

    Raises:
        ConfigError: ``out`` holds another teacher's cache.
        BundleError: the teacher cannot be loaded.
        DataError: unreadable index, folder or image.
    """
    from ProstateKDLib.datasets import read_image
    from ProstateKDLib.inference import Segmenter

    folder = Path(out).expanduser()
    cases = cache_cases(index, split, unlabelled)  # data problems first: nothing written
    segmenter = Segmenter(teacher, num_threads=threads, largest_component=False)
    record = teacher_record(segmenter.bundle)
    if is_external_teacher(folder):
        have = read_external_teacher(folder).meta
        if (have.get("name"), have.get("version"), have.get("bundle")) != (record["name"], record["version"], record["bundle"]):
            raise ConfigError(f"teach-cache: {folder} holds maps of teacher {have.get('name')!r} {have.get('version')}; "
                              "choose another --out")
    elif folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"teach-cache: {folder} exists and is not a teacher cache; choose an empty or new --out")
    write_teacher_json(folder, {**record, "index": str(index), "split": split,
                                **({"unlabelled": str(unlabelled)} if unlabelled else {})})
    rows = []
    tty = progress and sys.stderr.isatty()
    for number, case in enumerate(cases, 1):
        target = folder / f"{case.case_id}.nii.gz"
        if target.is_file():
            rows.append({"case_id": case.case_id, "seconds": None, "skipped": True})
            continue
        start = time.perf_counter()
        result = segmenter.segment(read_image(case), return_probabilities=True)
        write_map(result.probabilities, target)
        seconds = time.perf_counter() - start
        rows.append({"case_id": case.case_id, "seconds": round(seconds, 2), "volume_ml": round(result.volume_ml, 2)})
        if progress:
            line = f"[{number}/{len(cases)}] {case.case_id}: {seconds:.1f} s, {result.volume_ml:.1f} ml"
            print(line, file=sys.stderr if tty else sys.stdout, flush=True)
    return rows

