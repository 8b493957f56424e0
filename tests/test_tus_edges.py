"""tus over real HTTP, the edges a review found: a name taken during an upload, a completion
left behind, owner fingerprints keyed by the signing key, limits on deferred lengths and
announced bodies, metrics. On every storage that takes resumable uploads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import requests

from gridserve.uploads import UploadPolicy
from tests.livehttp import LiveServer
from tests.test_hostile import raw_request
from tests.tuslive import (
    ALICE,
    BOB,
    MP4,
    OCTETS,
    TUS,
    backend,
    created,
    head,
    left,
    listed,
    patch,
    server,
    start,
    users,
)

__all__ = ["backend", "left", "server", "start", "users"]


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def finished_after_a_put(
    server: LiveServer, name: str, other: bytes
) -> tuple[requests.Response, str]:
    """An upload of MP4 to ``name``, a PUT of ``other`` to ``name`` between its first 1000
    bytes and the rest: the last PATCH's response and the upload's URL."""
    url = created(server, name=name)
    assert patch(url, 0, MP4[:1000]).status_code == 204
    put = requests.put(server.url(f"/fs/{name}"), headers=ALICE, data=other, timeout=30)
    assert put.status_code in (200, 201), put.text
    return patch(url, 1000, MP4[1000:]), url


def test_a_name_taken_during_the_upload_is_never_overwritten(
    start: Callable[..., LiveServer], left: Callable[[], int]
) -> None:
    server = start(upload_policy=UploadPolicy(on_conflict="reject"))
    last, url = finished_after_a_put(server, "taken.mp4", b"other")
    assert last.status_code == 409, last.text
    assert "taken.mp4" in last.reason
    assert last.headers["Tus-Resumable"] == "1.0.0"
    assert requests.get(server.url("/fs/taken.mp4"), timeout=30).content == b"other"
    assert listed(server).count("taken.mp4") == 1
    assert head(url).status_code == 404  # terminated: no upload reads as finished
    assert requests.delete(server.url("/fs/taken.mp4"), headers=ALICE, timeout=30).ok
    assert left() == 0


def test_rename_picks_a_free_name_at_completion_when_its_own_was_taken(
    start: Callable[..., LiveServer],
) -> None:
    server = start(upload_policy=UploadPolicy(on_conflict="rename"))
    last, url = finished_after_a_put(server, "show/taken.mp4", b"x")
    assert last.status_code == 204, last.text
    assert requests.get(server.url(last.headers["Content-Location"]), timeout=30).content == MP4
    assert requests.get(server.url("/fs/show/taken (2).mp4"), timeout=30).content == MP4
    assert requests.get(server.url("/fs/show/taken.mp4"), timeout=30).content == b"x"
    assert head(url).status_code == 404  # completed


def test_head_completes_an_upload_whose_completion_never_ran(server: LiveServer) -> None:
    url = created(server, name="crashed.mp4")
    assert patch(url, 0, MP4[:1000]).status_code == 204

    async def append_rest() -> None:  # what a process stopped after its last append leaves
        async def body() -> AsyncIterator[bytes]:
            yield MP4[1000:]

        await server.storage.append_upload(upload_id(url), 1000, body())

    server.run_coroutine(append_rest())
    assert requests.get(server.url("/fs/crashed.mp4"), timeout=30).status_code == 404
    resumed = head(url)  # what every client sends to resume
    assert resumed.status_code == 200, resumed.text
    assert resumed.headers["Upload-Offset"] == str(len(MP4))
    assert resumed.headers["Content-Location"].startswith("/fs/")
    assert "Upload-Expires" not in resumed.headers
    assert requests.get(server.url("/fs/crashed.mp4"), timeout=30).content == MP4


def test_owner_fingerprint_is_keyed_by_the_signing_key_and_survives_rotation(
    start: Callable[..., LiveServer],
) -> None:
    first = start(signing_key="old key")
    url = created(first, name="keyed.mp4")
    stored = first.run_coroutine(first.storage.upload_state(upload_id(url)))
    message = b"gridserve tus owner\x00Bearer alice"
    assert stored.owner != hashlib.sha256(message).hexdigest()  # no offline guessing
    assert stored.owner == hmac.new(b"old key", message, hashlib.sha256).hexdigest()
    assert head(url, user=BOB).status_code == 404
    rotated = start(signing_key=["new key", "old key"])  # the same storage, keys rotated
    moved = rotated.url("/fs/.uploads/" + upload_id(url))
    assert head(moved).status_code == 200
    assert head(moved, user=BOB).status_code == 404
    assert patch(moved, 0, MP4).status_code == 204
    assert requests.get(rotated.url("/fs/keyed.mp4"), timeout=30).content == MP4


def cut_request(server: LiveServer, request: bytes) -> None:
    """Sends ``request`` on a fresh connection and hangs up (a client cut off mid-body)."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request)
        time.sleep(0.3)


