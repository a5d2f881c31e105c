#!/usr/bin/env python
"""Write TAPS's foreground probabilities for every image of a case folder: an external-teacher cache.

Runs inside the peer's own environment (``benchmarks/.venv-peer``, see
``benchmarks/setup_peer.sh``) and imports nothing from ProstateKD. For each image it runs
TAPS's own pipeline as ``taps.segment`` does (its preprocessing, its ONNX network in MONAI's
gaussian sliding window at overlap 0.5, its logit blur, its inversion to the image grid) and
stores ``sigmoid(logits)`` instead of the thresholded mask, so a student can be distilled from
the soft probabilities. TAPS itself is not changed; its post-threshold clean-up (largest
component, slice clean-up) is not applied to probabilities.

Output (the *external teacher folder* read by ``training/external_teacher.py``)::

    OUT/teacher.json            name, version, licence, scale, threshold, how it was made
    OUT/<SITE>/<Case>.nii.gz    uint8 probability x 255 on the case image's own grid
    OUT/times.csv               seconds per case (read + network + inversion + write)

Cases whose map exists are skipped (rerun to resume); each map is written to a temporary file
and renamed, so an interrupted run leaves no half-written map. One line per case on stdout.

    benchmarks/.venv-peer/bin/python benchmarks/peer/taps_probabilities.py \
        --root ../shared/data/promise12 --root ../shared/data/promise12_unlabelled --out CACHE
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

SCALE = 255  # stored value = round(probability * SCALE)
PAD_SHIFT = 20.0  # logits are inverted shifted by this much: outside TAPS's crop the probability is about 0


def images_of(root: Path) -> list[tuple[str, Path]]:
    """``(case_id, path)`` of every image under ``root/<SITE>/`` (masks ``*_segmentation`` excluded)."""
    out = []
    for path in sorted(root.glob("*/*.nii.gz")):
        if path.name.endswith("_segmentation.nii.gz"):
            continue
        out.append((f"{path.parent.name}/{path.name[: -len('.nii.gz')]}", path))
    return out


def invert(data: dict, preprocess, values):  # noqa: ANN001
    """``values`` (on TAPS's cropped grid) mapped back to the image grid by TAPS's own ``Invertd``."""
    from monai.transforms import Invertd

    data = dict(data)
    data["pred"] = values
    return Invertd(keys="pred", transform=preprocess, orig_keys="image", meta_keys="pred_meta_dict",
                   orig_meta_keys="image_meta_dict", nearest_interp=False, to_tensor=True)(data)["pred"]


def probabilities(image_path: Path, model, device: str):  # noqa: ANN001
    """TAPS's sigmoid probabilities on the image's grid and the image's affine (numpy).

    TAPS crops to the bright part of the image (``CropForegroundd``); inverting the crop pads
    the logits with 0, i.e. probability 0.5, which TAPS's 0.55 threshold hides but a soft
    teacher must not say. The logits are therefore inverted shifted by ``PAD_SHIFT`` and
    shifted back: outside the crop the probability is sigmoid(-PAD_SHIFT), about 0, inside it is
    exactly TAPS's (inversion is linear).
    """
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    import taps.inference as ti

    preprocess = ti.build_preprocessing()
    data = preprocess({"image": str(image_path)})
    image = data["image"].unsqueeze(0)
    with torch.inference_mode():
        logits = sliding_window_inference(image, roi_size=ti.ROI_SIZE, sw_batch_size=1, predictor=model,
                                          overlap=0.5, mode="gaussian")
    blurred = ti.gaussian_blur_logits(logits, sigma=ti.DEFAULT_SIGMA)[0]
    inverted = invert(data, preprocess, blurred + PAD_SHIFT)
    prob = torch.sigmoid(inverted[0] - PAD_SHIFT).cpu().numpy()
    return np.asarray(prob, dtype=np.float32), np.asarray(inverted.meta["affine"], dtype=np.float64)


def repair(image_path: Path, target: Path) -> None:
    """Rewrite a map made before ``PAD_SHIFT`` existed (0.5 outside TAPS's crop) as :func:`probabilities` would.

    With ``w`` the inverted all-ones image (1 inside the crop, 0 outside): shifted inversion
    gives ``logit + PAD_SHIFT * (w - 1)``, computed here from the stored map without the network.
    """
    import nibabel as nib
    import numpy as np
    import torch

    import taps.inference as ti

    preprocess = ti.build_preprocessing()
    data = preprocess({"image": str(image_path)})
    w = invert(data, preprocess, torch.ones_like(data["image"]))[0].cpu().numpy()
    stored = nib.load(target)
    p = np.clip(np.asarray(stored.dataobj, dtype=np.float32) / SCALE, 0.5 / SCALE, 1 - 0.5 / SCALE)
    logit = np.log(p) - np.log1p(-p) + PAD_SHIFT * (np.clip(w, 0.0, 1.0) - 1.0)
    fixed = np.where(w >= 1.0 - 1e-6, np.asarray(stored.dataobj, dtype=np.float32) / SCALE, 1 / (1 + np.exp(-logit)))
    write_map(fixed, stored.affine, target)


def write_map(prob, affine, target: Path) -> None:  # noqa: ANN001
    """Atomically write ``prob`` as uint8 x SCALE NIfTI at ``target``."""
    import nibabel as nib
    import numpy as np

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name[:-7]}.tmp-{os.getpid()}.nii.gz")
    values = np.clip(np.rint(prob * SCALE), 0, SCALE).astype(np.uint8)
    image = nib.Nifti1Image(values, affine)
    image.header.set_xyzt_units("mm")
    try:
        nib.save(image, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def describe(roots: list[Path]) -> dict:
    """``teacher.json``: what the maps are and where they come from."""
    import importlib.metadata as md

    import taps
    import taps.inference as ti

    meta = md.metadata("lavlab-taps")
    return {
        "format": "prostatekd-external-teacher",
        "format_version": 1,
        "name": "TAPS",
        "version": f"lavlab-taps {taps.__version__}",
        "license": meta.get("License-Expression") or meta.get("License") or "MIT",
        "training_data": "not stated by its authors",
        "network": "MONAI SegResNetDS(init_filters=32), ONNX, 19.9 M parameters",
        "maps": "foreground probability sigmoid(blurred logits) on each case image's own grid",
        "scale": SCALE,
        "threshold": ti.DEFAULT_PROBABILITY_THRESHOLD,
        "made_by": "benchmarks/peer/taps_probabilities.py (TAPS preprocessing, sliding window overlap 0.5, "
                   f"logit blur sigma {ti.DEFAULT_SIGMA}, Invertd to the image grid; outside TAPS's foreground crop "
                   "the probability is about 0, not the 0.5 of zero-padded logits)",
        "sources": [str(r) for r in roots],
        "layout": "<SITE>/<Case>.nii.gz, the case id of the index",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, action="append", required=True,
                        help="multi-site folder <SITE>/<Case>.nii.gz (repeat for several)")
    parser.add_argument("--out", type=Path, required=True, help="external teacher folder to write")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (a smoke run)")
    parser.add_argument("--reverse", action="store_true",
                        help="work from the last image backwards (a second process on the same folder)")
    parser.add_argument("--repair", action="store_true",
                        help="rewrite existing maps made before the crop-padding fix (no network; see repair())")
    args = parser.parse_args(argv)
    import torch

    import taps.inference as ti

    torch.set_num_threads(args.threads)
    cases = [c for root in args.root for c in images_of(root)]
    if not cases:
        print(f"error: no images <SITE>/<Case>.nii.gz under {', '.join(map(str, args.root))}", file=sys.stderr)
        return 3
    cases = cases[: args.limit] if args.limit else cases
    cases = cases[::-1] if args.reverse else cases
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher.json").write_text(json.dumps(describe(args.root), indent=2) + "\n")
    times = args.out / "times.csv"
    if not times.exists():
        times.write_text("case_id,seconds,foreground_ml\n")
    if args.repair:
        for number, (case_id, path) in enumerate(cases, 1):
            target = args.out / f"{case_id}.nii.gz"
            if target.exists():
                repair(path, target)
                print(f"[{number}/{len(cases)}] {case_id}: repaired", flush=True)
        return 0
    model = ti.ONNXPredictor(ti.resolve_checkpoint(None), device="cpu")
    for number, (case_id, path) in enumerate(cases, 1):
        target = args.out / f"{case_id}.nii.gz"
        if target.exists():
            print(f"[{number}/{len(cases)}] {case_id}: exists, skipped", flush=True)
            continue
        start = time.perf_counter()
        prob, affine = probabilities(path, model, "cpu")
        write_map(prob, affine, target)
        seconds = time.perf_counter() - start
        import numpy as np

        voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
        ml = float((prob > ti.DEFAULT_PROBABILITY_THRESHOLD).sum()) * voxel_ml
        with times.open("a", newline="") as handle:
            csv.writer(handle).writerow([case_id, f"{seconds:.1f}", f"{ml:.1f}"])
        print(f"[{number}/{len(cases)}] {case_id}: {seconds:.1f} s, {ml:.1f} ml above {ti.DEFAULT_PROBABILITY_THRESHOLD}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
