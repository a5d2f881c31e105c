"""``prostatekd self-distill``: born-again generations of one student, each distilled from the one before."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``self-distill``."""
    parser = subparsers.add_parser(
        "self-distill",
        help="born-again self-distillation: N generations of a student, each taught by the previous one",
        description="Train generation 1 of the config's student without a teacher (distiller 'none'), then "
        "each next generation with distiller 'self_distill' from the previous generation's bundle "
        "(Furlanello et al., Born-Again Neural Networks, 2018). Writes OUT/gen<k>/ (a run folder with its "
        "bundle/) per generation and OUT/generations.json.",
    )
    parser.add_argument("config", help="student YAML config (e.g. training/configs/student_phantom.yaml)")
    parser.add_argument("--out", required=True, help="new or empty folder for the generations")
    parser.add_argument("--generations", type=int, required=True, help="number of generations (>= 1)")
    parser.add_argument("--resume", action="store_true", help="complete a stopped self-distill folder")
    parser.add_argument("--epochs", type=int, help="override train.epochs (every generation)")
    parser.add_argument("--device", help="override train.device: auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--data-root", help="override data.root")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-generation lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``self-distill``."""
    import json
    from pathlib import Path

    from ..config import load_config
    from ..self_distill import GENERATIONS_JSON, check_generations, format_listing, train_generations

    check_generations(args.generations)
    overrides: dict[str, Any] = {}
    for key, value in (("train.epochs", args.epochs), ("train.device", args.device), ("data.root", args.data_root)):
        if value is not None:
            overrides[key] = value
    config = load_config(args.config, overrides)
    train_generations(config, args.out, args.generations, resume=args.resume, progress=not args.quiet)
    listing = json.loads((Path(args.out).expanduser() / GENERATIONS_JSON).read_text(encoding="utf-8"))
    print(format_listing(listing))
    print(f"generations: {args.out} (last bundle: {listing['generations'][-1]['bundle']})")
    return 0
