"""The streaming handler over real sockets, against every storage backend.

GridFS-specific behaviour (stored MD5, revisions, damaged chunks, Motor) is in
test_stream_gridfs.py.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest
import requests
from bson import ObjectId

from tests.conftest import BACKENDS, PutFile
from tests.livehttp import LiveServer
from tests.multipart import parse_byteranges

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

DATA = os.urandom(100_000)  # 7 chunks of 16 KiB (the last one short)
HTTP_DATE = "%a, %d %b %Y %H:%M:%S GMT"


@pytest.fixture
def video(put_file: PutFile) -> Any:
    return put_file("show/ep1/clip.webm", DATA)


def get(server: LiveServer, path: str, **headers: str) -> requests.Response:
    return requests.get(server.url(path), headers=headers, timeout=10)


# -- lookup -------------------------------------------------------------------------------


def test_by_object_id_and_by_name(server: LiveServer, video: ObjectId) -> None:
    by_id = get(server, f"/fs/{video}")
    by_name = get(server, "/fs/show/ep1/clip.webm")
    assert by_id.status_code == by_name.status_code == 200
    assert by_id.content == by_name.content == DATA
    assert by_id.headers["Content-Length"] == str(len(DATA))
    assert by_id.headers["Content-Type"] == "video/webm"


def test_unicode_and_encoded_names(server: LiveServer, put_file: PutFile) -> None:
    name = "música/Motörhead – Ace of Spades #1 ?.mp3"
    put_file(name, b"ace")
    response = get(server, "/fs/" + quote(name))
    assert response.status_code == 200
    assert response.content == b"ace"
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert "filename*=UTF-8''Mot%C3%B6rhead" in response.headers["Content-Disposition"]


def test_hex_filename_that_is_no_id_is_found_by_name(server: LiveServer, put_file: PutFile) -> None:
    name = "a" * 24
    put_file(name, b"by name")
    assert get(server, f"/fs/{name}").content == b"by name"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/fs/nope.webm", 404),
        ("/fs/0123456789abcdef01234567", 404),  # a valid ObjectId nobody has
        ("/fs/abc%00def", 400),  # NUL byte
        ("/fs/%ff%fe", 400),  # not UTF-8
        ("/fs/" + "x" * 2000, 400),  # longer than any key
        ("/fs/%zz", 404),  # invalid percent-encoding stays literal
        ("/fs/../../etc/passwd", 404),
    ],
)
def test_bad_keys_are_clean_4xx(server: LiveServer, path: str, status: int) -> None:
    response = get(server, path)
    assert response.status_code == status
    assert "Traceback" not in response.text
    assert get(server, "/fs/nope").status_code == 404  # still up


def test_unknown_methods_get_405_with_allow(server: LiveServer, video: ObjectId) -> None:
    response = requests.request("PATCH", server.url(f"/fs/{video}"), timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, PUT, POST, DELETE, OPTIONS"


# -- GET / HEAD ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, len(DATA) - 1),
        ("bytes=-500", len(DATA) - 500, len(DATA) - 1),
        ("bytes=99000-200000", 99000, len(DATA) - 1),
        ("bytes=0-1", 0, 1),
        ("bytes=16383-16384", 16383, 16384),  # across a chunk boundary
        ("bytes=16384-32767", 16384, 32767),  # exactly one chunk
        ("bytes=-1", len(DATA) - 1, len(DATA) - 1),
    ],
)
def test_single_ranges(
    server: LiveServer, video: ObjectId, header: str, start: int, end: int
) -> None:
    response = get(server, f"/fs/{video}", Range=header)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.headers["Content-Length"] == str(end - start + 1)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.content == DATA[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=100000-", "bytes=200000-300000", "bytes=-0"])
def test_unsatisfiable_range_is_416(server: LiveServer, video: ObjectId, header: str) -> None:
    response = get(server, f"/fs/{video}", Range=header)
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == b"416 Requested Range Not Satisfiable\n"


@pytest.mark.parametrize("header", ["bytes=9-0", "items=0-9", "bytes=abc", "garbage", "bytes="])
def test_malformed_range_is_ignored(server: LiveServer, video: ObjectId, header: str) -> None:
    response = get(server, f"/fs/{video}", Range=header)
    assert response.status_code == 200
    assert response.content == DATA


def test_zero_length_file(server: LiveServer, put_file: PutFile) -> None:
    put_file("empty.txt", b"")
    for headers in ({}, {"Range": "bytes=0-"}, {"Range": "bytes=-10"}):
        response = get(server, "/fs/empty.txt", **headers)
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["Content-Length"] == "0"


def test_multiple_ranges_are_multipart(server: LiveServer, video: ObjectId) -> None:
    response = get(server, f"/fs/{video}", Range="bytes=0-99,50000-50099,99990-")
    assert response.status_code == 206
    assert response.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert parse_byteranges(response.headers["Content-Type"], response.content) == [
        ("video/webm", f"bytes 0-99/{len(DATA)}", DATA[:100]),
        ("video/webm", f"bytes 50000-50099/{len(DATA)}", DATA[50000:50100]),
        ("video/webm", f"bytes 99990-99999/{len(DATA)}", DATA[99990:]),
    ]


# -- validators and conditional requests ---------------------------------------------------


def test_conditional_requests(server: LiveServer, video: ObjectId) -> None:
    first = get(server, f"/fs/{video}")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    path = f"/fs/{video}"

    not_modified = get(server, path, **{"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["ETag"] == etag
    assert get(server, path, **{"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert get(server, path, **{"If-None-Match": "*"}).status_code == 304
    assert get(server, path, **{"If-None-Match": '"other"'}).status_code == 200
    assert get(server, path, **{"If-Modified-Since": modified}).status_code == 304
    assert get(server, path, **{"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).ok

    assert get(server, path, **{"If-Match": '"other"'}).status_code == 412
    assert get(server, path, **{"If-Match": etag}).status_code == 200
    assert get(server, path, **{"If-Match": "*"}).status_code == 200
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert get(server, path, **{"If-Unmodified-Since": old}).status_code == 412
    assert get(server, path, **{"If-Unmodified-Since": modified}).status_code == 200
    # 412 is decided before 304 (RFC 9110 §13.2.2).
    assert get(server, path, **{"If-Match": '"other"', "If-None-Match": etag}).status_code == 412


def test_if_range(server: LiveServer, video: ObjectId) -> None:
    first = get(server, f"/fs/{video}")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    path = f"/fs/{video}"
    assert get(server, path, Range="bytes=0-9", **{"If-Range": etag}).status_code == 206
    assert get(server, path, Range="bytes=0-9", **{"If-Range": modified}).status_code == 206
    stale = get(server, path, Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert stale.status_code == 200
    assert stale.content == DATA
    weak = get(server, path, Range="bytes=0-9", **{"If-Range": f"W/{etag}"})
    assert weak.status_code == 200
    old = get(server, path, Range="bytes=0-9", **{"If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert old.status_code == 200


# -- representation headers ---------------------------------------------------------------


def test_cache_time_and_security_headers(serve: Callable[..., LiveServer], video: ObjectId) -> None:
    default = get(serve(), f"/fs/{video}")
    assert "Cache-Control" not in default.headers
    assert default.headers["X-Content-Type-Options"] == "nosniff"
    assert default.headers["Content-Disposition"] == 'inline; filename="clip.webm"'
    assert "Content-Security-Policy" not in default.headers  # video plays, never runs
    cached = get(serve(cache_time=3600), f"/fs/{video}")
    assert cached.headers["Cache-Control"] == "max-age=3600"


def test_credentialed_reads_are_private_for_shared_caches(
    serve: Callable[..., LiveServer], video: ObjectId
) -> None:
    """A shared cache (deploy/nginx-cache.conf) must never hand a signed or authorised answer to
    anyone else: every answer to such a request, 200, 206 and 304, says private."""
    server = serve(cache_time=3600)
    etag = get(server, f"/fs/{video}").headers["ETag"]
    signed = f"/fs/{video}?exp=4102444800&sig=c2lnbmF0dXJl"
    cases = [
        (signed, {}),
        (f"/fs/{video}?exp=4102444800", {}),
        (f"/fs/{video}", {"Authorization": "Bearer reader"}),
    ]
    for path, headers in cases:
        conditions = [({}, 200), ({"Range": "bytes=0-9"}, 206), ({"If-None-Match": etag}, 304)]
        for extra, status in conditions:
            answer = get(server, path, **headers, **extra)
            assert answer.status_code == status, (path, headers, extra)
            # Before: "max-age=3600" on all of them, and nginx cached them for everyone.
            assert answer.headers["Cache-Control"] == "private, max-age=3600", (path, extra)
    public = get(server, f"/fs/{video}", Range="bytes=0-9")
    assert public.headers["Cache-Control"] == "max-age=3600"
    # Without a cache time too: nginx's proxy_cache_valid would otherwise store it.
    uncached = serve()
    assert get(uncached, signed).headers["Cache-Control"] == "private"
    assert "Cache-Control" not in get(uncached, f"/fs/{video}").headers


def test_download_and_content_types(server: LiveServer, put_file: PutFile) -> None:
    put_file("page.html", b"<script>alert(1)</script>", content_type="text/html")
    put_file("seg001.ts", b"ts")
    put_file("index.m3u8", b"#EXTM3U")
    put_file("meta.bin", b"x", metadata={"contentType": "audio/flac"})
    put_file("unknown", b"x")
    put_file("bad.mp4", b"x", content_type="text/plain\r\nSet-Cookie: a=b")

    html = get(server, "/fs/page.html?download=1")
    assert html.headers["Content-Type"] == "text/html"
    assert html.headers["Content-Security-Policy"] == "sandbox"
    assert html.headers["Content-Disposition"] == 'attachment; filename="page.html"'
    assert get(server, "/fs/seg001.ts").headers["Content-Type"] == "video/mp2t"
    m3u8 = get(server, "/fs/index.m3u8").headers["Content-Type"]
    assert m3u8 == "application/vnd.apple.mpegurl"
    assert get(server, "/fs/meta.bin").headers["Content-Type"] == "audio/flac"
    assert get(server, "/fs/unknown").headers["Content-Type"] == "application/octet-stream"
    bad = get(server, "/fs/bad.mp4")
    assert bad.status_code == 200
    assert bad.headers["Content-Type"] == "video/mp4"
    assert "Set-Cookie" not in bad.headers


# -- streaming ----------------------------------------------------------------------------


def test_client_that_disconnects_mid_response(
    server: LiveServer, put_file: PutFile, caplog: pytest.LogCaptureFixture
) -> None:
    file_id = put_file("big.bin", os.urandom(2_000_000), chunk_size=64 * 1024)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(f"GET /fs/{file_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        response = get(server, f"/fs/{file_id}", Range="bytes=-10")
    assert response.status_code == 206
    # Each left request is logged as 499 (the access line Tornado logs as a warning), no more.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w for w in warnings if not w.startswith("499 GET ")] == []


def test_last_modified_is_whole_seconds(server: LiveServer, put_file: PutFile) -> None:
    file_id = put_file("t.txt", b"t")
    modified = get(server, f"/fs/{file_id}").headers["Last-Modified"]
    parsed = datetime.strptime(modified, HTTP_DATE)
    assert parsed.microsecond == 0
