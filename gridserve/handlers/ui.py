"""The media page: ``/`` (HTML), ``/_ui/config.json``, the page's static files and its icon
(``/favicon.ico`` redirects to ``/_ui/favicon.svg``, so browsers log no 404).

The page itself is plain HTML, CSS and JavaScript in ``gridserve/ui`` (no build step). It talks
to the files API only: the listing, the files, and uploads when they are allowed.
"""

from __future__ import annotations

import json
from pathlib import Path

import tornado.web

from gridserve.handlers.errors import HeadAsGet, PlainErrors

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


class PageHandler(HeadAsGet, PlainErrors):
    """``/``: the page, with a strict Content-Security-Policy (same-origin everything)."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", PAGE_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")
        self.finish((UI_DIR / "index.html").read_bytes())


class ConfigHandler(HeadAsGet, PlainErrors):
    """``/_ui/config.json``: what the page needs to know (files prefix, uploads allowed)."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")

    def initialize(self, prefix: str, uploads: bool) -> None:
        self.config = {"prefix": prefix, "uploads": uploads}

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-cache")
        self.finish(json.dumps(self.config))


class AssetHandler(PlainErrors, tornado.web.StaticFileHandler):
    """``/_ui/<file>``: the page's script and style."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")


def ui_routes(prefix: str, uploads: bool) -> list[tuple[str, type, dict[str, object]]]:
    return [
        (r"/", PageHandler, {}),
        (r"/_ui/config\.json", ConfigHandler, {"prefix": prefix, "uploads": uploads}),
        (r"/_ui/(app\.js|style\.css|favicon\.svg)", AssetHandler, {"path": str(UI_DIR)}),
        (r"/favicon\.ico", tornado.web.RedirectHandler, {"url": "/_ui/favicon.svg"}),
    ]
