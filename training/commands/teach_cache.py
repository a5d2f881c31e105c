"""``prostatekd teach-cache``: cache a teacher's probability maps for the cases of an index."""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import at_least_one


def add_parser(subparsers: Any) -> None:
    """Register ``teach-cache``."""
    parser = subparsers.add_parser(
        "teach-cache",
        help="run a teacher once per case and keep its probability maps (an external-teacher folder)",
        description="Write TEACHER's foreground probability for every case of INDEX (train + validation of "
        "every fold; --split all adds the test split) and of --unlabelled images into --out, on each case's "
        "own grid. List --out under 'teachers:' in a config: distillers that need only teacher outputs read "
        "the maps instead of running the teacher. Existing maps are kept (rerun to resume).",
    )
    parser.add_argument("teacher", help="teacher model bundle (folder, .zip, model.json or installed name)")
    parser.add_argument("index", help="dataset index written by 'prostatekd prepare'")
    parser.add_argument("--out", required=True, help="cache folder to write (new, empty or this teacher's)")
    parser.add_argument("--split", choices=["dev", "all"], default="dev",
                        help="dev: train + validation cases (default); all: also the test split")
    parser.add_argument("--unlabelled", default=None, help="folder of images without masks (<SITE>/<name>.nii.gz)")
    parser.add_argument("--threads", type=at_least_one, default=None, help="CPU threads of the teacher")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``teach-cache``."""
    from ..teach_cache import teach_cache

    rows = teach_cache(args.teacher, args.index, args.out, split=args.split, unlabelled=args.unlabelled,
                       threads=args.threads, progress=not args.quiet)
    done = [r for r in rows if not r.get("skipped")]
    seconds = sum(r["seconds"] for r in done)
    print(f"cached {len(done)} maps ({len(rows) - len(done)} kept) in {args.out}"
          + (f", {seconds / len(done):.1f} s per case" if done else ""))
    return 0
