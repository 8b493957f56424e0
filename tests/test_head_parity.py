"""HEAD = GET for every answer, and one rendering of errors on every route.

A corpus of requests, one for each status the server can produce for a GET, goes through GET
and HEAD on every storage, through ``make_app`` and through a user's own application mounting
:class:`~gridserve.handlers.GridFSHandler`; the status and every header (name and value) must
be the same, ``Date`` excepted (and ``Content-Length`` for ``/metrics``, whose body changes
between two requests). Every error must be ``<status> <reason>\\n`` as ``text/plain``.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import tornado.web

from gridserve.handlers import GridFSHandler
from gridserve.storage.base import Storage
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.local import LocalStorage
from gridserve.storage.s3 import S3Storage
from gridserve.uploads import UploadPolicy
from tests.conftest import BACKENDS, PutFile
from tests.livehttp import LiveServer

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

DATA = os.urandom(40_000)
UNREACHABLE = "127.0.0.1:9"  # discard: nothing listens there on the test machines


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def ask(
    server: LiveServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.reason, response.getheaders(), response.read())
    finally:
        connection.close()


def comparable(answer: Answer, path: str) -> tuple[int, list[tuple[str, str]]]:
    skip = {"date"} | ({"content-length"} if path.startswith("/metrics") else set())
    headers = sorted((k.lower(), v) for k, v in answer.headers if k.lower() not in skip)
    return answer.status, headers


def assert_plain_error(answer: Answer) -> None:
    headers = {k.lower(): v for k, v in answer.headers}
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.body == f"{answer.status} {answer.reason}\n".encode()
    assert headers["content-length"] == str(len(answer.body))


def assert_head_is_get(
    server: LiveServer, path: str, status: int, headers: dict[str, str] | None = None
) -> None:
    got = ask(server, "GET", path, headers)
    head = ask(server, "HEAD", path, headers)
    assert got.status == status, (path, got.status, got.body[:200])
    assert comparable(head, path) == comparable(got, path), path
    assert head.body == b""
    if status >= 400:
        assert_plain_error(got)
    if status not in (204, 304) and not path.startswith("/metrics"):
        assert dict(got.headers)["Content-Length"] == str(len(got.body))


def private_reads(request: Any, action: str, target: Any) -> bool:
    """Everyone reads except under ``private/``; everyone may write (for 413 and 415). A miss
    is asked with the requested name, a hit with the file."""
    name = target if isinstance(target, str) else target.filename
    return action != "read" or not name.startswith("private/")


CORPUS: list[tuple[str, dict[str, str], int]] = [
    ("/fs/clip.webm", {}, 200),
    ("/fs/clip.webm", {"Range": "bytes=0-99"}, 206),
    ("/fs/clip.webm", {"Range": "bytes=0-9,1000-1009,-5"}, 206),
    ("/fs/clip.webm", {"Range": "bytes=900000-"}, 416),
    ("/fs/clip.webm", {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, 304),
    ("/fs/clip.webm", {"If-Match": '"nope"'}, 412),
    ("/fs/clip.webm", {"If-Unmodified-Since": "Mon, 01 Jan 1990 00:00:00 GMT"}, 412),
    ("/fs/clip.webm?download=1", {}, 200),
    ("/fs/clip.webm?rev=x", {}, 400),
    ("/fs/a%00b", {}, 400),
    ("/fs/no-such-file.bin", {}, 404),
    ("/fs/private/x.bin", {}, 401),
    ("/fs/private/x.bin", {"Authorization": "Bearer nobody"}, 403),
    ("/fs/", {}, 200),
    ("/fs/show/", {}, 200),
    ("/fs/?limit=0", {}, 400),
    ("/fs/?limit=x", {}, 400),
    ("/nowhere", {}, 404),
    ("/fsx/clip.webm", {}, 404),
    ("/", {}, 200),
    ("/_ui/config.json", {}, 200),
    ("/_ui/app.js", {}, 200),
    ("/healthz", {}, 200),
    ("/readyz", {}, 200),
    ("/metrics", {}, 200),
]


@pytest.fixture
def parity_server(serve: Callable[..., LiveServer], put_file: PutFile) -> LiveServer:
    put_file("clip.webm", DATA, content_type="video/webm")
    put_file("show/a.mp3", b"a")
    put_file("private/x.bin", b"x")
    return serve(
        acl=private_reads,
        ui=True,
        upload_policy=UploadPolicy(max_size=1000),
        cors_origin="https://player.example",
    )


@pytest.mark.parametrize(("path", "headers", "status"), CORPUS)
def test_head_is_get(
    parity_server: LiveServer, path: str, headers: dict[str, str], status: int
) -> None:
    assert_head_is_get(parity_server, path, status, headers)


def test_head_is_get_by_id(parity_server: LiveServer) -> None:
    listing = ask(parity_server, "GET", "/fs/?prefix=clip")
    assert listing.status == 200
    (described,) = json.loads(listing.body)["files"]
    assert_head_is_get(parity_server, described["url"], 200)
    assert_head_is_get(parity_server, described["url"], 206, {"Range": "bytes=-1"})


def test_other_methods_render_errors_the_same_way(parity_server: LiveServer) -> None:
    for method, path, headers, body, status in [
        ("PATCH", "/fs/clip.webm", {}, b"", 405),
        ("POST", "/healthz", {}, b"", 405),
        ("DELETE", "/metrics", {}, b"", 405),
        ("POST", "/", {}, b"", 405),
        ("PUT", "/fs/big.webm", {"Content-Type": "video/webm"}, b"x" * 2000, 413),
        ("PUT", "/fs/x.html", {"Content-Type": "text/html"}, b"<html></html>", 415),
        ("DELETE", "/fs/no-such-file.bin", {}, b"", 404),
        ("POST", "/nowhere", {}, b"", 404),
    ]:
        answer = ask(parity_server, method, path, headers, body)
        assert answer.status == status, (method, path, answer.body)
        assert_plain_error(answer)
        if status == 405:
            assert "GET" in dict(answer.headers)["Allow"]


def unreachable_storage(backend: str, local_root: Any) -> Callable[[], Storage]:
    if backend == "gridfs":
        uri = f"mongodb://{UNREACHABLE}/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
        return lambda: GridFSStorage.from_uri(uri, default_database="media")
    if backend == "s3":
        return lambda: S3Storage(
            "bucket",
            endpoint_url=f"http://{UNREACHABLE}",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            region_name="us-east-1",
        )
    return lambda: LocalStorage(local_root / "gone")


def test_head_is_get_when_the_storage_is_down(backend: str, local_root: Any) -> None:
    make = unreachable_storage(backend, local_root)
    server = LiveServer(make).start()
    try:
        if backend == "local":
            shutil.rmtree(local_root / "gone")  # the root vanished: not ready
        else:
            assert_head_is_get(server, "/fs/clip.webm", 503)
            assert_head_is_get(server, "/fs/", 503)
        assert_head_is_get(server, "/readyz", 503)
        assert dict(ask(server, "GET", "/readyz").headers)["Retry-After"].isdigit()
    finally:
        server.stop()


def test_head_is_get_through_a_mounted_handler(
    make_storage: Callable[[], Storage], put_file: PutFile
) -> None:
    put_file("clip.webm", DATA, content_type="video/webm")

    def users_app(storage: Storage) -> tornado.web.Application:
        return tornado.web.Application(
            [(r"/media/(.*)", GridFSHandler, {"storage": storage, "cache_time": 60})]
        )

    server = LiveServer(make_storage, application=users_app).start()
    try:
        for path, headers, status in CORPUS:
            if path.startswith("/fs/") and not path.startswith(("/fs/private", "/fs/?")):
                if path.endswith("/"):
                    continue  # listings belong to FilesHandler
                assert_head_is_get(server, "/media/" + path[4:], status, headers)
        assert_plain_error(ask(server, "PUT", "/media/clip.webm", body=b"x"))
    finally:
        server.stop()
