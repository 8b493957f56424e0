"""The media page with facts and posters, in headless Chromium (Debian's, through Playwright).

Posters show in the listing; sorting by size and date works over the loaded rows; and a
non-faststart MP4 uploaded with ``--faststart`` reaches its first frame with fewer requests and
fewer bytes than the same MP4 uploaded without it, counted from the server's request log. A
screenshot of the page goes to test-artifacts/media-page.png.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from gridserve.acl import default_acl
from gridserve.media.service import MediaService
from tests.conftest import report_figure
from tests.livehttp import LiveServer
from tests.mediafiles import media_dir, tool
from tests.test_browser import ARTIFACTS, Recorder, browser, page

__all__ = ["browser", "media_dir", "page"]
pytestmark = [pytest.mark.browser, pytest.mark.media]

TOKEN = "t0k"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of 640x360 H.264/AAC with moov at the end (ffmpeg's default), about 2 MB."""
    out = tmp_path_factory.mktemp("browser-mp4") / "camera.mp4"
    command = [
        tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000", "-t", "20",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-b:v", "800k",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return out


LINK_RATE = 1_000_000  # bytes/s between the server and the browser in the faststart test
LINK_DELAY = 0.1  # seconds each way a request (or a hang-up) takes to reach the server


def media_site(
    serve: Callable[..., LiveServer], *, faststart: bool, facts: bool = True, **options: Any
) -> tuple[LiveServer, Recorder]:
    recorder = Recorder()
    server = serve(
        ui=True,
        ui_uploads=True,
        acl=default_acl(upload_token=TOKEN),
        log_function=recorder,
        send_buffer=64 * 1024,
        media=lambda storage: MediaService(storage, faststart=faststart, facts=facts),
        **options,
    )
    return server, recorder


def upload(server: LiveServer, name: str, data: bytes, content_type: str) -> dict[str, Any]:
    response = requests.put(
        server.url(f"/fs/{name}"),
        data=data,
        headers={**AUTH, "Content-Type": content_type},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    described: dict[str, Any] = response.json()
    return described


def open_page(page: Any, server: LiveServer) -> None:
    page.goto(server.url("/"))
    page.wait_for_selector("body[data-ready=true]", timeout=15000)


def test_posters_duration_resolution_and_sorting(
    page: Any, serve: Callable[..., LiveServer], media_dir: Path
) -> None:
    server, recorder = media_site(serve, faststart=False)
    files = [
        ("a/clip.webm", "clip.webm", "video/webm"),
        ("b/clip-end.mp4", "clip-end.mp4", "video/mp4"),
        ("c/still.jpg", "still.jpg", "image/jpeg"),
        ("d/tone.mp3", "tone.mp3", "audio/mpeg"),
    ]
    for name, source, content_type in files:
        upload(server, name, (media_dir / source).read_bytes(), content_type)
    server.run_coroutine(server.media.idle(), timeout=300)
    open_page(page, server)
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#files td.poster img')];"
        " return imgs.length === 3 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        timeout=20000,
    )
    widths = page.eval_on_selector_all(
        "#files td.poster img", "imgs => imgs.map(i => i.naturalWidth)"
    )
    assert widths == [320, 320, 320]  # the small poster of each picture and video
    assert any(r.path.startswith("/fs/") and r.status == 200 for r in recorder.requests)
    row = page.locator("tr[data-filename='a/clip.webm']")
    assert row.locator("td.duration").text_content() == "00:02"
    assert row.locator("td.resolution").text_content() == "320×180"
    assert page.locator("tr[data-filename='c/still.jpg'] td.resolution").text_content() == (
        "1600×900"
    )
    assert page.locator("tr[data-filename='d/tone.mp3'] td.poster img").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "media-page.png"), full_page=True)

    def order() -> list[str]:
        names: list[str] = page.eval_on_selector_all(
            "#files tbody tr", "rows => rows.map(r => r.dataset.filename)"
        )
        return names

    by_size = sorted(files, key=lambda f: (media_dir / f[1]).stat().st_size, reverse=True)
    page.select_option("#sort", "size-desc")
    assert order() == [f[0] for f in by_size]
    page.select_option("#sort", "size-asc")
    assert order() == [f[0] for f in reversed(by_size)]
    page.select_option("#sort", "date-desc")
    assert order() == [f[0] for f in reversed(files)]  # uploaded in name order
    page.select_option("#sort", "name")
    assert order() == [f[0] for f in files]


def first_frame(page: Any, server: LiveServer, recorder: Recorder, name: str) -> tuple[int, int]:
    """Opens ``name`` in the page's player (through the rate-capped proxy), plays until the
    first video frame is presented and returns the requests for the file that the server's
    log shows started until then, and the bytes that reached the browser meanwhile."""
    page.goto(server.proxy_url("/"))
    page.wait_for_selector("body[data-ready=true]", timeout=15000)
    before, begin = server.bytes_to_client, time.monotonic()
    page.click(f"tr[data-filename='{name}'] td.name button")
    page.evaluate(
        "() => new Promise(done => { const p = document.getElementById('player');"
        " p.muted = true; p.requestVideoFrameCallback(() => { p.pause(); done(true); });"
        " p.play().catch(() => {}); })"
    )
    sent, shown = server.bytes_to_client - before, time.monotonic()
    page.goto("about:blank")  # Chrome closes its media connections; the server logs them
    deadline = time.monotonic() + 30

    def file_requests() -> list[Any]:
        return [r for r in recorder.media() if begin <= r.started <= shown and r.method == "GET"]

    # A response still in flight is logged when its connection closes.
    while not file_requests() or server.in_flight():
        assert time.monotonic() < deadline, recorder.requests
        time.sleep(0.1)
    return len(file_requests()), sent


def test_faststart_upload_plays_with_fewer_requests_and_bytes(
    page: Any, serve: Callable[..., LiveServer], long_mp4: Path
) -> None:
    data = long_mp4.read_bytes()
    results = {}
    for fast in (False, True):
        server, recorder = media_site(
            serve,
            faststart=fast,
            facts=False,
            counting_proxy=True,
            proxy_rate=LINK_RATE,
            proxy_delay=LINK_DELAY,
        )
        upload(server, "v/camera.mp4", data, "video/mp4")
        results[fast] = first_frame(page, server, recorder, "v/camera.mp4")
    (slow_requests, slow_bytes), (fast_requests, fast_bytes) = results[False], results[True]
    report_figure(
        f"browser first frame of a {len(data)} byte MP4 over a {LINK_RATE} B/s link "
        f"({LINK_DELAY}s delay): "
        f"moov at the end {slow_requests} "
        f"requests / {slow_bytes} bytes; uploaded with --faststart {fast_requests} requests / "
        f"{fast_bytes} bytes"
    )
    assert fast_requests < slow_requests
    assert fast_bytes < slow_bytes
