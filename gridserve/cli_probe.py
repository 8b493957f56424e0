"""Moved to :mod:`gridserve.cli.probe`. This name stays importable for code outside gridserve
(deprecated): it is the same module object, private names and patching included."""

import sys

from gridserve.cli import probe as _moved
from gridserve.cli.probe import *  # noqa: F403 - the names, for type checkers

sys.modules[__name__] = _moved
