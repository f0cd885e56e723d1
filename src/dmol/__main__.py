"""``python -m dmol``: the `dmol` command (see :mod:`dmol.cli`)."""

import sys

from dmol.cli import main

sys.exit(main())
