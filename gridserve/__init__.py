"""gridserve: stream media stored in MongoDB GridFS to browsers and players, with seeking."""

from __future__ import annotations

__version__ = "0.1.0"

from gridserve.app import make_app

__all__ = ["__version__", "make_app"]
