"""Signed URLs over real sockets: a URL grants exactly what was signed (issue 22, findings 1,
2, 6 and scoped uploads), on GridFS and local disk."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from gridserve.acl import default_acl, sign_path
from gridserve.uploads import UploadPolicy
from tests.conftest import PutFile
from tests.livehttp import LiveServer

pytestmark = pytest.mark.parametrize("backend", ["gridfs", "local"], indirect=True)

KEY = "k3y"
Serve = Callable[..., LiveServer]


def get(server: LiveServer, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(server.url(path), timeout=10, **kwargs)


@pytest.fixture
def private(serve: Serve, put_file: PutFile) -> LiveServer:
    """Reads and listings need a signature; a few folders."""
    put_file("pub/a.txt", b"public a")
    put_file("pub/deep/b.txt", b"public b")
    put_file("secret/plans.txt", b"secret")
    return serve(acl=default_acl(signing_key=KEY, require_signed_reads=True), signing_key=KEY)


def test_a_signed_listing_stays_within_its_folder(private: LiveServer) -> None:
    """Finding 1: appending prefix=, prefix=secret/ or after= opened the whole store."""
    listing = sign_path(KEY, "/fs/pub/", 60)
    page = get(private, listing)
    assert page.status_code == 200
    assert [f["filename"] for f in page.json()["files"]] == ["pub/a.txt", "pub/deep/b.txt"]
    for extra in ("prefix=", "prefix=secret/", "after=", "after=pub/a.txt", "limit=1"):
        assert get(private, f"{listing}&{extra}").status_code == 403, extra
    # Parameters that are signed work, within the folder only.
    narrower = get(private, sign_path(KEY, "/fs/pub/?prefix=pub/deep/", 60))
    assert [f["filename"] for f in narrower.json()["files"]] == ["pub/deep/b.txt"]
    paged = get(private, sign_path(KEY, "/fs/pub/?limit=1&after=pub/a.txt", 60))
    assert [f["filename"] for f in paged.json()["files"]] == ["pub/deep/b.txt"]
    for outside in ("/fs/pub/?prefix=secret/", "/fs/pub/?prefix=", "/fs/pub/?prefix=pu"):
        assert get(private, sign_path(KEY, outside, 60)).status_code == 403, outside


def test_urls_a_signed_listing_hands_out_expire_with_it(private: LiveServer) -> None:
    """Finding 1: each listed URL was valid for an hour, whatever the listing's expiry."""
    listing = sign_path(KEY, "/fs/pub/", 30)
    listing_exp = int(parse_qs(urlsplit(listing).query)["exp"][0])
    files = get(private, listing).json()["files"]
    assert files
    for described in files:
        exp = int(parse_qs(urlsplit(described["url"]).query)["exp"][0])
        assert exp <= listing_exp
        assert get(private, described["url"]).status_code == 200
    # A long-lived listing still hands out URLs for an hour at most.
    long_lived = get(private, sign_path(KEY, "/fs/pub/", 7200)).json()["files"]
    exp = int(parse_qs(urlsplit(long_lived[0]["url"]).query)["exp"][0])
    assert exp <= time.time() + 3600 + 5


def test_a_signed_url_serves_only_the_signed_revision(
    serve: Serve, put_file: PutFile, backend: str
) -> None:
    """Finding 2: appending rev=0 or rev=-2 to a signed URL served withdrawn revisions."""
    put_file("doc.txt", b"old text")
    put_file("doc.txt", b"new text")
    server = serve(acl=default_acl(signing_key=KEY, require_signed_reads=True))
    signed = sign_path(KEY, "/fs/doc.txt", 60)
    assert get(server, signed).content == b"new text"
    for extra in ("rev=0", "rev=-2", "rev=-1", "download=1"):
        assert get(server, f"{signed}&{extra}").status_code == 403, extra
    if backend == "gridfs":  # local disk keeps no old revision
        assert get(server, sign_path(KEY, "/fs/doc.txt?rev=0", 60)).content == b"old text"
    download = get(server, sign_path(KEY, "/fs/doc.txt?download=1", 60))
    assert download.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("signed_reads", [True, False])
def test_odd_exp_and_sig_are_answered_not_500(
    serve: Serve, put_file: PutFile, signed_reads: bool
) -> None:
    """Finding 6: exp=%B2 was a 500 with a traceback ('²'.isdigit() is True)."""
    put_file("a.txt", b"x")
    server = serve(acl=default_acl(signing_key=KEY, require_signed_reads=signed_reads))
    denied = 403 if signed_reads else 200
    for query in ("exp=%B2&sig=abc", "exp=%C2%B2&sig=abc", "exp=%FF&sig=%FF", "exp=1&sig=a&sig=b"):
        for path in ("/fs/a.txt", "/fs/"):
            response = get(server, f"{path}?{query}")
            assert response.status_code == denied, (path, query, response.text)
    assert get(server, "/fs/a.txt?exp=%B2").status_code == (401 if signed_reads else 200)


