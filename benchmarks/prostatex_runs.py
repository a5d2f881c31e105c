"""Every model end to end on the real ProstateX DICOM T2 series (no masks): gland volume, checks, overlays.

    .venv/bin/python benchmarks/prostatex_runs.py --model prostatekd-student --model prostatekd-teacher \
        --peer-python benchmarks/.venv-peer/bin/python --out benchmarks/reports/2026-12-02/real_prostatex

For each axial T2 series under ``../shared/data/dicom`` (found with ``ProstateKDLib.dicom_series``)
each model segments the series through :class:`~ProstateKDLib.inference.Segmenter` (the DICOM
reader, oblique geometry, the output checks), and its gland volume, warnings and in-process time
are recorded; one overlay PNG per series shows every model's contour. With ``--peer-python`` the
peer TAPS runs too (the series written as NIfTI for it, its probabilities thresholded at its own
0.55). There are no expert masks: volumes and checks are plausibility only, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DICOM = ROOT.parent / "shared" / "data" / "dicom"
TAPS_THRESHOLD = 0.55


def t2_series(root: Path) -> list[tuple[str, object]]:
    """``(name, DicomSeries)`` of every axial T2 series below ``root`` (one name per patient and series)."""
    from ProstateKDLib.dicom_series import find_series

    found = []
    for patient in sorted(p for p in root.iterdir() if p.is_dir()):
        for series in find_series(patient):
            if series.axial_t2:
                found.append((f"{patient.name}_s{series.number}", series))
    return found


def peer_masks(python: str, images: dict[str, object], work: Path) -> dict[str, object]:
    """TAPS masks (probability > 0.55) of each image, run from the peer's environment."""
    import SimpleITK as sitk

    root = work / "nifti"
    (root / "ProstateX").mkdir(parents=True)
    for name, image in images.items():
        sitk.WriteImage(image, str(root / "ProstateX" / f"{name}.nii.gz"))
    subprocess.run([python, str(ROOT / "benchmarks/peer/taps_probabilities.py"), "--root", str(root),
                    "--out", str(work / "taps")], check=True, stdout=subprocess.DEVNULL)
    masks = {}
    for name, image in images.items():
        prob = sitk.ReadImage(str(work / "taps" / "ProstateX" / f"{name}.nii.gz"))
        mask = sitk.Cast(sitk.Cast(prob, sitk.sitkFloat32) > TAPS_THRESHOLD * 255, sitk.sitkUInt8)
        mask.CopyInformation(image)
        masks[name] = mask
    return masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="bundle name or path (repeat)")
    parser.add_argument("--peer-python", default=None, help="the peer venv's python (runs TAPS too)")
    parser.add_argument("--dicom", default=str(DICOM))
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import numpy as np
    import SimpleITK as sitk

    from benchmarks.real.overlay import overlay_png
    from ProstateKDLib.image_io import read_volume
    from ProstateKDLib.inference import Segmenter

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    series = t2_series(Path(args.dicom))
    images = {name: read_volume(s.files[0].parent, series=s.uid) for name, s in series}
    segmenters = [Segmenter(m, num_threads=args.threads, device="cpu") for m in args.model]
    rows, masks = [], {name: {} for name in images}
    for segmenter in segmenters:
        label = f"{segmenter.bundle.meta.name} {segmenter.bundle.meta.version}"
        for name, image in images.items():
            start = time.perf_counter()
            result = segmenter.segment(image)
            rows.append({"model": label, "series": name, "volume_ml": round(result.volume_ml, 1),
                         "warnings": list(result.warnings), "seconds": round(time.perf_counter() - start, 2)})
            masks[name][f"{label} ({result.volume_ml:.0f} ml)"] = result.mask
    if args.peer_python:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            taps = peer_masks(args.peer_python, images, Path(tmp))
            seconds = (time.perf_counter() - start) / max(1, len(images))
        for name, mask in taps.items():
            spacing = np.prod(mask.GetSpacing()) / 1000.0
            ml = float(sitk.GetArrayViewFromImage(mask).sum()) * spacing
            rows.append({"model": "TAPS (lavlab-taps 1.1.2)", "series": name, "volume_ml": round(ml, 1),
                         "warnings": [], "seconds": round(seconds, 1)})
            masks[name][f"TAPS ({ml:.0f} ml)"] = mask
    for (name, s), image in zip(series, images.values()):
        overlay_png(image, masks[name], out / f"overlay_{name}.png",
                    f"ProstateX {name}: {s.label()} (no expert mask)")
    lines = ["| model | series | gland ml | warnings | s |", "|---|---|---:|---|---:|"]
    lines += [f"| {r['model']} | {r['series']} | {r['volume_ml']} | {'; '.join(r['warnings']) or 'none'} | {r['seconds']} |"
              for r in rows]
    text = ("# ProstateX DICOM T2 series end to end (no masks: plausibility only)\n\n" + "\n".join(lines)
            + "\n\nSeries: " + "; ".join(f"{n}: {s.label()}" for n, s in series) + "\n")
    (out / "prostatex.md").write_text(text, encoding="utf-8")
    (out / "prostatex.json").write_text(json.dumps({"series": {n: s.summary() for n, s in series}, "runs": rows},
                                                   indent=1, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
