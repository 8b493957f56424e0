"""The media page: ``/`` (HTML), ``/_ui/config.json``, the page's static files and its icon
(``/favicon.ico`` redirects to ``/_ui/favicon.svg``, so browsers log no 404).

The page itself is plain HTML, CSS and JavaScript in ``gridserve/ui`` (no build step). It talks
to the files API only: the listing, the files, and uploads when they are allowed, which go
through the tus endpoint (``{prefix}/.uploads/``) with tus-js-client. That client's browser
bundle is vendored in ``gridserve/ui/vendor/tus-js-client`` with its licences (by
``scripts/vendor-tus-js-client``) and served from here, never from a CDN.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import tornado.web

from gridserve.handlers.errors import HeadAsGet, PlainErrors

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


def page_policy(media_origins: Sequence[str] = ()) -> str:
    """The page's Content-Security-Policy: same-origin everything, except that pictures and
    media may also come from ``media_origins`` (the origin ``--s3-redirect`` sends the player
    to: a CSP source list is checked again on each redirect)."""
    extra = "".join(" " + origin for origin in media_origins)
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'{extra}; "
        f"media-src 'self'{extra}; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


PAGE_POLICY = page_policy()

MediaOrigin = Callable[[], Awaitable[str]]
"""Returns the origin (``scheme://host[:port]``) files are redirected to."""


class PageHandler(HeadAsGet, PlainErrors):
    """``/``: the page, with a strict Content-Security-Policy (same-origin everything, plus
    the origin of ``media_origin`` for pictures and media when given)."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")

    def initialize(self, media_origin: MediaOrigin | None = None) -> None:
        self.media_origin = media_origin

    async def get(self) -> None:
        origins = [await self.media_origin()] if self.media_origin is not None else []
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", page_policy(origins))
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


def ui_routes(
    prefix: str, uploads: bool, media_origin: MediaOrigin | None = None
) -> list[tuple[str, type, dict[str, object]]]:
    """The page's routes; ``media_origin``: see :class:`PageHandler`."""
    return [
        (r"/", PageHandler, {"media_origin": media_origin}),
        (r"/_ui/config\.json", ConfigHandler, {"prefix": prefix, "uploads": uploads}),
        (
            r"/_ui/(app\.js|style\.css|favicon\.svg|vendor/tus-js-client/(?:tus\.min\.js|LICENSE|NOTICE))",
            AssetHandler,
            {"path": str(UI_DIR)},
        ),
        (r"/favicon\.ico", tornado.web.RedirectHandler, {"url": "/_ui/favicon.svg"}),
    ]
