"""``prostatekd export``: write a model bundle from a training run."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``export``."""
    export = subparsers.add_parser(
        "export",
        help="export a training run as a model bundle",
        description="Write model.json and model.safetensors for a run's best (or last) checkpoint.",
    )
    export.add_argument("run_dir", help="training run folder (monai-bundle: also a model bundle name or path)")
    export.add_argument("outdir", help="bundle folder to write")
    export.add_argument("--checkpoint", choices=["best", "last"], default="best")
    export.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    export.add_argument(
        "--format", choices=["prostatekd", "monai-bundle"], default="prostatekd",
        help="prostatekd (model.json + safetensors) or monai-bundle (configs/, models/model.pt for "
        "'python -m monai.bundle run')",
    )
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``export``."""
    if getattr(args, "format", "prostatekd") == "monai-bundle":
        from ..export_monai import export_monai_bundle

        path = export_monai_bundle(args.run_dir, args.outdir, overwrite=args.overwrite, checkpoint=args.checkpoint)
        print(f"exported MONAI bundle to {path} (run: python -m monai.bundle run --config_file "
              f"{path / 'configs' / 'inference.json'} --bundle_root {path} --dataset_dir IMAGES --output_dir MASKS)")
        return 0
    from ..export import export_run

    bundle = export_run(args.run_dir, args.outdir, checkpoint=args.checkpoint, overwrite=args.overwrite)
    dice = bundle.meta.provenance.get("validation_dice")
    print(f"exported {bundle.meta.name} {bundle.meta.version} to {bundle.path} (validation Dice {dice})")
    return 0
