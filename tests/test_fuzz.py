"""Every parse of client input is total (review, "Nothing a stranger sends grows state"): a
seeded generator of requests over method, path, query, headers and multipart form fields
(part headers, file names in any bytes) against a live server on GridFS and on local disk.
No 5xx, no traceback or error in the log, memory and /metrics stay bounded, and the server
answers a plain request afterwards. Bounded in count, not in time; the seed is printed, and
``GRIDSERVE_FUZZ_SEED`` / ``GRIDSERVE_FUZZ_COUNT`` replay or lengthen a run."""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable
from urllib.parse import quote_from_bytes

import pytest
import requests

from gridserve.acl import default_acl, sign_path
from tests.conftest import PutFile
from tests.livehttp import LiveServer

pytestmark = pytest.mark.parametrize("backend", ["gridfs", "local"], indirect=True)

TOKEN = "fuzz-token"
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "get", "X" * 300]
QUERY_KEYS = ["rev", "limit", "after", "prefix", "download", "exp", "sig", "x", ""]
HEADERS = [
    "Range",
    "If-Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "Content-Type",
    "Origin",
    "Accept-Encoding",
    "X-Forwarded-For",
    "Authorization",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Checksum",
    "X-HTTP-Method-Override",
]
TUS_PATHS = [b".uploads/", b".uploads"]  # and the URL of a real upload, see the test
SPICE = [
    b"",
    b"\x00",
    b"\xb2",
    b"\xff\xfe",
    "²".encode(),
    "😀".encode(),
    "日本".encode(),
    "e\u0301".encode(),
    b"%",
    b"%00",
    b"%C0%AF",
    b"..",
    b"/",
    b"//",
    b"\\",
    b'"',
    b";",
    b"=",
    b"*",
    b"-1",
    b"99999999999999999999",
    b"bytes=0-",
    b"bytes=-0",
    b"a" * 300,
]


def fragment(rng: random.Random, size: int = 12) -> bytes:
    """Random bytes with a taste for what parsers trip on."""
    parts = []
    for _ in range(rng.randint(0, 4)):
        if rng.random() < 0.5:
            parts.append(rng.choice(SPICE))
        else:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, size))))
    return b"".join(parts)


def header_value(rng: random.Random) -> bytes:
    # Header values may not hold CR, LF or NUL on the wire; anything else goes.
    value = fragment(rng).replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
    if rng.random() < 0.2:
        value = b"Bearer " + TOKEN.encode()
    return value


def form_body(rng: random.Random, boundary: bytes) -> bytes:
    body = b""
    for _ in range(rng.randint(0, 3)):
        filename = fragment(rng).replace(b"\r\n", b"")
        disposition = rng.choice(
            [
                b'form-data; name="file"; filename="' + filename + b'"',
                b"form-data; name=file; filename*=UTF-8''" + quote_from_bytes(filename).encode(),
                b'form-data; name="file"; filename=' + filename,
                b"form-data; " + fragment(rng).replace(b"\r\n", b""),
                b'form-data; name="other"',
            ]
        )
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        if rng.random() < 0.5:
            body += b"Content-Type: " + header_value(rng) + b"\r\n"
        body += b"\r\n" + fragment(rng, 64) + b"\r\n"
    if rng.random() < 0.8:
        body += b"--" + boundary + b"--\r\n"
    return body


def random_request(rng: random.Random, tus_paths: list[bytes] = TUS_PATHS) -> bytes:
    method = rng.choice(METHODS).encode()
    path = b"/fs/" + rng.choice([b"", b"clip.webm", b"dir/", b"up/x.bin", *tus_paths])
    tus = b".uploads" in path
    if rng.random() < 0.7:
        path += quote_from_bytes(fragment(rng), safe="/").encode()
    if rng.random() < 0.6:
        pairs = [
            quote_from_bytes(rng.choice(QUERY_KEYS).encode()).encode()
            + b"="
            + quote_from_bytes(fragment(rng)).encode()
            for _ in range(rng.randint(1, 3))
        ]
        path += b"?" + b"&".join(pairs)
    headers = [
        rng.choice(HEADERS).encode() + b": " + header_value(rng) for _ in range(rng.randint(0, 4))
    ]
    if tus and rng.random() < 0.8:
        headers.append(b"Tus-Resumable: 1.0.0")
    body = b""
    if tus and method in (b"PATCH", b"POST") and rng.random() < 0.6:
        headers.append(b"Content-Type: application/offset+octet-stream")
        body = fragment(rng, 200)
    elif method == b"POST":
        boundary = rng.choice([b"b0und4ry", b"x" * 70, b'"q"'])
        headers.append(b"Content-Type: multipart/form-data; boundary=" + boundary)
        body = form_body(rng, boundary.strip(b'"'))
    elif method == b"PUT":
        body = fragment(rng, 200)
    if (tus or method in (b"POST", b"PUT")) and rng.random() < 0.7:
        headers.append(b"Authorization: Bearer " + TOKEN.encode())
    head = [method + b" " + path + b" HTTP/1.1", b"Host: fuzz", b"Connection: close", *headers]
    head.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def status_of(port: int, request: bytes) -> int | None:
    """Sends ``request``; the status of the answer, or None if the server closed without one
    (what Tornado does with a request line it cannot parse at all)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    if not data:
        return None
    return int(data.split(b" ", 2)[1])


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("signed", [False, True], ids=["open", "signed-reads"])
def test_fuzzed_requests_and_forms(
    serve: Callable[..., LiveServer],
    put_file: PutFile,
    caplog: pytest.LogCaptureFixture,
    signed: bool,
) -> None:
    put_file("keep/ref.webm", b"\x1aE\xdf\xa3" + os.urandom(20_000))  # no fuzzed name
    key = "fuzz-signing-key" if signed else None
    acl = default_acl(upload_token=TOKEN, signing_key=key, require_signed_reads=signed)
    server = serve(acl=acl, signing_key=key)
    seed = int(os.environ.get("GRIDSERVE_FUZZ_SEED") or random.randrange(1 << 32))
    count = int(os.environ.get("GRIDSERVE_FUZZ_COUNT") or 400)
    print(f"fuzz seed {seed}")
    rng = random.Random(seed)
    upload = requests.post(
        server.url("/fs/.uploads/"),
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "1000000",
            "Upload-Metadata": "filename dXAvdHVzLmJpbg==",
        },
        timeout=10,
    )
    assert upload.status_code == 201
    tus_paths = [*TUS_PATHS, upload.headers["Location"].removeprefix("/fs/").encode()]
    for _ in range(20):  # warm-up: what the first requests allocate once is not a leak
        status_of(server.port, random_request(rng, tus_paths))
    before = rss_bytes()
    caplog.set_level(logging.WARNING)
    for number in range(count):
        request = random_request(rng, tus_paths)
        try:
            status = status_of(server.port, request)
        except TimeoutError:
            pytest.fail(f"no answer in 30 s (seed {seed}, request {number}): {request[:400]!r}")
        assert status is None or status < 500, (seed, number, status, request[:400])
    grown = rss_bytes() - before
    problems = [
        r.getMessage()[:300]
        for r in caplog.records
        if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
    ]
    assert problems == [], seed
    assert grown < 64 * 1024 * 1024, (seed, grown)
    assert len(requests.get(server.url("/metrics"), timeout=10).content) < 64 * 1024
    path = sign_path(key, "/fs/keep/ref.webm", 60) if key else "/fs/keep/ref.webm"
    answer = requests.get(server.url(path), timeout=10)
    assert answer.status_code == 200 and len(answer.content) == 20_004