def test_rotated_keys_both_verify(serve: Serve, put_file: PutFile) -> None:
    from gridserve.acl import parse_query, verify_signature

    put_file("a.txt", b"x")
    server = serve(
        acl=default_acl(signing_key=("new", "old"), require_signed_reads=True),
        signing_key=("new", "old"),
    )
    assert get(server, sign_path("old", "/fs/a.txt", 60)).status_code == 200
    assert get(server, sign_path("new", "/fs/a.txt", 60)).status_code == 200
    assert get(server, sign_path("other", "/fs/a.txt", 60)).status_code == 403
    listed = get(server, sign_path("old", "/fs/", 60)).json()["files"][0]["url"]
    path, _, query = listed.partition("?")
    assert verify_signature("new", "GET", path, parse_query(query))  # the first key signs
    assert get(server, listed).status_code == 200


# -- scoped uploads -----------------------------------------------------------------------


@pytest.fixture
def uploads(serve: Serve) -> Iterator[LiveServer]:
    """Signed reads open to all, no upload token: only scoped upload URLs can write."""
    yield serve(acl=default_acl(signing_key=KEY), signing_key=KEY)


def scoped(path: str, max_size: int, ttl: int = 60) -> str:
    return sign_path(KEY, f"{path}?max-size={max_size}", ttl, method="PUT")


def test_a_scoped_upload_url_writes_that_name_up_to_that_size(uploads: LiveServer) -> None:
    url = uploads.url(scoped("/fs/up/clip.webm", 1000))
    done = requests.put(url, data=b"v" * 1000, timeout=10)
    assert done.status_code == 201, done.text
    assert done.json()["filename"] == "up/clip.webm" and done.json()["length"] == 1000
    assert get(uploads, "/fs/up/clip.webm").content == b"v" * 1000
    assert requests.put(url, data=b"w" * 1001, timeout=10).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut mid-stream
        for _ in range(11):
            yield b"w" * 100

    assert requests.put(url, data=chunks(), timeout=10).status_code == 413
    assert get(uploads, "/fs/up/clip.webm").content == b"v" * 1000


def test_a_scoped_upload_url_grants_nothing_else(uploads: LiveServer, put_file: PutFile) -> None:
    put_file("up/keep.txt", b"keep")
    signed = scoped("/fs/up/clip.webm", 1000)
    other_name = signed.replace("clip.webm", "other.webm")
    assert requests.put(uploads.url(other_name), data=b"x", timeout=10).status_code == 403
    bigger = signed.replace("max-size=1000", "max-size=100000")
    assert requests.put(uploads.url(bigger), data=b"x", timeout=10).status_code == 403
    folder = signed.replace("up/clip.webm", "up/")
    assert requests.post(uploads.url(folder), files={"file": b"x"}, timeout=10).status_code == 403
    assert requests.post(uploads.url(signed), files={"file": b"x"}, timeout=10).status_code == 403
    keep = sign_path(KEY, "/fs/up/keep.txt?max-size=10", 60, method="PUT")
    assert requests.delete(uploads.url(keep), timeout=10).status_code == 403
    unsized = sign_path(KEY, "/fs/up/clip.webm", 60, method="PUT")
    assert requests.put(uploads.url(unsized), data=b"x", timeout=10).status_code == 403
    expired = sign_path(
        KEY, "/fs/up/clip.webm?max-size=10", 60, method="PUT", now=time.time() - 120
    )
    assert requests.put(uploads.url(expired), data=b"x", timeout=10).status_code == 403
    assert get(uploads, "/fs/up/clip.webm").status_code == 404
    assert get(uploads, "/fs/up/keep.txt").content == b"keep"


def test_the_server_limit_still_applies_to_a_scoped_upload(serve: Serve) -> None:
    server = serve(
        acl=default_acl(signing_key=KEY, upload_token="t"),
        upload_policy=UploadPolicy(max_size=100),
        signing_key=KEY,
    )
    url = server.url(scoped("/fs/up/a.bin", 1000))
    assert requests.put(url, data=b"x" * 101, timeout=10).status_code == 413
    assert requests.put(url, data=b"x" * 100, timeout=10).status_code == 201
    bad = server.url("/fs/up/b.bin?max-size=%B2")
    answer = requests.put(bad, data=b"x", headers={"Authorization": "Bearer t"}, timeout=10)
    assert answer.status_code == 400
    # A token holder may narrow its own upload the same way.
    narrowed = server.url("/fs/up/c.bin?max-size=10")
    auth = {"Authorization": "Bearer t"}
    assert requests.put(narrowed, data=b"x" * 11, headers=auth, timeout=10).status_code == 413


def test_urls_signed_before_the_change_keep_working(serve: Serve, put_file: PutFile) -> None:
    """A URL signed by the old scheme (method, path, exp) grants what it always did, and no
    more: a parameter appended to it is refused."""
    import base64
    import hashlib
    import hmac

    put_file("show/ep 1.webm", b"old link")
    server = serve(acl=default_acl(signing_key=KEY, require_signed_reads=True))
    expires = int(time.time()) + 60
    message = f"GET\n/fs/show/ep%201.webm\n{expires}".encode()
    mac = base64.urlsafe_b64encode(hmac.new(KEY.encode(), message, hashlib.sha256).digest())
    old = f"/fs/show/ep%201.webm?exp={expires}&sig={mac.rstrip(b'=').decode()}"
    assert get(server, old).content == b"old link"
    assert get(server, old + "&download=1").status_code == 403
