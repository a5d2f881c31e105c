"""Argument types shared by the training subcommands' parsers."""

from __future__ import annotations

import argparse


def at_least_one(text: str) -> int:
    """An integer >= 1 (counts, thread numbers); argparse reports anything else as a usage error."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
