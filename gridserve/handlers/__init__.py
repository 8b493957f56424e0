"""Tornado request handlers: mount them in your own application, or use :func:`make_app`."""

from gridserve.handlers.stream import GridFSHandler, StorageRequestHandler

__all__ = ["GridFSHandler", "StorageRequestHandler"]
