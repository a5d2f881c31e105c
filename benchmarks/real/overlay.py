"""Overlay figures: axial slices of a T2 image with mask contours (expert and models), PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

COLOURS = ("#ffd400", "#00e5ff", "#ff4fd8", "#7CFC00", "#ff7f0e", "#ff3030", "#b07cff", "#ffffff")


def gland_slices(mask: np.ndarray, count: int = 3) -> list[int]:
    """``count`` slice indices (axis 0 of a [z, y, x] array) spread over the gland (the middle when empty)."""
    z = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(1))
    if not len(z):
        return [mask.shape[0] // 2] * 1
    picks = np.linspace(z[0], z[-1], count + 2)[1:-1]
    return sorted({int(round(v)) for v in picks})


def overlay_png(image: Any, masks: Mapping[str, Any], path: Path, title: str, slices: Sequence[int] | None = None,
                reference: str | None = None) -> Path:
    """Write ``path``: a row of axial slices of ``image`` with one contour per entry of ``masks``.

    Args:
        image: SimpleITK image (the T2).
        masks: label -> SimpleITK mask on the image grid (drawn in order, one colour each).
        reference: the key whose gland chooses the slices (default: the first mask).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from matplotlib.lines import Line2D

    array = sitk.GetArrayFromImage(image).astype(np.float32)
    arrays = {k: sitk.GetArrayFromImage(m) > 0 for k, m in masks.items()}
    if len(arrays) > len(COLOURS):
        raise ValueError(f"overlay: at most {len(COLOURS)} masks per figure, got {len(arrays)}")
    key = reference or next(iter(arrays))
    chosen = list(slices) if slices is not None else gland_slices(arrays[key])
    low, high = np.percentile(array, [1, 99.5])
    sx, sy = image.GetSpacing()[:2]
    # a dark page: every contour colour (white and yellow included) stays visible in the legend too
    fig, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 4.4), squeeze=False, facecolor="black")
    for ax, z in zip(axes[0], chosen):
        ax.imshow(array[z], cmap="gray", vmin=low, vmax=high, aspect=sy / sx, interpolation="nearest")
        for colour, (label, m) in zip(COLOURS, arrays.items()):
            if m[z].any():
                ax.contour(m[z].astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(f"slice {z}", fontsize=9, color="white")
        ax.axis("off")
    handles = [Line2D([0], [0], color=c, lw=2, label=label) for c, label in zip(COLOURS, arrays)]
    columns = min(len(handles), 4)  # more models wrap onto further legend rows instead of running off the page
    rows = -(-len(handles) // columns)
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=9, frameon=False, labelcolor="white")
    fig.suptitle(title, fontsize=10, color="white")
    fig.tight_layout(rect=(0, 0.045 * rows + 0.02, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, facecolor=fig.get_facecolor())
    plt.close(fig)
    return path
