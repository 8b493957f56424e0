"""ACL policies and signed URLs (pure; requests are built, not served)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from gridserve.acl import (
    ACL,
    AllowReads,
    AnyOf,
    BearerToken,
    Refused,
    SignedURLs,
    canonical_path,
    canonical_query,
    default_acl,
    is_allowed,
    parse_query,
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


def verify(key: Any, method: str, url: str, now: float | None = None) -> bool:
    path, _, query = url.partition("?")
    return verify_signature(key, method, path, parse_query(query), now=now)


def old_style_url(key: str, path: str, expires: int) -> str:
    """A URL as gridserve signed them before signatures covered the query."""
    message = f"GET\n{canonical_path(path)}\n{expires}".encode()
    mac = base64.urlsafe_b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest())
    return f"{path}?exp={expires}&sig={mac.rstrip(b'=').decode()}"


def test_signatures() -> None:
    signed = sign_path("key", "/fs/a b.mp4", 60, now=1000)
    path, query = signed.split("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert params["exp"] == "1060" and path == "/fs/a%20b.mp4"
    assert verify("key", "GET", signed, now=1000)
    assert verify("key", "HEAD", signed, now=1000)
    assert verify("key", "GET", signed.replace("%20", " "), now=1000)
    assert not verify("key", "GET", signed, now=1061)
    assert not verify("other", "GET", signed, now=1000)
    assert not verify("key", "GET", signed.replace("a%20b", "b"), now=1000)
    assert not verify("key", "PUT", signed, now=1000)
    assert not verify("key", "GET", signed.replace("exp=1060", "exp=1061"), now=1000)
    assert not verify("key", "GET", path)
    assert not verify("key", "GET", f"{path}?exp={'9' * 40}&sig=x")
    assert canonical_path("/fs/a%20b") == canonical_path("/fs/a b") == "/fs/a%20b"
    assert sign_path("k", "/fs/x?download=1", 5, now=0).startswith("/fs/x?download=1&exp=5&sig=")
    assert sign_path("k", "/fs/x", 5, method="HEAD", now=0) == sign_path("k", "/fs/x", 5, now=0)
    with pytest.raises(ValueError):
        sign_path("k", "/fs/x?sig=1", 5)


def test_signature_covers_every_query_parameter() -> None:
    """Findings 1 and 2: a parameter added, removed or changed is a different request."""
    file_url = sign_path("key", "/fs/doc.txt", 60, now=1000)
    for extra in ("rev=0", "rev=-2", "download=1", "download=", "x=1", "exp=1060"):
        assert not verify("key", "GET", f"{file_url}&{extra}", now=1000), extra
    listing = sign_path("key", "/fs/pub/", 60, now=1000)
    for extra in ("prefix=", "prefix=secret/", "after=a", "limit=1000"):
        assert not verify("key", "GET", f"{listing}&{extra}", now=1000), extra
    old_rev = sign_path("key", "/fs/doc.txt?rev=0", 60, now=1000)
    assert verify("key", "GET", old_rev, now=1000)
    assert not verify("key", "GET", old_rev.replace("rev=0", "rev=-2"), now=1000)
    assert not verify("key", "GET", old_rev.replace("rev=0&", ""), now=1000)
    # Order and encoding of the same parameters do not matter; the order of repeats does.
    signed = sign_path("key", "/fs/p/?prefix=p/a b&limit=5", 60, now=1000)
    assert "limit=5&prefix=p%2Fa%20b&exp=1060" in signed
    _, _, query = signed.partition("?")
    shuffled = "&".join(reversed(query.split("&"))).replace("%20", "+")
    assert verify("key", "GET", f"/fs/p/?{shuffled}", now=1000)
    repeated = sign_path("key", "/fs/x?rev=1&rev=2", 60, now=1000)
    assert verify("key", "GET", repeated, now=1000)
    assert not verify("key", "GET", repeated.replace("rev=1&rev=2", "rev=2&rev=1"), now=1000)


def test_canonical_query_is_total() -> None:
    args = parse_query("b=2&a=%FF%00&a=1&sig=zz&k%C3%A9=%C3%A9&flag")
    assert canonical_query(args) == "a=%FF%00&a=1&b=2&flag=&k%C3%A9=%C3%A9"
    assert canonical_query(args, exclude=("sig", "a")) == "b=2&flag=&k%C3%A9=%C3%A9"


def test_urls_signed_before_the_change_still_verify() -> None:
    old = old_style_url("key", "/fs/a%20b.mp4", 2_000_000_000)
    assert verify("key", "GET", old, now=1000)
    assert old == sign_path("key", "/fs/a b.mp4", expires=2_000_000_000)
    assert not verify("key", "GET", old + "&rev=0", now=1000)


def test_odd_exp_and_sig_are_refusals_never_errors() -> None:
    """Finding 6: '²'.isdigit() is True and int('²') raised."""
    good = sign_path("key", "/fs/a", 60, now=1000)
    sig = good.rsplit("sig=", 1)[1]
    for exp in ("%B2", "%C2%B2", "\u00b2", "-5", "+5", "%205", "1e3", "", "9" * 13, "0x10", "%FF"):
        assert not verify("key", "GET", f"/fs/a?exp={exp}&sig={sig}", now=1000), exp
    for odd in (f"sig={sig}&sig={sig}", "sig=%FF", "sig=" + "A" * 65, "sig=", "sig"):
        assert not verify("key", "GET", f"/fs/a?exp=1060&{odd}", now=1000), odd
    assert not verify("key", "GET", f"/fs/a?exp=1060&exp=1060&sig={sig}", now=1000)


def test_key_rotation() -> None:
    old_url = sign_path("old", "/fs/a", 60, now=1000)
    new_url = sign_path(["new", "old"], "/fs/a", 60, now=1000)
    assert new_url == sign_path("new", "/fs/a", 60, now=1000)  # the first key signs
    for url in (old_url, new_url):
        assert verify(("new", "old"), "GET", url, now=1000)
    assert not verify("new", "GET", old_url, now=1000)
    with pytest.raises(ValueError):
        SignedURLs(("k", ""))
    with pytest.raises(ValueError):
        SignedURLs(())


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
    with pytest.raises(Refused):
        await is_allowed(closed, request("/fs/a", "PUT"), "write", "a")
    token = default_acl(upload_token="t")
    assert await is_allowed(token, request("/fs/a", "PUT", Authorization="Bearer t"), "write", "a")
    signed_only = default_acl(signing_key="k", require_signed_reads=True)
    assert not await is_allowed(signed_only, request("/fs/a"), "read", None)
    assert await is_allowed(signed_only, request(sign_path("k", "/fs/a", 60)), "read", None)
    with pytest.raises(ValueError):
        default_acl(require_signed_reads=True)


async def test_scoped_upload_signatures() -> None:
    acl = default_acl(signing_key="k")
    scoped = sign_path("k", "/fs/up/clip.webm?max-size=100", 60, method="PUT")
    assert await is_allowed(acl, request(scoped, "PUT"), "write", "up/clip.webm")
    write_only = SignedURLs("k", ("write",))
    assert not await is_allowed(write_only, request(scoped, "POST"), "write", "up/")
    assert not await is_allowed(write_only, request(scoped, "GET"), "read", "up/clip.webm")
    no_size = sign_path("k", "/fs/up/clip.webm", 60, method="PUT")
    assert not await is_allowed(acl, request(no_size, "PUT"), "write", "up/clip.webm")
    other = scoped.replace("clip", "other")
    assert not await is_allowed(acl, request(other, "PUT"), "write", "up/other.webm")
    bigger = scoped.replace("max-size=100", "max-size=1000")
    assert not await is_allowed(acl, request(bigger, "PUT"), "write", "up/clip.webm")
    signed_delete = sign_path("k", "/fs/up/clip.webm", 60, method="DELETE")
    everything = SignedURLs("k", ("read", "list", "write", "delete"))
    assert not await is_allowed(everything, request(signed_delete, "DELETE"), "delete", "x")


async def test_without_a_token_writes_and_deletes_are_refused_naming_the_flag() -> None:
    for acl in (default_acl(), default_acl(signing_key="k", require_signed_reads=True)):
        with pytest.raises(Refused) as refused:
            await is_allowed(acl, request("/fs/a", "DELETE"), "delete", "a")
        assert refused.value.status == 403 and "--upload-token" in refused.value.reason
    with pytest.raises(Refused):
        await is_allowed(default_acl(), request("/fs/a", "PUT"), "write", "a")
    # With a signing key, writes may still come with a scoped upload URL: a plain denial.
    assert not await is_allowed(default_acl(signing_key="k"), request("/fs/a", "PUT"), "write", "a")
    # AnyOf raises a refusal only when nothing else allows.
    token = default_acl(upload_token="t")
    assert not await is_allowed(token, request("/fs/a", "DELETE"), "delete", "a")
    both = AnyOf(default_acl(), BearerToken("t"))
    auth = request("/fs/a", "DELETE", Authorization="Bearer t")
    assert await is_allowed(both, auth, "delete", "a")


async def test_misses_reach_the_policies() -> None:
    """A miss asks the hook with the requested name; built-in policies answer as for a file,
    and a hook that only knew FileInfo targets denies instead of failing."""
    signed = sign_path("k", "/fs/missing", 60)
    cases: list[tuple[ACL, HTTPServerRequest, bool]] = [
        (AllowReads(), request("/fs/missing"), True),
        (default_acl(signing_key="k", require_signed_reads=True), request("/fs/missing"), False),
        (default_acl(signing_key="k", require_signed_reads=True), request(signed), True),
    ]
    for acl, req, allowed in cases:
        assert await is_allowed(acl, req, "read", "missing") is allowed

    def metadata_only(req: HTTPServerRequest, action: str, target: Any) -> bool:
        return bool(target.metadata.get("public"))

    assert not await is_allowed(metadata_only, request("/fs/missing"), "read", "missing")
    assert not await is_allowed(AnyOf(metadata_only), request("/fs/x"), "delete", "x")
    with pytest.raises(AttributeError):  # elsewhere a failing hook is still a failure
        await is_allowed(metadata_only, request("/fs/x"), "write", "x")
