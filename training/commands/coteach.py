"""``prostatekd coteach``: semi-supervised co-teacher KD of a large and a small network (after ACT-Net)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``coteach``."""
    parser = subparsers.add_parser(
        "coteach",
        help="semi-supervised co-teaching of a large and a small network on labelled + unlabelled cases",
        description="Co-teacher knowledge distillation (after ACT-Net, Zhao et al. 2022): the config's network "
        "(small) and a large UNet both learn the labelled cases of the config's data.root (Dice + CE), and teach "
        "each other on the --unlabelled images with alternating roles (the large one first): the teacher's "
        "confident pseudo-labels (max probability >= --confidence; masked cross-entropy) and a softmax-MSE "
        "consistency on two intensity-augmented views. Unlabelled label files are never read. OUT gets "
        "options.json, run.json, log.csv (per epoch: teacher, sup losses of both, pseudo-label coverage, "
        "validation Dice of both), checkpoint_last.pt (for --resume), bundle/ (the small network, provenance "
        "method coteach) and large_bundle/ (the large network).",
    )
    parser.add_argument("config", help="student YAML config (small network, preprocessing, labelled data)")
    parser.add_argument("--unlabelled", required=True,
                        help="folder of images (or <SITE>/ subfolders; label files skipped) or .csv with an image "
                        "column")
    parser.add_argument("--out", required=True, help="new or empty output folder, or the folder to --resume")
    parser.add_argument("--large-channels", type=int, nargs="+", default=[16, 32, 64, 128], metavar="C",
                        help="channels of the large residual UNet, stride 2 between levels (default 16 32 64 128)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--confidence", type=float, default=0.9,
                        help="pseudo-label confidence threshold in (0, 1] (default 0.9)")
    parser.add_argument("--alternate-every", type=int, default=1, help="epochs per teacher role (default 1)")
    parser.add_argument("--consistency-weight", type=float, default=1.0,
                        help="weight of the softmax-MSE consistency (default 1.0)")
    parser.add_argument("--pseudo-weight", type=float, default=1.0,
                        help="weight of the pseudo-label cross-entropy (default 1.0)")
    parser.add_argument("--rampup-epochs", type=int, default=0,
                        help="epochs of the sigmoid ramp-up of the unlabelled losses (default 0: none)")
    parser.add_argument("--device", help="override train.device: auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--data-root", help="override data.root (the labelled cases)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``coteach``."""
    from pathlib import Path

    from ..config import load_config
    from ..coteach import BUNDLE_DIR, LARGE_BUNDLE_DIR, CoteachOptions, coteach, large_unet_kwargs

    options = CoteachOptions(
        large_network="unet", large_kwargs=large_unet_kwargs(args.large_channels), epochs=args.epochs,
        confidence=args.confidence, alternate_every=args.alternate_every,
        consistency_weight=args.consistency_weight, pseudo_weight=args.pseudo_weight,
        rampup_epochs=args.rampup_epochs, device=args.device, num_threads=args.threads,
    )
    config = load_config(args.config, {"data.root": args.data_root} if args.data_root else None)
    out = Path(coteach(config, args.unlabelled, args.out, options, resume=args.resume, progress=not args.quiet))
    print(f"small network: {out / BUNDLE_DIR}")
    print(f"large network: {out / LARGE_BUNDLE_DIR}")
    return 0
