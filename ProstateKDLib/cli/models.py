"""``prostatekd models``: list installed model bundles, or show one's metadata."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``models`` (``models`` lists, ``models info NAME`` shows one)."""
    parser = subparsers.add_parser(
        "models",
        help="list installed model bundles, or 'models info NAME'",
        description="List the model bundles found in $PROSTATEKD_MODELS and Resources/Models.",
    )
    parser.add_argument("action", nargs="?", choices=["list", "info"], default="list")
    parser.add_argument("name", nargs="?", help="bundle name or path (for 'info')")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``models``."""
    from ..bundle import find_bundles, model_search_paths, resolve_model
    from ..errors import UsageError

    if args.action == "info":
        if not args.name:
            raise UsageError("models info needs a bundle NAME or path")
        bundle = resolve_model(args.name)
        info = dict(bundle.meta.raw)
        info["path"] = str(bundle.path)
        info["size_mb"] = round(bundle.size_bytes() / 1e6, 2)
        print(json.dumps(info, indent=None if args.json else 2))
        return 0
    bundles, problems = find_bundles()
    rows = [
        {
            "name": b.meta.name,
            "version": b.meta.version,
            "network": b.meta.network_name,
            "size_mb": round(b.size_bytes() / 1e6, 2),
            "license": b.meta.license,
            "validation_dice": b.meta.provenance.get("validation_dice"),
            "path": str(b.path),
            "description": b.meta.description,
        }
        for b in bundles
    ]
    if args.json:
        print(json.dumps({"models": rows, "invalid": problems}))
        return 0
    if not rows:
        print("no model bundles found in: " + ", ".join(str(p) for p in model_search_paths()))
    for row in rows:
        print(
            f"{row['name']:<28} {row['version']:<8} {row['network']:<10} {row['size_mb']:>7.2f} MB  "
            f"{row['license']:<12} {row['path']}"
        )
    for problem in problems:
        print(f"invalid bundle: {problem}")
    return 0
