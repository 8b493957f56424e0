"""The page's routes over HTTP (no browser): content, security headers, configuration."""

from __future__ import annotations

from collections.abc import Callable

import requests

from tests.livehttp import LiveServer


def test_page_and_assets(serve: Callable[..., LiveServer]) -> None:
    server = serve(ui=True, ui_uploads=True, prefix="/media")
    page = requests.get(server.url("/"), timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert '<script src="/_ui/app.js"' in page.text
    assert requests.get(server.url("/_ui/config.json"), timeout=10).json() == {
        "prefix": "/media",
        "uploads": True,
    }
    script = requests.get(server.url("/_ui/app.js"), timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    assert requests.get(server.url("/_ui/style.css"), timeout=10).status_code == 200
    assert requests.get(server.url("/_ui/../setup.cfg"), timeout=10).status_code == 404
    assert requests.get(server.url("/_ui/index.html"), timeout=10).status_code == 404


def test_no_page_unless_asked(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    assert requests.get(server.url("/"), timeout=10).status_code == 404


def test_the_icon(serve: Callable[..., LiveServer]) -> None:
    server = serve(ui=True)
    icon = requests.get(server.url("/favicon.ico"), timeout=10)
    assert icon.status_code == 200 and icon.headers["Content-Type"] == "image/svg+xml"
    assert icon.url.endswith("/_ui/favicon.svg")
