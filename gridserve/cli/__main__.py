"""``python -m gridserve.cli``: the ``gridserve`` command."""

import sys

from gridserve.cli import main

sys.exit(main())
