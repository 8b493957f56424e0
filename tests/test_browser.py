"""The media page in a real browser: headless Chromium (Debian's) driven by Playwright.

Plays a generated 4-minute WebM (VP9/Opus) and a 10-minute Opus file stored in GridFS (longer
than Chrome's read-ahead, as real media is), seeks to 75% and checks that playback resumes
there, that the server answered the seek with a 206 starting past the middle, and that far
less than the file was sent. Uploads through the form. A screenshot of
the page is kept in test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from gridserve.acl import AnyOf, SignedURLs, default_acl
from tests.conftest import PutFile, report_figure
from tests.livehttp import LiveServer

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


@dataclass
class Served:
    method: str
    path: str
    status: int
    range: str | None
    sent: int
    started: float  # time.monotonic() when the request arrived


class Recorder:
    """An application ``log_function``: what the server answered, request by request."""

    def __init__(self) -> None:
        self.requests: list[Served] = []

    def __call__(self, handler: Any) -> None:
        sent = getattr(handler, "bytes_sent", 0) or 0
        self.requests.append(
            Served(
                handler.request.method,
                handler.request.path,
                handler.get_status(),
                handler.request.headers.get("Range"),
                sent,
                time.monotonic() - handler.request.request_time(),
            )
        )

    def media(self) -> list[Served]:
        """GETs of files (the page plays files by their id URL, so by any path under /fs/)."""
        return [r for r in self.requests if r.path.startswith("/fs/") and r.path != "/fs/"]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg is not installed (scripts/test installs it)")
    out = tmp_path_factory.mktemp("browser-media")
    video, audio = out / "clip.webm", out / "voice.opus"
    commands = [
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000", "-t", "240",
         "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1200k",
         "-g", "50", "-c:a", "libopus", "-b:a", "64k", str(video)],
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", "600", "-c:a", "libopus", "-b:a", "256k", str(audio)],
    ]  # fmt: skip
    for command in commands:
        result = subprocess.run(command, capture_output=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    return {"videos/clip.webm": video.read_bytes(), "music/voice.opus": audio.read_bytes()}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope: while Playwright's sync API is open it runs an event loop in this thread,
    # and later modules' asyncio.run() must not find it.
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (scripts/test installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], errors


@pytest.fixture
def site(
    serve: Callable[..., LiveServer], put_file: PutFile, media: dict[str, bytes]
) -> tuple[LiveServer, Recorder]:
    for name, data in media.items():
        put_file(name, data, chunk_size=255 * 1024)
    recorder = Recorder()
    # A small kernel send buffer, as a media deployment would set (--send-buffer): what is
    # queued for a player that seeks away is wasted.
    server = serve(
        ui=True,
        ui_uploads=True,
        acl=default_acl(upload_token="t0k"),
        log_function=recorder,
        send_buffer=64 * 1024,
    )
    return server, recorder


def open_page(page: Any, server: LiveServer) -> None:
    page.goto(server.url("/"))
    page.wait_for_selector("body[data-ready=true]", timeout=15000)


def range_start(value: str | None) -> int | None:
    """The first byte a ``bytes=N-`` or ``bytes=N-M`` Range header asks for, else None."""
    match = re.fullmatch(r"bytes=(\d+)-\d*", value or "")
    return int(match.group(1)) if match else None


def covered(answers: Iterable[Any], end: int) -> int:
    """How many of the bytes ``[0, end)`` of a file the ``answers`` (each with ``status``,
    ``range`` (the request's Range header) and ``sent``) sent, counted once (their union)."""
    spans = sorted(
        (start, start + answer.sent)
        for answer in answers
        if answer.status in (200, 206, 499) and (start := range_start(answer.range) or 0) < end
    )
    total, reached = 0, 0
    for start, stop in spans:
        start, stop = max(start, reached), min(stop, end)
        if stop > start:
            total += stop - start
            reached = stop
    return total


def play_and_seek(page: Any, name: str, tag: str) -> float:
    """Opens ``name`` in the viewer, plays it, seeks to 75% and waits until playback runs on
    from there. Returns the time.monotonic() of the seek."""
    page.click(f"tr[data-filename='{name}'] td.name button")
    # Functions, not expression strings: the page's CSP forbids eval, which Playwright would
    # need to poll an expression.
    page.wait_for_function(
        "tag => { const p = document.querySelector(tag + '#player');"
        " return p && p.readyState >= 1 && isFinite(p.duration); }",
        arg=tag,
        timeout=60000,
    )
    page.evaluate(
        "() => { const p = document.getElementById('player'); p.muted = true; p.play(); }"
    )
    page.wait_for_function(
        "() => document.getElementById('player').currentTime > 0.5", timeout=60000
    )
    duration = page.evaluate("() => document.getElementById('player').duration")
    target = duration * 0.75
    seek_time = time.monotonic()
    page.evaluate("t => { document.getElementById('player').currentTime = t; }", target)
    page.wait_for_function(
        "t => { const p = document.getElementById('player');"
        " return !p.seeking && !p.paused && p.currentTime > t; }",
        arg=target + 0.5,
        # A hang detector, not a deadline: an Ogg seek is a bisection of range requests, each
        # a lookup the test database answers by a scan, and on a loaded 2-core machine the
        # whole seek took over 30 s.
        timeout=120000,
    )
    reached: float = page.evaluate("() => document.getElementById('player').currentTime")
    assert reached >= target
    return seek_time


@pytest.mark.parametrize(
    ("name", "tag"), [("videos/clip.webm", "video"), ("music/voice.opus", "audio")]
)
def test_play_and_seek(
    page: Any, site: tuple[LiveServer, Recorder], media: dict[str, bytes], name: str, tag: str
) -> None:
    server, recorder = site
    open_page(page, server)
    seek_time = play_and_seek(page, name, tag)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-{tag}.png"))
    page.goto("about:blank")  # Chrome closes its media connections; the server logs them
    size = len(media[name])

    def seek_starts() -> list[int]:
        return [
            int(r.range.split("=")[1].split("-")[0])
            for r in recorder.media()
            # 499: Chrome closed the connection of a range it no longer wanted (mid-download)
            if r.status in (206, 499) and r.range and r.started >= seek_time
        ]

    deadline = time.monotonic() + 60
    while not any(size // 2 < start < size for start in seek_starts()):
        assert time.monotonic() < deadline, (seek_time, size, recorder.media())
        time.sleep(0.1)
    served = recorder.media()
    total = sum(r.sent for r in served)
    # The seek skipped part of the file: some bytes before where it landed were never sent.
    # (How far Chrome reads ahead before it seeks depends on the machine's load.)
    landed = min(start for start in seek_starts() if size // 2 < start)
    before = covered(served, landed)
    report_figure(
        f"browser {tag} seek to 75%: {total} of {size} bytes sent ({total / size:.1%}), "
        f"{before} of the {landed} before the seek"
    )
    assert before < landed, served


def test_upload_through_the_form(
    page: Any, site: tuple[LiveServer, Recorder], tmp_path: Path
) -> None:
    server, _ = site
    upload = tmp_path / "notes.txt"
    upload.write_text("uploaded from the page\n")
    open_page(page, server)
    page.fill("#upload-token", "t0k")
    page.set_input_files("#upload-files", str(upload))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("tr[data-filename='notes.txt']", timeout=15000)
    assert requests.get(server.url("/fs/notes.txt"), timeout=10).text == "uploaded from the page\n"
    wrong = page.locator("#upload-status")
    page.fill("#upload-token", "wrong")
    page.set_input_files("#upload-files", str(upload))
    page.click("#upload-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('upload-status').textContent.includes('403')"
    )
    assert "refused" in wrong.text_content()


def test_filter_by_prefix(page: Any, site: tuple[LiveServer, Recorder]) -> None:
    server, _ = site
    open_page(page, server)
    page.fill("#prefix", "music/")
    page.wait_for_function("() => document.querySelectorAll('#files tbody tr').length === 1")
    assert page.locator("#files tbody tr").get_attribute("data-filename") == "music/voice.opus"


def test_denied_listing_is_a_clear_message(
    page: Any, serve: Callable[..., LiveServer], put_file: PutFile
) -> None:
    put_file("secret.webm", b"x")
    server = serve(ui=True, acl=default_acl(signing_key="k", require_signed_reads=True))
    open_page(page, server)
    assert "not allowed to list" in page.locator("#message").text_content()


def test_signed_urls_when_reads_need_them(
    page: Any, serve: Callable[..., LiveServer], put_file: PutFile, media: dict[str, bytes]
) -> None:
    put_file("videos/clip.webm", media["videos/clip.webm"], chunk_size=255 * 1024)

    def listing_only(request: Any, action: str, target: Any) -> bool:
        return action == "list"

    server = serve(ui=True, acl=AnyOf(listing_only, SignedURLs("k3y")), signing_key="k3y")
    assert requests.get(server.url("/fs/videos/clip.webm"), timeout=10).status_code == 401
    open_page(page, server)
    play_and_seek(page, "videos/clip.webm", "video")
