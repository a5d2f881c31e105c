"""``python -m ProstateKDLib.cli`` runs the ``prostatekd`` command."""

import sys

from . import main

sys.exit(main())
