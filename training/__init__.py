"""Training of ProstateKD students: configs, the training loop, export to bundles.

``add_parsers`` adds ``train`` and ``export`` to the ``prostatekd`` command;
it imports nothing heavy.
"""

from .cli import add_parsers

__all__ = ["add_parsers"]
