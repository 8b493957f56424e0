"""ACL policies and signed URLs (pure; requests are built, not served)."""

from __future__ import annotations

from typing import Any

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from gridserve.acl import (
    AllowReads,
    AnyOf,
    BearerToken,
    SignedURLs,
    canonical_path,
    default_acl,
    is_allowed,
    sign_path,
    verify_signature,
)


def request(uri: str, method: str = "GET", **headers: str) -> HTTPServerRequest:
    start = RequestStartLine(method, uri, "HTTP/1.1")
    return HTTPServerRequest(start_line=start, headers=HTTPHeaders({"Host": "x", **headers}))


async def test_allow_reads() -> None:
    acl = AllowReads()
    assert await is_allowed(acl, request("/fs/a"), "read", None)
    assert await is_allowed(acl, request("/fs/"), "list", "")
    assert not await is_allowed(acl, request("/fs/a", "PUT"), "write", "a")
    assert not await is_allowed(acl, request("/fs/a", "DELETE"), "delete", None)


async def test_bearer_token() -> None:
    acl = BearerToken("s3cret")
    good = request("/fs/a", "PUT", Authorization="Bearer s3cret")
    assert await is_allowed(acl, good, "write", "a")
    for header, allowed in [
        ("bearer s3cret", True),
        ("Bearer nope", False),
        ("Basic s3cret", False),
    ]:
        put = request("/fs/a", "PUT", Authorization=header)
        assert await is_allowed(acl, put, "write", "a") is allowed, header
    assert not await is_allowed(acl, request("/fs/a", "PUT"), "write", "a")
    assert not await is_allowed(acl, good, "read", None)  # only the actions it was given
    with pytest.raises(ValueError):
        BearerToken("")


def test_signatures() -> None:
    signed = sign_path("key", "/fs/a b.mp4", 60, now=1000)
    path, query = signed.split("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert params["exp"] == "1060"
    assert verify_signature("key", "GET", path, params["exp"], params["sig"], now=1000)
    assert verify_signature("key", "HEAD", path, params["exp"], params["sig"], now=1000)
    assert verify_signature("key", "GET", "/fs/a%20b.mp4", params["exp"], params["sig"], now=1000)
    assert not verify_signature("key", "GET", path, params["exp"], params["sig"], now=1061)
    assert not verify_signature("other", "GET", path, params["exp"], params["sig"], now=1000)
    assert not verify_signature("key", "GET", "/fs/b.mp4", params["exp"], params["sig"], now=1000)
    assert not verify_signature("key", "PUT", path, params["exp"], params["sig"], now=1000)
    assert not verify_signature("key", "GET", path, "1061", params["sig"], now=1000)
    assert not verify_signature("key", "GET", path, None, None)
    assert not verify_signature("key", "GET", path, "9" * 40, "x")
    assert canonical_path("/fs/a%20b") == canonical_path("/fs/a b") == "/fs/a%20b"
    assert sign_path("k", "/fs/x?download=1", 5, now=0).startswith("/fs/x?download=1&exp=5&sig=")


async def test_signed_urls_policy() -> None:
    acl = SignedURLs("key")
    url = sign_path("key", "/fs/movie.webm", 3600)
    assert await is_allowed(acl, request(url), "read", None)
    assert not await is_allowed(acl, request("/fs/movie.webm"), "read", None)
    assert not await is_allowed(acl, request(url.replace("movie", "other")), "read", None)


async def test_composition_and_defaults() -> None:
    async def owner_only(req: HTTPServerRequest, action: str, target: Any) -> bool:
        return req.headers.get("X-User") == "ann"

    acl = AnyOf(AllowReads(), owner_only)
    assert await is_allowed(acl, request("/fs/a"), "read", None)
    assert await is_allowed(acl, request("/fs/a", "PUT", **{"X-User": "ann"}), "write", "a")
    assert not await is_allowed(acl, request("/fs/a", "PUT"), "write", "a")

    closed = default_acl()
    assert not await is_allowed(closed, request("/fs/a", "PUT"), "write", "a")
    token = default_acl(upload_token="t")
    assert await is_allowed(token, request("/fs/a", "PUT", Authorization="Bearer t"), "write", "a")
    signed_only = default_acl(signing_key="k", require_signed_reads=True)
    assert not await is_allowed(signed_only, request("/fs/a"), "read", None)
    assert await is_allowed(signed_only, request(sign_path("k", "/fs/a", 60)), "read", None)
    with pytest.raises(ValueError):
        default_acl(require_signed_reads=True)