def patch_head(url: str, offset: int, length: int, *extra: str) -> bytes:
    path = "/" + url.split("/", 3)[3]
    lines = [
        f"PATCH {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Tus-Resumable: 1.0.0",
        "Authorization: Bearer alice",
        "Content-Type: application/offset+octet-stream",
        f"Upload-Offset: {offset}",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_patch_announcing_too_much_is_413_before_100_continue(server: LiveServer) -> None:
    url = created(server, name="small.mp4", length=5000)
    answer = raw_request(server.port, patch_head(url, 0, 5001, "Expect: 100-continue"))
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]  # no 100: the body is never sent
    assert b"\r\nTus-Resumable: 1.0.0\r\n" in answer
    assert head(url).headers["Upload-Offset"] == "0"


def test_a_patch_with_a_checksum_cut_short_keeps_nothing(server: LiveServer) -> None:
    url = created(server, name="summed.mp4")
    part = MP4[:20000]
    digest = base64.b64encode(hashlib.sha1(part).digest()).decode()
    request = patch_head(url, 0, len(part), f"Upload-Checksum: sha1 {digest}")
    cut_request(server, request + part[:12000])
    # The cut PATCH is answered at once and holds the upload (423) while its bytes go away.
    deadline = time.monotonic() + 30
    while (probe := patch(url, 0, b"")).status_code == 423:
        assert time.monotonic() < deadline, "the cut PATCH never let go of the upload"
        time.sleep(0.1)
    assert probe.status_code == 204, probe  # 409 if the cut PATCH had kept bytes
    assert head(url).headers["Upload-Offset"] == "0"  # unverifiable bytes are not kept
    assert patch(url, 0, MP4).status_code == 204


def test_unknown_foreign_expired_and_terminated_answer_byte_for_byte_alike(
    start: Callable[..., LiveServer],
) -> None:
    server = start(upload_expiry=2.0)
    expired = created(server, name="old.mp4")
    time.sleep(2.5)
    foreign = created(server, name="alice.mp4")
    terminated = created(server, name="gone.mp4")
    assert requests.delete(terminated, headers={**TUS, **ALICE}, timeout=30).status_code == 204
    unknown = foreign[:-4] + ("AAAA" if not foreign.endswith("AAAA") else "BBBB")
    cases = [(expired, ALICE), (foreign, BOB), (terminated, ALICE), (unknown, ALICE)]
    for method in ("HEAD", "PATCH", "DELETE"):
        answers = set()
        for url, user in cases:
            headers = {**TUS, **user, "Content-Type": "application/offset+octet-stream"}
            answer = requests.request(
                method, url, headers={**headers, "Upload-Offset": "0"}, data=b"x", timeout=30
            )
            seen = {k: v for k, v in answer.headers.items() if k != "Date"}
            answers.add(
                (answer.status_code, answer.reason, answer.content, tuple(sorted(seen.items())))
            )
        assert len(answers) == 1, (method, answers)
        status, _, _, headers_seen = answers.pop()
        assert status == 404 and ("Tus-Resumable", "1.0.0") in headers_seen


def test_an_upload_past_its_expiry_while_a_patch_appends_is_not_gone(
    start: Callable[..., LiveServer],
) -> None:
    server = start(upload_expiry=2.0)
    url = created(server, name="long.mp4")
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, int] = {}

    def slow_body() -> Iterator[bytes]:
        yield MP4[:1000]
        started.set()
        release.wait(30)
        yield MP4[1000:]

    def first() -> None:
        headers = {**TUS, **ALICE, **OCTETS, "Upload-Offset": "0"}
        outcome["first"] = requests.patch(
            url, headers=headers, data=slow_body(), timeout=60
        ).status_code

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(20)
        time.sleep(3.0)  # past the expiry stored at creation, the PATCH still appending
        assert head(url).status_code == 200  # not 404: a client would start again from zero
        assert patch(url, 0, MP4[:10]).status_code == 423
    finally:
        release.set()
        thread.join(60)
    assert outcome["first"] == 204
    assert requests.get(server.url("/fs/long.mp4"), timeout=30).content == MP4
