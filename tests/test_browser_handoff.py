"""Chromium plays and seeks a WebM through each hand-off, and ffmpeg reads through them.

- ``--accel-redirect`` behind Debian's nginx (the shipped ``deploy/nginx.conf``): the media
  page is opened through nginx, the player's range requests reach gridserve (which answers
  ``X-Accel-Redirect``) and nginx sends the bytes; nginx's own log shows the seek's range.
- ``--s3-redirect`` with s3proxy: the page is gridserve's, its player's first request is a 307
  to a presigned URL of another origin (s3proxy's). A ``<video>`` without ``crossorigin``
  needs no CORS from the bucket; the page's Content-Security-Policy must admit that origin in
  ``media-src`` and ``img-src``, which gridserve adds when the redirect is on (without it the
  player never loads). Chromium keeps the URL it was redirected to: its later range requests,
  the seek's included, go straight to S3 (the measured figure says how many reached gridserve).

Chromium asks for a new range on a seek only once playback runs (``play_and_seek`` plays
first), so the seek to 75% of a 4-minute WebM must show up as a range past the middle at the
hand-off target.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gridserve.acl import default_acl
from gridserve.storage.local import LocalStorage
from gridserve.storage.s3 import S3Storage
from tests.conftest import report_figure
from tests.dbserver import free_port
from tests.livehttp import LiveServer
from tests.mediafiles import ffprobe, framemd5, make
from tests.nginxserver import PREFIX, Nginx, site_from_deploy
from tests.s3server import S3Proxy
from tests.test_browser import (
    browser,
    covered,
    media,
    open_page,
    page,
    play_and_seek,
    range_start,
)
from tests.test_handoff_s3 import put

__all__ = ["browser", "media", "page"]
pytestmark = [pytest.mark.browser, pytest.mark.media]

NAME = "videos/clip.webm"
RANGE_LOG = "handoff_ranges.log"


@dataclass
class Answered:
    """One request gridserve answered: what it was asked, and how it handed it off."""

    method: str
    path: str
    status: int
    range: str | None
    accel: str | None  # X-Accel-Redirect
    location: str | None  # Location of a 307
    started: float
    conditional: bool = False  # carried If-None-Match or If-Modified-Since


class HandOffRecorder:
    """An application ``log_function`` recording each answer's hand-off headers."""

    def __init__(self) -> None:
        self.answers: list[Answered] = []

    def __call__(self, handler: Any) -> None:
        headers = handler._headers
        self.answers.append(
            Answered(
                handler.request.method,
                handler.request.path,
                handler.get_status(),
                handler.request.headers.get("Range"),
                headers.get("X-Accel-Redirect"),
                headers.get("Location"),
                time.monotonic() - handler.request.request_time(),
                any(h in handler.request.headers for h in ("If-None-Match", "If-Modified-Since")),
            )
        )

    def of(self, path: str) -> list[Answered]:
        return [a for a in self.answers if a.path == path]


