"""One page of augmented real training patches with the label contour (a look that augmentation keeps them aligned).

    .venv/bin/python benchmarks/augmentation_figure.py [--index training/indexes/promise12.json] [--out PNG]

Takes training cases of the index's fold 0 (never test cases), the augmentation of
``training/configs/student_real.yaml`` and draws 12 patches (central slice of each).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default=str(ROOT / "training/indexes/promise12.json"))
    parser.add_argument("--config", default=str(ROOT / "training/configs/student_real.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/reports/2026-12-02/augmented_patches.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ProstateKDLib.datasets import load_case
    from training.config import load_config
    from training.prepare import index_split
    from training.sampling import PatchSampler

    config = load_config(args.config, {"data.index": args.index})
    pre = config.preprocessing
    cases = index_split(args.index, "train", 0)[::6][:4]
    volumes = [load_case(c, pre.orientation, pre.spacing, pre.normalization.as_dict()) for c in cases]
    sampler = PatchSampler(volumes, pre.patch_size, 1.0, seed=0, augmentation=config.augmentation)
    fig, axes = plt.subplots(3, 4, figsize=(12, 9.5))
    for n, ax in enumerate(axes.flat):
        index = n % len(volumes)
        image, label = sampler.patch(index)
        z = image.shape[-1] // 2
        ax.imshow(image[0, :, :, z].T.numpy(), cmap="gray", origin="lower")
        if label[0, :, :, z].any():
            ax.contour(label[0, :, :, z].T.numpy(), levels=[0.5], colors="orange", linewidths=1.2)
        ax.set_title(f"{cases[index].case_id} (augmented)", fontsize=9)
        ax.axis("off")
    fig.suptitle("Augmented real training patches (PROMISE12, fold 0 training cases), label contour in orange")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
