"""Tornado request handlers: mount them in your own application, or use :func:`make_app`."""

from gridserve.handlers.files import FilesHandler
from gridserve.handlers.stream import GridFSHandler, StorageRequestHandler

__all__ = ["FilesHandler", "GridFSHandler", "StorageRequestHandler"]
