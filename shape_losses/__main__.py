"""``python -m shape_losses``: see :mod:`shape_losses.cli`."""

import sys

from .cli import main

sys.exit(main())
