"""``prostatekd phantom``: write a synthetic multi-site data set (for tests and demos)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``phantom``."""
    parser = subparsers.add_parser(
        "phantom",
        help="write a synthetic multi-site phantom data set",
        description=(
            "Write synthetic T2-like phantoms in the multi-site layout "
            "(<SITE>/CaseNN.nii.gz + CaseNN_segmentation.nii.gz). They are for "
            "testing and demos, not for accuracy claims."
        ),
    )
    parser.add_argument("outdir", help="output folder (created if missing)")
    parser.add_argument("--cases-per-site", type=int, default=4)
    parser.add_argument("--sites", nargs="+", default=None, help="site names (default: all six)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="matrix size (default: each site's own)")
    parser.add_argument("--zones", action="store_true", help="label central (1) and peripheral (2) zones")
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``phantom``."""
    from pathlib import Path


    from ..errors import InputError, OutputError
    from ..phantom import SITES, write_phantom_dataset

    if args.cases_per_site < 1:
        raise InputError(f"--cases-per-site must be at least 1, got {args.cases_per_site}")
    unknown = [s for s in args.sites or [] if s not in SITES]
    if unknown:
        raise InputError(f"unknown site {unknown[0]!r} (known: {', '.join(SITES)})")
    outdir = Path(args.outdir)
    if not outdir.parent.is_dir():
        raise OutputError(f"output folder does not exist: {outdir.parent}")
    outdir.mkdir(exist_ok=True)
    cases = write_phantom_dataset(
        outdir,
        cases_per_site=args.cases_per_site,
        seed=args.seed,
        sites=args.sites,
        size=tuple(args.size) if args.size else None,
        zones=args.zones,
        overwrite=args.overwrite,
    )
    sites = sorted({c["site"] for c in cases})
    print(f"wrote {len(cases)} phantom cases ({', '.join(sites)}) to {outdir} (synthetic, for testing only)")
    return 0
