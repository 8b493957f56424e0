"""``--s3-redirect``: after the ACL, a read of an S3 object is a 307 to a presigned GetObject
URL of s3proxy; clients that follow it (requests, ffprobe) get the right bytes, ranges too."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gridserve.acl import default_acl, sign_path
from gridserve.handlers.ui import PAGE_POLICY, page_policy
from gridserve.handoff import presign_ttl
from gridserve.storage.s3 import S3Storage
from tests.livehttp import LiveServer
from tests.mediafiles import ffprobe, make
from tests.s3server import S3Proxy

KEY = "s3-redirect-key"
TTL = 600


def put(server: S3Proxy, bucket: str, key: str, data: bytes, content_type: str) -> None:
    async def upload() -> None:
        storage = S3Storage(bucket, "", **server.client_options())
        try:
            s3 = await storage._s3()
            await s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        finally:
            await storage.close()

    asyncio.run(upload())


def presigned_lifetime(url: str) -> int:
    """Seconds a presigned URL stays valid from now (SigV4 X-Amz-Expires, or SigV2 Expires)."""
    query = parse_qs(urlsplit(url).query)
    if "X-Amz-Expires" in query:
        return int(query["X-Amz-Expires"][0])
    return int(query["Expires"][0]) - int(time.time())


@pytest.fixture
def live(s3_server: S3Proxy, s3_bucket: str) -> Iterator[LiveServer]:
    options = s3_server.client_options()
    server = LiveServer(
        lambda: S3Storage(s3_bucket, "media", **options),
        acl=default_acl(signing_key=(KEY,)),
        signing_key=(KEY,),
        gridserve_s3_redirect=TTL,
    ).start()
    yield server
    server.stop()


def test_presign_ttl_never_outlives_the_signature() -> None:
    assert presign_ttl(600, None, 1000.0) == 600
    assert presign_ttl(600, 1100, 1000.0) == 100
    assert presign_ttl(600, 5000, 1000.0) == 600
    assert presign_ttl(600, 1000, 1000.0) == 1


def test_reads_redirect_to_s3_and_clients_follow(
    live: LiveServer, s3_server: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    put(s3_server, s3_bucket, "media/blob.bin", data, "video/webm")
    put(s3_server, s3_bucket, "media/other.bin", data, "application/octet-stream")
    put(s3_server, s3_bucket, "media/page.html", b"<script>x</script>", "text/html")
    clip = make(tmp_path, "clip-fast.mp4")
    put(s3_server, s3_bucket, "media/clip.mp4", clip.read_bytes(), "video/mp4")

    for method in ("GET", "HEAD"):
        answer = requests.request(
            method, live.url("/fs/blob.bin?download=1"), allow_redirects=False, timeout=10
        )
        assert answer.status_code == 307 and answer.content == b""
        query = parse_qs(urlsplit(answer.headers["Location"]).query)
        assert query["response-content-type"] == ["video/webm"]
        assert query["response-content-disposition"][0].startswith("attachment")
        assert "ETag" not in answer.headers
    whole = requests.get(live.url("/fs/blob.bin"), timeout=10)
    assert whole.status_code == 200 and whole.content == data
    assert whole.url.startswith(s3_server.endpoint)
    part = requests.get(live.url("/fs/blob.bin"), headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"

    # sandboxed types (all but audio, video, images) and misses stay with gridserve
    for name in ("page.html", "other.bin"):
        kept = requests.get(live.url(f"/fs/{name}"), allow_redirects=False, timeout=10)
        assert kept.status_code == 200 and kept.headers["Content-Security-Policy"] == "sandbox"
    missing = requests.get(live.url("/fs/none.bin"), allow_redirects=False, timeout=10)
    assert missing.status_code == 404
    listing = requests.get(live.url("/fs/"), allow_redirects=False, timeout=10)
    assert listing.status_code == 200 and "blob.bin" in listing.text
    # 304 and 412 are gridserve's own answers, before any redirect
    etag = requests.head(live.url("/fs/other.bin"), timeout=10).headers["ETag"]
    for headers, status in [({"If-None-Match": etag}, 304), ({"If-Match": '"x"'}, 412)]:
        kept = requests.get(
            live.url("/fs/blob.bin"), headers=headers, allow_redirects=False, timeout=10
        )
        assert kept.status_code == status and "Location" not in kept.headers
    # ffprobe follows the redirect and reads the MP4 by ranges
    probed = ffprobe(live.url("/fs/clip.mp4"))
    assert probed["format"]["format_name"].startswith("mov")


def test_the_presigned_url_never_outlives_the_signature(s3_server: S3Proxy, s3_bucket: str) -> None:
    data = os.urandom(10_000)
    put(s3_server, s3_bucket, "media/blob.bin", data, "video/webm")
    options = s3_server.client_options()
    live = LiveServer(
        lambda: S3Storage(s3_bucket, "media", **options),
        acl=default_acl(signing_key=(KEY,), require_signed_reads=True),
        signing_key=(KEY,),
        gridserve_s3_redirect=TTL,
    ).start()
    try:
        for url, status in [("/fs/blob.bin", 401), ("/fs/blob.bin?exp=99999999999&sig=x", 403)]:
            refused = requests.get(live.url(url), allow_redirects=False, timeout=10)
            assert refused.status_code == status and "Location" not in refused.headers
            assert data[:100] not in refused.content
        expires = int(time.time()) + 120
        url = sign_path((KEY,), "/fs/blob.bin", expires=expires)
        answer = requests.get(live.url(url), allow_redirects=False, timeout=10)
        assert answer.status_code == 307
        lifetime = presigned_lifetime(answer.headers["Location"])
        assert 100 <= lifetime <= 120  # not TTL (600): the signature ends sooner
        followed = requests.get(live.url(url), headers={"Range": "bytes=0-99"}, timeout=10)
        assert followed.status_code == 206 and followed.content == data[:100]
        # a long-lived signature: the redirect's own TTL
        far = sign_path((KEY,), "/fs/blob.bin", ttl=3600)
        answer = requests.head(live.url(far), allow_redirects=False, timeout=10)
        assert answer.status_code == 307
        assert 590 <= presigned_lifetime(answer.headers["Location"]) <= 600
    finally:
        live.stop()


def test_the_page_admits_the_s3_origin_only_when_redirecting(
    s3_server: S3Proxy, s3_bucket: str
) -> None:
    """A CSP source list is checked again on each redirect: with --s3-redirect the page's
    ``media-src`` and ``img-src`` name S3's origin (the player follows the 307 there)."""
    assert page_policy() == PAGE_POLICY and "media-src 'self';" in PAGE_POLICY
    assert "img-src 'self' https://s3.example; media-src 'self' https://s3.example;" in (
        page_policy(["https://s3.example"])
    )
    options = s3_server.client_options()
    for redirect, expected in [(TTL, page_policy([s3_server.endpoint])), (None, PAGE_POLICY)]:
        live = LiveServer(
            lambda: S3Storage(s3_bucket, "media", **options),
            ui=True,
            gridserve_s3_redirect=redirect,
        ).start()
        try:
            for method in ("GET", "HEAD"):
                page = requests.request(method, live.url("/"), timeout=10)
                assert page.headers["Content-Security-Policy"] == expected
        finally:
            live.stop()
