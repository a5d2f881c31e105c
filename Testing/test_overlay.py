"""``benchmarks/real/overlay.py`` on the bundled real sample case: contours drawn, a dark page, at most 8 masks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "Samples" / "PROMISE12_HK_Case13"


def test_overlay_draws_each_contour_on_a_dark_page(tmp_path):
    import SimpleITK as sitk
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from benchmarks.real.overlay import COLOURS, overlay_png

    image = sitk.ReadImage(f"{SAMPLE}.nii.gz")
    mask = sitk.ReadImage(f"{SAMPLE}_segmentation.nii.gz")
    masks = {f"model {i}": sitk.BinaryDilate(mask, [i, i, 0]) for i in range(len(COLOURS))}
    path = overlay_png(image, masks, tmp_path / "overlay.png", "eight contours")
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    assert tuple(pixels[0]) == (0, 0, 0)  # the page is black: the white and yellow contours stay visible
    for colour in COLOURS:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).sum(axis=1) < 30).sum() > 50, colour  # drawn (contour or legend)
    with pytest.raises(ValueError, match="at most 8 masks per figure, got 9"):
        overlay_png(image, {**masks, "one more": mask}, tmp_path / "nine.png", "nine")
    assert not (tmp_path / "nine.png").exists()
