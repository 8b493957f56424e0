"""Uploads, deletes, listings and the ACL over real sockets, on every backend."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from tornado.httputil import HTTPServerRequest

from gridserve.acl import AnyOf, default_acl, sign_path
from gridserve.storage.base import FileInfo
from gridserve.uploads import AUDIO, VIDEO, Only, UploadPolicy
from tests.conftest import BACKENDS
from tests.livehttp import LiveServer

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

TOKEN = "upload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBM = b"\x1aE\xdf\xa3" + os.urandom(300_000)  # EBML magic: sniffs as video/webm


def eventually(check: Callable[[], None], timeout: float = 10) -> None:
    """Retries ``check`` until it passes (cleanup after a disconnect runs asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def writable(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(acl=default_acl(upload_token=TOKEN))


def put(server: LiveServer, name: str, body: Any, **headers: str) -> requests.Response:
    return requests.put(
        server.url(f"/fs/{name}"), data=body, headers={**AUTH, **headers}, timeout=30
    )


# -- PUT ----------------------------------------------------------------------------------


def test_put_stores_and_describes_the_file(writable: LiveServer) -> None:
    response = put(writable, "show/ep1.webm", WEBM, **{"Content-Type": "video/webm"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["filename"] == "show/ep1.webm"
    assert body["length"] == len(WEBM)
    assert body["contentType"] == "video/webm"
    assert body["md5"] == hashlib.md5(WEBM, usedforsecurity=False).hexdigest()
    assert body["sha256"] == hashlib.sha256(WEBM).hexdigest()
    assert response.headers["Location"] == body["url"]
    fetched = requests.get(writable.url(body["url"]), timeout=10)
    assert fetched.content == WEBM
    assert fetched.headers["ETag"] == f'"{body["md5"]}"'  # the ETag is the stored MD5
    assert fetched.headers["Content-Type"] == "video/webm"


def test_put_streams_a_chunked_body(writable: LiveServer) -> None:
    def pieces() -> Iterator[bytes]:
        for i in range(0, len(WEBM), 10_000):
            yield WEBM[i : i + 10_000]

    response = put(writable, "chunked.webm", pieces())
    assert response.status_code == 201
    assert requests.get(writable.url("/fs/chunked.webm"), timeout=10).content == WEBM


def test_html_declared_as_png_is_not_served_as_png(writable: LiveServer) -> None:
    html = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
    policy_free = put(writable, "cat.txt", html, **{"Content-Type": "image/png"})
    # The default policy refuses active content outright ...
    assert policy_free.status_code == 415
    # ... and where it is allowed, it is stored as what it is and served sandboxed.


def test_active_content_is_labelled_truthfully_when_allowed(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve(
        acl=default_acl(upload_token=TOKEN), upload_policy=UploadPolicy(types=Only(VIDEO + AUDIO))
    )
    assert put(server, "x.png", b"\x89PNG\r\n\x1a\n" + bytes(100)).status_code == 415
    assert put(server, "x.webm", WEBM).status_code == 201


def test_writes_need_the_token(writable: LiveServer, serve: Callable[..., LiveServer]) -> None:
    anonymous = requests.put(writable.url("/fs/a.webm"), data=WEBM, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.put(
        writable.url("/fs/a.webm"), data=WEBM, headers={"Authorization": "Bearer no"}, timeout=10
    )
    assert wrong.status_code == 403
    closed = serve()  # no token, no custom ACL: every write is refused
    assert requests.put(closed.url("/fs/a.webm"), data=WEBM, timeout=10).status_code == 401
    assert put(closed, "a.webm", WEBM).status_code == 403


@pytest.mark.parametrize("name", ["a%01b.webm", "..%2Fescape.webm", ".hidden", "a//b.webm"])
def test_bad_names_are_400(
    writable: LiveServer, name: str, nothing_left: Callable[[], None]
) -> None:
    assert put(writable, name, WEBM).status_code == 400
    nothing_left()


def test_size_limit_from_content_length_and_mid_stream(
    serve: Callable[..., LiveServer], nothing_left: Callable[[], None]
) -> None:
    server = serve(
        acl=default_acl(upload_token=TOKEN), upload_policy=UploadPolicy(max_size=100_000)
    )
    declared = put(server, "big.webm", WEBM)
    assert declared.status_code == 413

    def pieces() -> Iterator[bytes]:  # chunked: no Content-Length to judge by
        for i in range(0, len(WEBM), 16_384):
            yield WEBM[i : i + 16_384]

    try:
        streamed = put(server, "big.webm", pieces())
        assert streamed.status_code == 413
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        pass  # the server may close while the client is still sending; it must not store
    eventually(nothing_left)
    assert put(server, "small.webm", WEBM[:50_000]).status_code == 201


def test_client_disconnect_mid_body_leaves_nothing(
    writable: LiveServer, nothing_left: Callable[[], None]
) -> None:
    with socket.create_connection(("127.0.0.1", writable.port), timeout=10) as sock:
        sock.sendall(
            f"PUT /fs/cut.webm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(WEBM)}\r\n\r\n".encode()
        )
        sock.sendall(WEBM[:150_000])
        time.sleep(0.3)
    eventually(nothing_left)
    assert requests.get(writable.url("/fs/cut.webm"), timeout=10).status_code == 404


@pytest.mark.parametrize("policy", ["reject", "rename", "revision"])
def test_name_conflicts(serve: Callable[..., LiveServer], policy: str, backend: str) -> None:
    server = serve(
        acl=default_acl(upload_token=TOKEN),
        upload_policy=UploadPolicy(on_conflict=policy),  # type: ignore[arg-type]
    )
    assert put(server, "a.webm", WEBM[:1000]).status_code == 201
    second = put(server, "a.webm", WEBM[:2000])
    if policy == "reject":
        assert second.status_code == 409
        assert len(requests.get(server.url("/fs/a.webm"), timeout=10).content) == 1000
    elif policy == "rename":
        assert second.status_code == 201
        assert second.json()["filename"] == "a (2).webm"
        assert len(requests.get(server.url("/fs/a%20(2).webm"), timeout=10).content) == 2000
    else:
        assert second.status_code == 201
        assert len(requests.get(server.url("/fs/a.webm"), timeout=10).content) == 2000
        oldest = requests.get(server.url("/fs/a.webm?rev=0"), timeout=10).content
        assert len(oldest) == (1000 if backend == "gridfs" else 2000)


# -- POST multipart ---------------------------------------------------------------------------


def test_post_multipart_stores_every_file_field(writable: LiveServer) -> None:
    files: list[tuple[str, Any]] = [
        ("file", ("one.webm", WEBM[:5000], "video/webm")),
        ("file", ("../../two.webm", WEBM[:7000], "application/octet-stream")),
        ("comment", (None, b"not a file")),
    ]
    response = requests.post(writable.url("/fs/uploads/"), files=files, headers=AUTH, timeout=30)
    assert response.status_code == 201, response.text
    stored = response.json()["files"]
    assert [f["filename"] for f in stored] == ["uploads/one.webm", "uploads/two.webm"]
    assert [f["length"] for f in stored] == [5000, 7000]
    assert requests.get(writable.url("/fs/uploads/two.webm"), timeout=10).content == WEBM[:7000]


def test_post_without_a_file_or_malformed_is_400(
    writable: LiveServer, nothing_left: Callable[[], None]
) -> None:
    no_file = requests.post(
        writable.url("/fs/"), files=[("comment", (None, b"x"))], headers=AUTH, timeout=10
    )
    assert no_file.status_code == 400
    raw = requests.post(
        writable.url("/fs/"),
        data=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.webm"\r\n\r\nabc',
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
        timeout=10,
    )
    assert raw.status_code == 400  # truncated: no closing boundary
    not_multipart = requests.post(writable.url("/fs/"), data=b"x", headers=AUTH, timeout=10)
    assert not_multipart.status_code == 400
    eventually(nothing_left)


def test_a_rejected_file_takes_back_the_whole_form(
    writable: LiveServer, nothing_left: Callable[[], None]
) -> None:
    files: list[tuple[str, Any]] = [
        ("file", ("ok.webm", WEBM[:5000], "video/webm")),
        ("file", ("evil.sh", b"#!/bin/sh\nrm -rf /\n", "video/webm")),
    ]
    response = requests.post(writable.url("/fs/"), files=files, headers=AUTH, timeout=30)
    assert response.status_code == 415
    eventually(nothing_left)


# -- DELETE and listing -------------------------------------------------------------------


def test_delete(writable: LiveServer, nothing_left: Callable[[], None]) -> None:
    url = put(writable, "gone.webm", WEBM).json()["url"]
    assert requests.delete(writable.url(url), timeout=10).status_code == 401
    deleted = requests.delete(writable.url(url), headers=AUTH, timeout=10)
    assert deleted.status_code == 200
    assert [file["url"] for file in deleted.json()["deleted"]] == [url]
    assert requests.get(writable.url(url), timeout=10).status_code == 404
    assert requests.delete(writable.url(url), headers=AUTH, timeout=10).status_code == 404
    nothing_left()


def test_listing_with_prefix_and_paging(writable: LiveServer) -> None:
    for name in ("a/1.webm", "a/2.webm", "a/3.webm", "b/1.webm"):
        assert put(writable, name, WEBM[:100]).status_code == 201
    page = requests.get(writable.url("/fs/a/?limit=2"), timeout=10)
    assert page.status_code == 200
    listing = page.json()
    assert [f["filename"] for f in listing["files"]] == ["a/1.webm", "a/2.webm"]
    assert listing["next"] == "a/2.webm"
    rest = requests.get(writable.url(f"/fs/a/?limit=2&after={listing['next']}"), timeout=10).json()
    assert [f["filename"] for f in rest["files"]] == ["a/3.webm"]
    assert rest["next"] is None
    everything = requests.get(writable.url("/fs/"), timeout=10).json()["files"]
    assert len(everything) == 4
    assert requests.get(writable.url("/fs/?limit=0"), timeout=10).status_code == 400


# -- ACL hook ------------------------------------------------------------------------------


def test_signed_reads(serve: Callable[..., LiveServer], put_file: Any) -> None:
    put_file("private/movie.webm", WEBM)
    server = serve(acl=default_acl(signing_key="k3y", require_signed_reads=True))
    assert requests.get(server.url("/fs/private/movie.webm"), timeout=10).status_code == 401
    signed = sign_path("k3y", "/fs/private/movie.webm", 60)
    ok = requests.get(server.url(signed), headers={"Range": "bytes=0-9"}, timeout=10)
    assert ok.status_code == 206 and ok.content == WEBM[:10]
    assert requests.head(server.url(signed), timeout=10).status_code == 200
    expired = sign_path("k3y", "/fs/private/movie.webm", 60, now=time.time() - 120)
    assert requests.get(server.url(expired), timeout=10).status_code == 403
    forged = signed.replace("movie", "other")
    assert requests.get(server.url(forged), timeout=10).status_code in (403, 404)


def test_custom_acl_reads_per_file_metadata(
    serve: Callable[..., LiveServer], put_file: Any
) -> None:
    put_file("ann/public.webm", WEBM[:100], metadata={"owner": "ann", "public": True})
    put_file("ann/private.webm", WEBM[:100], metadata={"owner": "ann"})
    calls: list[str] = []

    async def owner_or_public(request: HTTPServerRequest, action: str, target: Any) -> bool:
        calls.append(action)
        await asyncio.sleep(0)
        user = request.headers.get("X-User")
        if action == "read" and isinstance(target, FileInfo):
            return bool(target.metadata.get("public")) or target.metadata.get("owner") == user
        return False

    server = serve(acl=AnyOf(owner_or_public))
    assert requests.get(server.url("/fs/ann/public.webm"), timeout=10).status_code == 200
    private = server.url("/fs/ann/private.webm")
    assert requests.get(private, timeout=10).status_code == 401
    assert requests.get(private, headers={"Authorization": "x"}, timeout=10).status_code == 403
    assert requests.get(private, headers={"X-User": "ann"}, timeout=10).status_code == 200
    assert requests.get(private, headers={"X-User": "bob"}, timeout=10).status_code == 401
    assert json.dumps(calls).count("read") == len(calls)
