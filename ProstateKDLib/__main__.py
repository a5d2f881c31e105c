"""``python -m ProstateKDLib`` runs the ``prostatekd`` command."""

import sys

from .cli import main

sys.exit(main())
