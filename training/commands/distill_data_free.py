"""``prostatekd distill-data-free``: a student from a teacher bundle alone (no training images)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``distill-data-free``."""
    parser = subparsers.add_parser(
        "distill-data-free",
        help="distil a student from a teacher bundle alone, without any image (model inversion)",
        description="Data-free distillation (training/data_free.py): inputs are synthesised by inverting the "
        "teacher towards gland label maps from an ellipsoid shape prior (cross-entropy + total variation + L2), "
        "starting from a meta-learned shared initialisation, and the student learns the teacher's answers on "
        "them (KL + CE). No image is read. OUT gets options.json, run.json, log.csv, checkpoint_last.pt and bundle/ (the teacher's grid and "
        "labels; provenance 'training_data: none (data-free)').",
    )
    parser.add_argument("teacher", metavar="TEACHER", help="teacher bundle (folder or installed name)")
    parser.add_argument("--out", required=True, help="new or empty output folder, or the folder to --resume")
    parser.add_argument("--name", default="datafree-student", help="name of the exported bundle")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batches-per-epoch", type=int, default=8)
    parser.add_argument("--synthesis-steps", type=int, default=20, help="Adam steps per synthesised batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default: cpu)")
    parser.add_argument("--amp", action="store_true", help="mixed precision for the student's steps (CUDA only)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``distill-data-free``."""
    from ..data_free import distil_data_free

    out = distil_data_free(args.teacher, args.out, name=args.name, progress=not args.quiet, epochs=args.epochs,
                           batches_per_epoch=args.batches_per_epoch, synthesis_steps=args.synthesis_steps,
                           seed=args.seed, num_threads=args.threads, device=args.device, amp=args.amp,
                           resume=args.resume)
    print(f"data-free student: {out / 'bundle'}")
    return 0
