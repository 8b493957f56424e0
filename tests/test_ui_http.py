"""The page's routes over HTTP (no browser): content, security headers, configuration."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import requests

import gridserve
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


def test_the_vendored_tus_client_is_served_with_its_licences(
    serve: Callable[..., LiveServer],
) -> None:
    """The page's tus-js-client comes from this server (never a CDN), byte for byte the bundle
    scripts/vendor-tus-js-client copied and recorded in NOTICE, with its licences."""
    vendor = Path(gridserve.__file__).parent / "ui" / "vendor" / "tus-js-client"
    server = serve(ui=True, ui_uploads=True)
    page = requests.get(server.url("/"), timeout=10).text
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts == ["/_ui/vendor/tus-js-client/tus.min.js", "/_ui/app.js"]
    bundle = requests.get(server.url(scripts[0]), timeout=10)
    assert bundle.status_code == 200 and "javascript" in bundle.headers["Content-Type"]
    assert bundle.headers["X-Content-Type-Options"] == "nosniff"
    notice = requests.get(server.url("/_ui/vendor/tus-js-client/NOTICE"), timeout=10).text
    assert f"sha256 {hashlib.sha256(bundle.content).hexdigest()}" in notice
    assert bundle.content == (vendor / "tus.min.js").read_bytes()
    licence = requests.get(server.url("/_ui/vendor/tus-js-client/LICENSE"), timeout=10)
    assert licence.status_code == 200 and "MIT License" in licence.text
    for name in ("js-base64", "url-parse", "buffer"):  # bundled, each under its own licence
        assert f"==== {name} " in notice
    # Nothing else under the folder is served (the route names its files).
    assert requests.get(server.url("/_ui/vendor/tus-js-client/"), timeout=10).status_code == 404
    missing = server.url("/_ui/vendor/tus-js-client/tus.min.js.map")
    assert requests.get(missing, timeout=10).status_code == 404