def wait_for(condition: Any, what: Any, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def off_loop(function: Callable[[], Any]) -> Any:
    """Runs ``function`` (which may call ``asyncio.run``) on a thread of its own: this
    module's Playwright keeps an event loop running in the test's thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result(120)


@pytest.fixture
def bucket(s3_server: S3Proxy) -> str:
    """A fresh bucket (conftest's ``bucket`` cannot run beside Playwright's loop)."""
    from aiobotocore.session import get_session

    name = f"gs-{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        async with get_session().create_client("s3", **s3_server.client_options()) as s3:
            await s3.create_bucket(Bucket=name)

    off_loop(lambda: asyncio.run(create()))
    return name


@pytest.fixture
def media_root() -> Iterator[Path]:
    """A storage root nginx's workers (nobody) can read: outside pytest's private tmp."""
    root = Path(tempfile.mkdtemp(prefix="gridserve-browser-handoff-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def store(root: Path, name: str, data: bytes) -> None:
    path = root / name
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


def logged_site(gridserve_port: int, root: Path) -> tuple[str, Path]:
    """``deploy/nginx.conf`` as a test site that also logs status, Range, bytes sent and the
    final (internal) URI of every request."""
    site = site_from_deploy(
        gridserve_port=gridserve_port, listen_port=free_port(), storage_root=root
    )
    site = "log_format handoff '$status \"$http_range\" $body_bytes_sent $uri';\n" + site
    site = site.replace(
        "server_name localhost;",
        f"server_name localhost;\n    access_log {PREFIX}/{RANGE_LOG} handoff;",
    )
    return site, Path(RANGE_LOG)


@dataclass
class NginxSent:
    status: int
    range: str | None
    sent: int
    uri: str


def nginx_log(nginx: Nginx) -> list[NginxSent]:
    path = nginx.prefix / RANGE_LOG
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        status, quoted_range, sent, uri = re.fullmatch(r'(\d+) "(.*)" (\d+) (.*)', line).groups()  # type: ignore[union-attr]
        rows.append(NginxSent(int(status), None if quoted_range == "-" else quoted_range,
                              int(sent), uri))  # fmt: skip
    return rows


def test_chromium_plays_and_seeks_through_nginx_accel_redirect(
    page: Any, media: dict[str, bytes], media_root: Path
) -> None:
    data = media[NAME]
    store(media_root, NAME, data)
    recorder = HandOffRecorder()
    server = LiveServer(
        lambda: LocalStorage(media_root),
        ui=True,
        gridserve_accel_redirect="/_files/",
        log_function=recorder,
    ).start()
    try:
        site, _ = logged_site(server.port, media_root)
        with Nginx(site) as nginx:
            page.goto(nginx.url("/"))
            page.wait_for_selector("body[data-ready=true]", timeout=15000)
            seek_time = play_and_seek(page, NAME, "video")
            page.goto("about:blank")  # Chrome closes its media connections: both log them

            def seek_at_nginx() -> list[NginxSent]:
                return [
                    row
                    for row in nginx_log(nginx)
                    if row.uri == f"/_files/{NAME}"
                    and row.status == 206
                    and len(data) // 2 < (range_start(row.range) or 0) < len(data)
                ]

            wait_for(seek_at_nginx, lambda: nginx_log(nginx))
            # gridserve decided that range and handed it off; it sent no byte of the file.
            # (Not the answers without a body after the seek: Chrome revalidating a range it
            # cached, 304, or giving one up, 499; see below.)
            handed = [
                a
                for a in recorder.of(f"/fs/{NAME}")
                if a.started >= seek_time
                and len(data) // 2 < (range_start(a.range) or 0)
                and a.status not in (304, 499)
            ]
            assert handed and all(a.accel == f"/_files/{NAME}" for a in handed), recorder.answers
            # Every GET answered with bytes was handed off. Without bytes: Chrome revalidating
            # a range it has cached (If-None-Match: gridserve answers 304 itself, as on the
            # direct path), or, on a loaded machine, giving up on a request before gridserve
            # answers it (499: nothing was sent, nothing to hand off).
            gets = [a for a in recorder.of(f"/fs/{NAME}") if a.method == "GET"]
            served = [a for a in gets if a.status not in (304, 499) and not a.accel]
            assert served == [], served
            assert all(a.status in (200, 206, 304, 499) for a in gets), gets
            assert all(a.conditional for a in gets if a.status == 304), gets
            # The seek skipped part of the file: some bytes before where it landed were never
            # sent. (How much Chrome buffers before it seeks depends on the machine's load: on
            # a busy one it read 70% of the file first, so no fixed share is asserted.)
            rows = [row for row in nginx_log(nginx) if row.uri == f"/_files/{NAME}"]
            landed = min(range_start(row.range) or 0 for row in seek_at_nginx())
            assert covered(rows, landed) < landed, rows
            report_figure(
                f"browser seek through nginx: {sum(row.sent for row in rows)} of {len(data)} "
                f"bytes sent, {covered(rows, landed)} of the {landed} before the seek"
            )
    finally:
        server.stop()


def test_chromium_plays_and_seeks_through_the_s3_redirect(
    page: Any, media: dict[str, bytes], s3_server: S3Proxy, bucket: str
) -> None:
    data = media[NAME]
    off_loop(lambda: put(s3_server, bucket, f"media/{NAME}", data, "video/webm"))
    recorder = HandOffRecorder()
    options = s3_server.client_options()
    server = LiveServer(
        lambda: S3Storage(bucket, "media", **options),
        ui=True,
        acl=default_acl(),
        gridserve_s3_redirect=600,
        log_function=recorder,
    ).start()
    from_s3: list[tuple[float, int, str | None]] = []

    def seen(response: Any) -> None:
        if response.url.startswith(s3_server.endpoint + "/"):
            from_s3.append(
                (time.monotonic(), response.status, response.headers.get("content-range"))
            )

    page.on("response", seen)
    try:
        open_page(page, server)
        seek_time = play_and_seek(page, NAME, "video")
        page.goto("about:blank")

        def seek_at_s3() -> list[Any]:
            return [
                (at, status, span)
                for at, status, span in from_s3
                if at >= seek_time
                and status == 206
                and len(data) // 2 < int(re.match(r"bytes (\d+)-", span or "bytes 0-").group(1))  # type: ignore[union-attr]
            ]

        wait_for(seek_at_s3, lambda: from_s3)
        media_answers = [a for a in recorder.of(f"/fs/{NAME}") if a.method == "GET"]
        # As through nginx: every answer with a body is the redirect; a revalidation (304) or
        # a request Chrome gave up on (499) carries none.
        redirects = [a for a in media_answers if a.status not in (304, 499)]
        assert redirects and all(
            a.status == 307 and a.location and a.location.startswith(s3_server.endpoint)
            for a in redirects
        ), media_answers
        assert all(a.conditional for a in media_answers if a.status == 304), media_answers
        redirected_seeks = [a for a in media_answers if a.started >= seek_time and a.range]
        report_figure(
            f"browser seek through --s3-redirect: {len(from_s3)} answers from S3, "
            f"{len(media_answers)} 307s from gridserve ({len(redirected_seeks)} after the seek)"
        )
    finally:
        server.stop()


def test_ffmpeg_reads_by_ranges_through_each_hand_off(
    tmp_path: Path, media_root: Path, s3_server: S3Proxy, bucket: str
) -> None:
    """A moov-at-end MP4 can only be probed and decoded with a range request past its start:
    through nginx's hand-off and through the 307 to S3 (gridserve sends no byte of either)."""
    clip = make(tmp_path, "clip-end.mp4")
    reference = framemd5(clip)
    store(media_root, "clip-end.mp4", clip.read_bytes())
    recorder = HandOffRecorder()
    local = LiveServer(
        lambda: LocalStorage(media_root),
        gridserve_accel_redirect="/_files/",
        log_function=recorder,
    ).start()
    try:
        site, _ = logged_site(local.port, media_root)
        with Nginx(site) as nginx:
            url = nginx.url("/fs/clip-end.mp4")
            assert ffprobe(url)["format"]["format_name"].startswith("mov")
            assert framemd5(url) == reference
            ranges = [range_start(r.range) or 0 for r in nginx_log(nginx) if r.status == 206]
            assert any(start > 0 for start in ranges), nginx_log(nginx)
            assert all(a.accel for a in recorder.of("/fs/clip-end.mp4"))
    finally:
        local.stop()

    off_loop(lambda: put(s3_server, bucket, "media/clip-end.mp4", clip.read_bytes(), "video/mp4"))
    recorder = HandOffRecorder()
    options = s3_server.client_options()
    remote = LiveServer(
        lambda: S3Storage(bucket, "media", **options),
        gridserve_s3_redirect=600,
        log_function=recorder,
    ).start()
    try:
        url = remote.url("/fs/clip-end.mp4")
        assert ffprobe(url)["format"]["format_name"].startswith("mov")
        assert framemd5(url) == reference
        answers = recorder.of("/fs/clip-end.mp4")
        assert answers and all(a.status == 307 for a in answers), answers
    finally:
        remote.stop()
