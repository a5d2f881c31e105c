"""``python -m ProstateKDLib`` runs the library's ``prostatekd`` commands (segment, series, models, phantom)."""

import sys

from .cli import main

sys.exit(main())
