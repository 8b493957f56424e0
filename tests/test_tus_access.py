"""tus over real HTTP: who may (the ACL at every request, an upload's owner), cross-origin
clients, concurrent PATCHes and clients that leave mid-PATCH; on every storage that takes
resumable uploads."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import requests

from tests.livehttp import LiveServer
from tests.tuslive import (
    ALICE,
    BOB,
    MP4,
    OCTETS,
    TUS,
    Users,
    backend,
    create,
    created,
    head,
    patch,
    server,
    start,
    users,
)

__all__ = ["backend", "server", "start", "users"]


# -- who may ----------------------------------------------------------------------------------


def test_another_credential_gets_the_404_of_an_unknown_id(server: LiveServer) -> None:
    url = created(server, name="alice.mp4")
    assert patch(url, 0, MP4[:1000]).status_code == 204
    unknown = url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB")
    for target in (url, unknown):
        assert head(target, user=BOB).status_code == 404
        assert patch(target, 1000, MP4[1000:2000], user=BOB).status_code == 404
        gone = requests.delete(target, headers={**TUS, **BOB}, timeout=30)
        assert gone.status_code == 404
    assert head(url).headers["Upload-Offset"] == "1000"  # bob changed nothing


def test_acl_is_asked_at_creation_and_every_request(server: LiveServer, users: Users) -> None:
    assert create(server, user={}).status_code == 401
    assert create(server, user={"Authorization": "Bearer mallory"}).status_code == 403
    assert create(server, name="private/a.mp4").status_code == 403
    url = created(server, name="mine.mp4")
    assert ("alice", "mine.mp4") in users.asked
    # Without credentials, a known and an unknown upload are refused alike (no oracle).
    assert head(url, user={}).status_code == 401
    assert head(url[:-4] + "AAAA", user={}).status_code == 401
    users.revoked.add("alice")
    assert head(url).status_code == 403
    assert patch(url, 0, MP4[:10]).status_code == 403
    users.revoked.clear()
    assert head(url).headers["Upload-Offset"] == "0"


def test_uploads_is_not_a_file_namespace(server: LiveServer) -> None:
    base = server.url("/fs/.uploads/")
    assert requests.put(base + "x", headers=ALICE, data=b"x", timeout=30).status_code == 405
    assert requests.get(base + "x", timeout=30).status_code == 405
    assert requests.get(base, timeout=30).status_code == 405
    assert requests.post(base + "x", headers={**TUS, **ALICE}, timeout=30).status_code == 405
    no_slash = requests.put(server.url("/fs/.uploads"), headers=ALICE, data=b"x", timeout=30)
    assert no_slash.status_code == 405


def test_cors_for_tus_clients(start: Callable[..., LiveServer]) -> None:
    server = start(cors_origin="https://app.example")
    origin = {"Origin": "https://app.example"}
    preflight = requests.options(
        server.url("/fs/.uploads/x"),
        headers={**origin, "Access-Control-Request-Method": "PATCH"},
        timeout=30,
    )
    assert preflight.status_code == 204
    methods = preflight.headers["Access-Control-Allow-Methods"]
    assert {"POST", "PATCH", "HEAD", "DELETE"} <= {m.strip() for m in methods.split(",")}
    allowed = {
        h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")
    }
    for name in ("tus-resumable", "upload-length", "upload-offset", "upload-metadata"):
        assert name in allowed
    for name in ("upload-defer-length", "upload-checksum", "authorization", "content-type"):
        assert name in allowed
    answer = create(server, Origin="https://app.example")
    assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example"
    exposed = {h.strip() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
    for name in ("Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Tus-Version"):
        assert name in exposed


# -- concurrency and clients that leave -------------------------------------------------------


def slow_body(data: bytes, started: threading.Event, release: threading.Event) -> Iterator[bytes]:
    yield data[:1000]
    started.set()
    release.wait(20)
    yield data[1000:]


def test_concurrent_patch_is_423(server: LiveServer) -> None:
    url = created(server, name="race.mp4")
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, int] = {}

    def first() -> None:
        headers = {**TUS, **ALICE, **OCTETS, "Upload-Offset": "0"}
        answer = requests.patch(
            url, headers=headers, data=slow_body(MP4, started, release), timeout=60
        )
        outcome["first"] = answer.status_code

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(20)
        # The client has sent its first bytes; once the server has the request, give it a
        # second to take the upload (a loaded machine is slow to get that far).
        deadline = time.monotonic() + 20
        while server.in_flight() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        second = patch(url, 0, MP4[:10])
        assert second.status_code == 423, second.text
        terminate = requests.delete(url, headers={**TUS, **ALICE}, timeout=30)
        assert terminate.status_code == 423, terminate.text
    finally:
        release.set()
        thread.join(60)
    assert outcome["first"] == 204
    assert requests.get(server.url("/fs/race.mp4"), timeout=30).content == MP4


def test_client_gone_mid_patch_keeps_what_arrived(server: LiveServer) -> None:
    url = created(server, name="dropped.mp4")
    path = url.split(str(server.port), 1)[1]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            (
                f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                "Authorization: Bearer alice\r\n"
                "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                f"Content-Length: {len(MP4)}\r\n\r\n"
            ).encode()
            + MP4[:50000]
        )
        time.sleep(0.5)
    offset = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = head(url)
        if state.status_code == 200 and int(state.headers["Upload-Offset"]) > 0:
            offset = int(state.headers["Upload-Offset"])
            break
        time.sleep(0.2)
    assert 0 < offset <= 50000
    assert patch(url, offset, MP4[offset:]).status_code == 204
    assert requests.get(server.url("/fs/dropped.mp4"), timeout=30).content == MP4
