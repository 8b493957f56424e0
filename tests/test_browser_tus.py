"""The media page's resumable uploads in headless Chromium: tus-js-client (the vendored bundle)
against gridserve's tus endpoint.

- The daemon is killed (SIGKILL, every process of it) while the page sends a file of tens of
  MiB, then started again on the same port and storage: the page goes on by itself from the
  offset the server kept (its first PATCH after the restart carries ``Upload-Offset`` > 0) and
  the stored file's sha256 is the file's. On local storage, and on GridFS with
  ``--processes 2``.
- Pause stops the server's offset, Resume goes on; after a page reload, choosing the same file
  again resumes the earlier upload (tus-js-client's fingerprint in localStorage): no new upload
  is created and nothing is sent twice.
- Several files at once (an empty one among them) go one after the other into the folder the
  filter shows.
- From another origin (``--cors-origin``): a page there uploads with tus-js-client, pauses and
  resumes, which needs the preflights and the exposed ``Location``/``Upload-Offset`` headers.

The browser's upload rate is capped (Chromium's network emulation) so that each phase happens
mid-upload; what the tests assert is read from the requests the browser made and from the
stored bytes, never from timing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

import gridserve
from gridserve.acl import default_acl
from gridserve.uploads import UploadPolicy
from tests.conftest import report_figure, upload_data
from tests.dbserver import free_port
from tests.livehttp import LiveServer
from tests.test_browser import ARTIFACTS, browser, page  # noqa: F401
from tests.test_cli import gridserve as gridserve_command
from tests.test_cli import wait_for_http

pytestmark = pytest.mark.browser
TOKEN = "t0k"
MIB = 1024 * 1024
VENDOR = Path(gridserve.__file__).parent / "ui" / "vendor" / "tus-js-client"


@dataclass
class TusRequest:
    """One request of the browser to the tus endpoint and what became of it."""

    method: str
    url: str
    offset: int | None  # the request's Upload-Offset
    status: int | None = None  # None: no answer (the connection failed)
    answered_offset: int | None = None  # the answer's Upload-Offset


@dataclass
class TusTraffic:
    """Every request the page sent to ``.uploads``, in order, with its answer."""

    requests: list[TusRequest] = field(default_factory=list)
    _by_request: dict[int, TusRequest] = field(default_factory=dict)

    def watch(self, page: Any) -> None:  # noqa: F811
        page.on("request", self._request)
        page.on("response", self._response)

    def _request(self, request: Any) -> None:
        if "/.uploads" not in request.url or request.method == "OPTIONS":
            return
        offset = request.headers.get("upload-offset")
        seen = TusRequest(request.method, request.url, int(offset) if offset else None)
        self.requests.append(seen)
        self._by_request[id(request)] = seen

    def _response(self, response: Any) -> None:
        seen = self._by_request.get(id(response.request))
        if seen is None:
            return
        seen.status = response.status
        offset = response.headers.get("upload-offset")
        seen.answered_offset = int(offset) if offset else None

    def of(self, method: str) -> list[TusRequest]:
        return [r for r in self.requests if r.method == method]


def cap_upload_rate(page: Any, bytes_per_second: int) -> None:  # noqa: F811
    """Chromium's network emulation: what the page sends goes at this rate at most."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second,
        },
    )


