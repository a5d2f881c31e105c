"""``prostatekd adapt``: adapt a trained student to a new site without that site's labels (mean teacher)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``adapt``."""
    parser = subparsers.add_parser(
        "adapt",
        help="adapt a student bundle to a new site without its labels (mean teacher self-ensembling)",
        description="Unsupervised site adaptation of a student bundle (Tarvainen & Valpola 2017, mean teacher): "
        "supervised Dice + CE on the labelled cases of every other site of DATA, and a softmax-MSE consistency "
        "between the student and its EMA teacher on intensity-augmented images of --target-site, whose labels "
        "are never read during adaptation. The bundle's preprocessing (spacing, normalization, patch size) is "
        "kept. OUT gets options.json, run.json, log.csv (per epoch: sup and consistency losses), "
        "checkpoint_last.pt (for --resume) and bundle/ (the EMA teacher, the usual mean-teacher choice; its "
        "provenance names the original bundle, the target site, method mean_teacher and that no target labels "
        "were used). Afterwards, when the target site's labels are on disk, the original and the adapted "
        "bundle are evaluated on it (OUT/evaluation, mean Dice per site printed); --no-evaluate skips that.",
    )
    parser.add_argument("bundle", metavar="BUNDLE", help="student model bundle (folder, .zip or installed name)")
    parser.add_argument("data", metavar="DATA",
                        help="multi-site folder (<SITE>/CaseNN.nii.gz) or .csv (image,label,site)")
    parser.add_argument("--target-site", required=True, help="site to adapt to (its labels are not used)")
    parser.add_argument("--out", required=True, help="new or empty output folder, or the folder to --resume")
    parser.add_argument("--epochs", type=int, default=20, help="epochs over the source cases (default 20)")
    parser.add_argument("--ema-decay", type=float, default=0.99,
                        help="teacher EMA decay alpha in [0, 1) (default 0.99)")
    parser.add_argument("--consistency-weight", type=float, default=1.0,
                        help="consistency loss weight after the ramp-up (default 1.0)")
    parser.add_argument("--rampup-epochs", type=int, default=5,
                        help="epochs of the sigmoid ramp-up of the consistency weight (default 5; 0: none)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=2, help="source (and target) patches per step (default 2)")
    parser.add_argument("--patches-per-volume", type=int, default=4,
                        help="patches per source case and epoch (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--no-evaluate", action="store_true",
                        help="skip the before/after evaluation on the target site's labels")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``adapt``."""
    from pathlib import Path

    from ..adapt import BUNDLE_DIR, EVALUATION_DIR, AdaptOptions, adapt, evaluate_before_after
    from ..evaluate import format_table

    options = AdaptOptions(
        epochs=args.epochs, ema_decay=args.ema_decay, consistency_weight=args.consistency_weight,
        rampup_epochs=args.rampup_epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        patches_per_volume=args.patches_per_volume, seed=args.seed, device=args.device, num_threads=args.threads,
        amp=args.amp,
    )
    out = adapt(args.bundle, args.data, args.target_site, args.out, options, resume=args.resume,
                progress=not args.quiet)
    adapted = Path(out) / BUNDLE_DIR
    print(f"adapted model (EMA teacher): {adapted}")
    if args.no_evaluate:
        return 0
    summary = evaluate_before_after(args.bundle, adapted, args.data, args.target_site, Path(out) / EVALUATION_DIR,
                                    device=args.device, progress=not args.quiet, num_threads=args.threads)
    if summary is None:
        print(f"labels of site {args.target_site} not found: no before/after evaluation")
    else:
        print(f"site {args.target_site}, before (first row) and after (second row) adaptation:")
        print(format_table(summary))
        print(f"evaluation: {Path(out) / EVALUATION_DIR}")
    return 0
