"""``--accel-redirect``: gridserve decides (name, ACL, signed URL, 304/412), Debian's nginx
sends the bytes from the ``internal`` location of the shipped ``deploy/nginx.conf``. Every
answer through nginx is compared with gridserve's own answer to the same request."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gridserve.acl import sign_path
from gridserve.handoff import accel_path, normalize_prefix, wants_direct
from gridserve.storage.base import FileNotFound
from gridserve.storage.local import LocalStorage
from tests.dbserver import free_port
from tests.nginxserver import Nginx, site_from_deploy
from tests.test_daemon import Daemon, daemons  # noqa: F401 - the fixture

SIZE = 300_000
NAME = "a dir/clip ü?#.bin"  # needs percent-encoding on the way to nginx
URL = "/fs/a%20dir/clip%20%C3%BC%3F%23.bin"
KEY = "handoff-signing-key"
COMPARED = [
    "ETag",
    "Last-Modified",
    "Content-Type",
    "Content-Disposition",
    "Content-Range",
    "Content-Length",
    "Cache-Control",
    "X-Content-Type-Options",
    "Content-Security-Policy",
]


@pytest.fixture
def media_root() -> Iterator[Path]:
    """A storage root nginx's workers (nobody) can read: outside pytest's private tmp."""
    root = Path(tempfile.mkdtemp(prefix="gridserve-handoff-"))
    root.chmod(0o755)
    (root / "a dir").mkdir(mode=0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def write(root: Path, name: str, data: bytes) -> None:
    path = root / name
    path.write_bytes(data)
    path.chmod(0o644)


def pair(root: Path, started: list[Daemon], *args: str) -> tuple[Daemon, Daemon, Nginx]:
    """gridserve with hand-off behind nginx, and the same storage served directly."""
    handing = Daemon("--storage", str(root), "--accel-redirect", "/_files/", *args)
    direct = Daemon("--storage", str(root), *args)
    started += [handing, direct]
    site = site_from_deploy(gridserve_port=handing.port, listen_port=free_port(), storage_root=root)
    return handing, direct, Nginx(site)


def answers(
    nginx: Nginx, direct: Daemon, path: str, method: str = "GET", **headers: str
) -> tuple[requests.Response, requests.Response]:
    via = requests.request(method, nginx.url(path), headers=headers, timeout=30)
    own = requests.request(method, direct.url(path), headers=headers, timeout=30)
    return via, own


def assert_same(via: requests.Response, own: requests.Response) -> None:
    assert via.status_code == own.status_code, (via.status_code, via.headers, own.headers)
    assert via.content == own.content
    for name in COMPARED:
        assert via.headers.get(name) == own.headers.get(name), name
    assert "X-Accel-Redirect" not in via.headers
    assert len([k for k in via.raw.headers if k.lower() == "etag"]) <= 1  # never two ETags


def test_pure_helpers(tmp_path: Path) -> None:
    assert normalize_prefix("_files") == "/_files/"
    assert normalize_prefix("/_files/") == "/_files/"
    assert normalize_prefix("") is None and normalize_prefix("/") is None
    assert wants_direct({"Range": "bytes=0-1,5-6"}, 16)
    assert wants_direct({"If-Match": '"x"'}, 16)
    assert wants_direct({"If-Unmodified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}, 16)
    assert not wants_direct({"Range": "bytes=0-1", "If-Range": '"x"'}, 16)
    root = tmp_path / "root"
    root.mkdir()
    (root / "in.bin").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"s")
    (root / "out").symlink_to(tmp_path / "secret")
    storage = LocalStorage(root)
    info = asyncio.run(storage.resolve("in.bin"))
    assert accel_path(storage, info, "/_files/") == "/_files/in.bin"
    # A link leading out: LocalStorage refuses it, and the hand-off refuses it again.
    with pytest.raises(FileNotFound):
        asyncio.run(storage.resolve("out"))
    forged = dataclasses.replace(info, id="out", filename="out")
    assert accel_path(storage, forged, "/_files/") is None
    dotted = dataclasses.replace(info, id="../secret", filename="../secret")
    assert accel_path(storage, dotted, "/_files/") is None
    assert accel_path(object(), info, "/_files/") is None


def test_reads_through_the_hand_off_match_the_direct_answers(
    media_root: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    data = os.urandom(SIZE)
    write(media_root, NAME, data)
    write(media_root, "page.html", b"<script>alert(1)</script>")
    handing, direct, nginx = pair(media_root, daemons)
    with nginx:
        # gridserve answers with the hand-off, nothing else
        raw = requests.get(handing.url(URL), timeout=10)
        assert raw.headers["X-Accel-Redirect"] == "/_files/a%20dir/clip%20%C3%BC%3F%23.bin"
        assert raw.content == b""
        etag = raw.headers["ETag"]
        modified = raw.headers["Last-Modified"]
        cases: list[dict[str, str]] = [
            {},
            {"Range": "bytes=100-199"},
            {"Range": "bytes=-500"},
            {"Range": f"bytes={SIZE - 10}-"},
            {"Range": "bytes=0-9,1000-1009,5000-"},  # multi: served directly
            {"Range": "bytes=0-9", "If-Range": etag},
            {"Range": "bytes=0-9", "If-Range": '"stale"'},
            {"Range": "bytes=0-9", "If-Range": modified},
            {"Range": "bytes=0-9", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"},
            {"Range": f"bytes={SIZE}-"},  # 416
            {"If-None-Match": etag},  # 304
            {"If-None-Match": '"other"'},
            {"If-Modified-Since": modified},  # 304
            {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
            {"If-Match": '"other"'},  # 412
            {"If-Match": etag, "Range": "bytes=5-9"},
            {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},  # 412
        ]
        statuses = set()
        for headers in cases:
            for method in ("GET", "HEAD"):
                via, own = answers(nginx, direct, URL, method, **headers)
                assert_same(via, own)
                statuses.add(via.status_code)
            if via.status_code == 200:
                assert via.content == data or method == "HEAD"
        assert statuses == {200, 206, 304, 412, 416}
        whole, _ = answers(nginx, direct, URL)
        assert whole.content == data
        part, _ = answers(nginx, direct, URL, Range="bytes=100-199")
        assert part.status_code == 206 and part.content == data[100:200]
        # downloads and the sandbox of active types survive the hand-off
        assert_same(*answers(nginx, direct, URL + "?download=1"))
        page, own_page = answers(nginx, direct, "/fs/page.html")
        assert_same(page, own_page)
        assert page.headers["Content-Security-Policy"] == "sandbox"
        assert_same(*answers(nginx, direct, "/fs/missing.bin"))
        # the internal location is not reachable from outside
        outside = requests.get(nginx.url("/_files/a%20dir/clip%20%C3%BC%3F%23.bin"), timeout=10)
        assert outside.status_code == 404 and data[:100] not in outside.content


def test_unsigned_or_denied_reads_never_reach_the_file(
    media_root: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    data = os.urandom(SIZE)
    write(media_root, NAME, data)
    _, direct, nginx = pair(media_root, daemons, "--signing-key", KEY, "--require-signed-reads")
    with nginx:
        expired = sign_path((KEY,), URL, ttl=1, now=1)
        for url in [URL, URL + "?exp=99999999999&sig=forged", expired]:
            via = requests.get(nginx.url(url), headers={"Range": "bytes=0-99"}, timeout=10)
            assert via.status_code in (401, 403), url
            assert data[:100] not in via.content and "X-Accel-Redirect" not in via.headers
        signed = sign_path((KEY,), URL, ttl=600)
        via, own = answers(nginx, direct, signed, Range="bytes=10-19")
        assert_same(via, own)
        assert via.content == data[10:20]


def test_the_setting_from_flag_environment_and_file(tmp_path: Path) -> None:
    from gridserve.config import ALL_SETTINGS, resolve_settings

    path = tmp_path / "gridserve.toml"
    path.write_text('[gridserve]\naccel-redirect = "/from-file/"\n')
    assert resolve_settings(ALL_SETTINGS, {}, {}, None)["accel_redirect"] is None
    assert resolve_settings(ALL_SETTINGS, {}, {}, path)["accel_redirect"] == "/from-file/"
    env = {"GRIDSERVE_ACCEL_REDIRECT": "/from-env/"}
    assert resolve_settings(ALL_SETTINGS, {}, env, path)["accel_redirect"] == "/from-env/"
    flags = {"accel_redirect": "/from-flag/"}
    assert resolve_settings(ALL_SETTINGS, flags, env, path)["accel_redirect"] == "/from-flag/"