def generated_file(path: Path, size: int) -> str:
    """Writes ``size`` pseudo-random bytes (incompressible, no two chunks alike) and returns
    their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        written = 0
        while written < size:
            data = (upload_data if written == 0 else os.urandom)(min(MIB, size - written))
            out.write(data)
            digest.update(data)
            written += len(data)
    return digest.hexdigest()


def open_page(page: Any, url: str) -> None:  # noqa: F811
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=15000)


def start_upload(page: Any, path: Path) -> None:  # noqa: F811
    page.fill("#upload-token", TOKEN)
    page.set_input_files("#upload-files", str(path))
    page.click("#upload-form button[type=submit]")


def progress(page: Any) -> float:  # noqa: F811
    value: float = page.evaluate("() => document.getElementById('upload-progress').value")
    return value


def wait_for_progress(page: Any, percent: float, timeout: float = 60000) -> None:  # noqa: F811
    page.wait_for_function(
        "p => document.getElementById('upload-progress').value >= p", arg=percent, timeout=timeout
    )


def wait_until_uploaded(page: Any, timeout: float = 120000) -> str:  # noqa: F811
    """Waits for the page's "Uploaded." and returns the finished file's link."""
    page.wait_for_selector("#upload-link:not([hidden])", timeout=timeout)
    assert page.locator("#upload-status").text_content() == "Uploaded."
    href: str = page.get_attribute("#upload-link", "href")
    return href


class Daemon:
    """``gridserve serve`` in a session of its own: :meth:`kill` ends every process of it at
    once (SIGKILL, as a crash or a power cut would), :meth:`start` runs it again on the same
    port with the same arguments."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.args = args
        self.log = tmp_path / "gridserve.log"
        self.access_log = tmp_path / "access.log"
        self.process: subprocess.Popen[str] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        command = gridserve_command(
            "serve", "--port", str(self.port), "--ui", "--upload-token", TOKEN,
            "--access-log", str(self.access_log), "--log-file", str(self.log), *self.args,
        )  # fmt: skip
        self.process = subprocess.Popen(
            command,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_http(self.url("/healthz"), self.process)

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=30)
        self.process = None


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def storage_of(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> list[str]:
    if kind == "local":
        (tmp_path / "media").mkdir()
        return ["--storage", str(tmp_path / "media")]
    mongo_uri: str = request.getfixturevalue("mongo_uri")
    db_name: str = request.getfixturevalue("db_name")
    return ["--storage", mongo_uri.rstrip("/") + f"/{db_name}"]


@pytest.mark.parametrize(
    ("kind", "processes"),
    [
        pytest.param("local", 1, id="local"),
        # Minutes: the killed process's lease on the upload (60 s) has to run out first.
        pytest.param("gridfs", 2, id="gridfs-2-processes", marks=pytest.mark.slow),
    ],
)
def test_the_upload_resumes_after_the_server_restarts(
    page: Any,  # noqa: F811
    daemons: list[Daemon],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    kind: str,
    processes: int,
) -> None:
    size = 40 * MIB
    source = tmp_path / "camera.bin"
    expected = generated_file(source, size)
    daemon = Daemon(tmp_path, *storage_of(kind, tmp_path, request), "--processes", str(processes))
    daemons.append(daemon)
    daemon.start()
    traffic = TusTraffic()
    traffic.watch(page)
    open_page(page, daemon.url("/"))
    cap_upload_rate(page, 6 * MIB)  # about 7 s for the whole file
    start_upload(page, source)
    # Mid-upload: at least one PATCH stored, the next one under way.
    page.wait_for_function("() => document.getElementById('upload-progress').value >= 30")
    assert any(r.status == 204 for r in traffic.of("PATCH")), traffic.requests
    daemon.kill()
    killed_at = len(traffic.requests)
    time.sleep(1.5)  # the page's retries meet a closed port meanwhile
    daemon.start()
    restarted = time.monotonic()
    href = wait_until_uploaded(page, timeout=240000)

    # The kill cut a request off, and the page went on by itself, from where the server was.
    assert any(r.status is None for r in traffic.requests[: killed_at + 1]), traffic.requests
    assert len(traffic.of("POST")) == 1, traffic.requests  # one upload, never started again
    after = [r for r in traffic.requests[killed_at:] if r.status is not None]
    # The first PATCH the restarted server took went on from the offset it answered to HEAD.
    # (Before it, GridFS answers 423 while the killed process's lease on the upload lasts.)
    resumed_at = next(i for i, r in enumerate(after) if r.method == "PATCH" and r.status == 204)
    head = next(r for r in reversed(after[:resumed_at]) if r.method == "HEAD" and r.status == 200)
    assert head.answered_offset is not None and 0 < head.answered_offset < size, after
    assert after[resumed_at].offset == head.answered_offset, after
    assert {r.status for r in after[:resumed_at]} <= {200, 423}, after
    last = traffic.of("PATCH")[-1]
    assert last.status == 204 and last.answered_offset == size
    waited = time.monotonic() - restarted
    report_figure(
        f"page tus upload ({kind}, {processes} process(es)): server killed with "
        f"{head.answered_offset / MIB:.1f} of {size / MIB:.0f} MiB stored; resumed from there "
        f"({sum(r.status == 423 for r in after)} answers 423 first); done {waited:.0f} s after "
        "the restart"
    )
    assert page.locator("#upload-link").text_content() == "camera.bin"
    for url in (href, "/fs/camera.bin"):  # the page links the file's URL (GridFS: its id)
        stored = requests.get(daemon.url(url), timeout=60)
        assert stored.status_code == 200
        assert hashlib.sha256(stored.content).hexdigest() == expected
    listing = requests.get(daemon.url("/fs/"), timeout=10).json()["files"]
    assert [f["filename"] for f in listing] == ["camera.bin"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-tus-resumed-{kind}.png"))


def server_offset(url: str) -> int:
    head = requests.head(
        url, headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert head.status_code == 200, head
    return int(head.headers["Upload-Offset"])


def settled_offset(url: str) -> int:
    """The server's offset once the PATCH that Pause cut off is stored: the server answers
    that PATCH (499) at once and goes on storing what arrived before the cut. An empty PATCH
    at the offset HEAD gives is 423 while that runs, 409 if it moved meanwhile, 204 after."""
    deadline = time.monotonic() + 30
    headers = {
        "Tus-Resumable": "1.0.0",
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/offset+octet-stream",
    }
    while True:
        offset = server_offset(url)
        probe = requests.patch(
            url, data=b"", headers={**headers, "Upload-Offset": str(offset)}, timeout=10
        )
        if probe.status_code == 204:
            assert int(probe.headers["Upload-Offset"]) == offset
            return offset
        assert probe.status_code in (409, 423), probe
        assert time.monotonic() < deadline, "the cut PATCH is never stored"
        time.sleep(0.2)


def stored_upload_url(page: Any) -> str:  # noqa: F811
    """The upload's URL tus-js-client keeps in localStorage for resuming it."""
    urls: list[str] = page.evaluate(
        "() => Object.keys(localStorage).filter(k => k.startsWith('tus::'))"
        ".map(k => JSON.parse(localStorage.getItem(k)).uploadUrl)"
    )
    assert len(urls) == 1, urls
    return urls[0]


def test_pause_resume_and_resuming_after_a_reload(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    size = 12 * MIB
    source = tmp_path / "talk.bin"
    expected = generated_file(source, size)
    server = serve(ui=True, ui_uploads=True, acl=default_acl(upload_token=TOKEN))
    traffic = TusTraffic()
    traffic.watch(page)
    open_page(page, server.url("/"))
    cap_upload_rate(page, 4 * MIB)
    start_upload(page, source)
    wait_for_progress(page, 10)
    submit = page.locator("#upload-form button[type=submit]")
    assert submit.is_disabled()  # one upload at a time
    page.click("#upload-pause")
    assert page.locator("#upload-resume").is_visible()
    assert not page.locator("#upload-pause").is_visible()
    assert submit.is_enabled()
    url = server.url(stored_upload_url(page))
    paused = settled_offset(url)
    page.wait_for_timeout(1000)  # room for bytes sent after Pause to show (none may)
    assert server_offset(url) == paused < size
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-tus-paused.png"))
    page.click("#upload-resume")
    wait_for_progress(page, 60)
    page.click("#upload-pause")
    before_reload = settled_offset(url)
    assert before_reload > paused
    sent_before = len(traffic.requests)

    page.reload()  # the page forgets everything but what tus-js-client kept in localStorage
    page.wait_for_selector("body[data-ready=true]", timeout=15000)
    page.set_input_files("#upload-files", str(source))  # the token stays for the session
    page.click("#upload-form button[type=submit]")
    assert "Resuming talk.bin" in page.locator("#upload-status").text_content()
    href = wait_until_uploaded(page)
    after = traffic.requests[sent_before:]
    assert [r.method for r in after if r.method == "POST"] == []  # no new upload
    first_patch = next(r for r in after if r.method == "PATCH")
    assert first_patch.offset == before_reload > 0
    assert page.locator("#upload-link").text_content() == "talk.bin"
    for url in (href, "/fs/talk.bin"):
        stored = requests.get(server.url(url), timeout=30)
        assert hashlib.sha256(stored.content).hexdigest() == expected
    # Finished: tus-js-client forgot the upload, so the same file again is a new upload.
    assert page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('tus::'))") == []
    page.wait_for_selector("tr[data-filename='talk.bin']", timeout=15000)


CROSS_ORIGIN_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>another site</title>
<script src="/tus.min.js"></script>
<script>
// A page of another site uploading into gridserve with tus-js-client: it creates an upload,
// stops after the first PATCH, then finds it again (HEAD) and finishes it.
window.upload = (endpoint, token, size) => new Promise((resolve, reject) => {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 8)) & 255;
  const file = new Blob([data], { type: "application/octet-stream" });
  const options = (extra) => Object.assign({
    endpoint,
    chunkSize: 1024 * 1024,
    retryDelays: [0, 500, 1000],
    headers: { Authorization: "Bearer " + token },
    metadata: { filename: "from-elsewhere.bin", filetype: "application/octet-stream" },
    fingerprint: () => Promise.resolve("cross-origin-test"),
    onError: (error) => reject(String(error)),
  }, extra);
  let stopped = false;
  const first = new tus.Upload(file, options({
    onChunkComplete: () => {
      if (stopped) return;
      stopped = true;
      first.abort().then(() => {
        const again = new tus.Upload(file, options({
          onSuccess: (payload) => resolve({
            url: again.url,
            location: payload.lastResponse.getHeader("Content-Location"),
          }),
        }));
        again.findPreviousUploads().then((previous) => {
          if (previous.length !== 1) { reject("no previous upload found"); return; }
          again.resumeFromPreviousUpload(previous[0]);
          again.start();
        });
      });
    },
  }));
  first.start();
});
</script>
"""


def test_tus_js_client_from_another_origin(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "index.html").write_text(CROSS_ORIGIN_PAGE)
    (site_dir / "tus.min.js").write_bytes((VENDOR / "tus.min.js").read_bytes())

    class Site(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site_dir), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        origin = f"http://localhost:{site.server_port}"  # another host and port: another origin
        server = serve(acl=default_acl(upload_token=TOKEN), cors_origin=origin)
        traffic = TusTraffic()
        traffic.watch(page)
        page.goto(f"{origin}/")
        size = 3 * MIB + 12345
        result = page.evaluate(
            "([endpoint, token, size]) => window.upload(endpoint, token, size)",
            [server.url("/fs/.uploads/"), TOKEN, size],
        )
    finally:
        site.shutdown()
        site.server_close()
    # The file's URL (on GridFS, by its id), as the page links it.
    assert result["location"].startswith("/fs/")
    assert result["url"].startswith(server.url("/fs/.uploads/"))
    posts, heads = traffic.of("POST"), traffic.of("HEAD")
    assert len(posts) == 1 and posts[0].status == 201
    assert len(heads) == 1 and heads[0].status == 200
    assert heads[0].answered_offset is not None and heads[0].answered_offset >= MIB
    expected = bytes((i * 7 + (i >> 8)) & 255 for i in range(size))
    for url in ("/fs/from-elsewhere.bin", result["location"]):
        stored = requests.get(server.url(url), timeout=30).content
        assert hashlib.sha256(stored).digest() == hashlib.sha256(expected).digest()


def test_several_files_into_the_filtered_folder(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    """The form's files go one after the other, each its own upload named in the folder the
    filter shows (as the multipart form did). An empty file is a creation only (tus-js-client
    sends no PATCH): it is a file as well."""
    files = {
        "a.txt": b"first file\n",
        "b.webm": b"\x1aE\xdf\xa3" + b"\0" * 300_000,
        "empty.txt": b"",
    }
    server, traffic = upload_through_the_folder_filter(page, serve, tmp_path, files)
    assert page.locator("#upload-link").text_content() == "docs/empty.txt"
    href = page.get_attribute("#upload-link", "href")
    assert requests.get(server.url(href), timeout=10).status_code == 200
    page.wait_for_function("() => document.querySelectorAll('#files tbody tr').length === 3")
    for name, data in files.items():
        assert requests.get(server.url(f"/fs/docs/{name}"), timeout=10).content == data
    assert len(traffic.of("POST")) == 3
    assert {r.status for r in traffic.requests} <= {201, 204}, traffic.requests


def upload_through_the_folder_filter(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
    tmp_path: Path,
    files: dict[str, bytes],
) -> tuple[LiveServer, TusTraffic]:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server = serve(ui=True, ui_uploads=True, acl=default_acl(upload_token=TOKEN))
    traffic = TusTraffic()
    traffic.watch(page)
    open_page(page, server.url("/"))
    page.fill("#prefix", "docs/")
    page.wait_for_timeout(400)  # the filter applies after a pause in typing
    page.fill("#upload-token", TOKEN)
    page.set_input_files("#upload-files", [str(tmp_path / name) for name in files])
    page.click("#upload-form button[type=submit]")
    wait_until_uploaded(page)
    return server, traffic


def test_a_refusal_is_final_and_says_why(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    """A name that exists (``on_conflict="reject"``) is refused at creation with 409: the page
    says so at once, without retrying it for minutes as a PATCH's 409 would be."""
    source = tmp_path / "notes.txt"
    source.write_bytes(b"once\n")
    server = serve(
        ui=True,
        ui_uploads=True,
        acl=default_acl(upload_token=TOKEN),
        upload_policy=UploadPolicy(on_conflict="reject"),
    )
    traffic = TusTraffic()
    traffic.watch(page)
    open_page(page, server.url("/"))
    start_upload(page, source)
    wait_until_uploaded(page)
    page.set_input_files("#upload-files", str(source))
    page.click("#upload-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('upload-status').textContent.startsWith('Upload refused')",
        timeout=30000,  # a retried 409 would show after minutes of retries (RETRY_DELAYS)
    )
    assert page.locator("#upload-status").text_content().startswith("Upload refused: 409")
    assert [r.status for r in traffic.of("POST")] == [201, 409]
    assert page.locator("#upload-form button[type=submit]").is_enabled()
    assert not page.locator("#upload-resume").is_visible()
    assert requests.get(server.url("/fs/notes.txt"), timeout=10).content == b"once\n"
