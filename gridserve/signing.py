"""What ``gridserve sign`` signs: a request the server honours, checked before it is signed.

Pure: :func:`plan_signed_request` turns the command's arguments into the method and the
canonically encoded path and query to sign, or raises :class:`SignError` (a usage error)
for anything the server would refuse whatever the signature: a path outside the URL prefix,
a DELETE or POST (signatures never delete; uploads are signed as PUT of one name), parameters
the request does not take, a listing ``prefix`` outside the listed folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from gridserve.acl import MAX_SIZE_PARAM, SIGNATURE_PARAMS, encode_path, parse_query

DEFAULT_TTL = 3600
FILE_PARAMS = ("rev", "download")
LISTING_PARAMS = ("prefix", "after", "limit")
UPLOAD_PARAMS = (MAX_SIZE_PARAM,)


class SignError(ValueError):
    """The request cannot be signed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class SignedRequest:
    method: str  # GET or PUT (HEAD is signed as GET)
    url: str  # encoded path and query, ready for sign_path


def _component(value: str) -> str:
    return quote(value.encode("utf-8"), safe="-._~/")


def plan_signed_request(
    *,
    path: str | None = None,
    url: str | None = None,
    url_prefix: str = "/fs",
    method: str = "GET",
    rev: int | None = None,
    download: bool = False,
    params: Sequence[str] = (),
    max_size: int | None = None,
) -> SignedRequest:
    """The request to sign. ``path`` is the raw name path (``/fs/my show/ép 1 ?#%.txt``:
    every character is part of a name); ``url`` instead is an already percent-encoded path
    with an optional query. ``params`` are ``KEY=VALUE`` listing parameters."""
    if (path is None) == (url is None):
        raise SignError("give PATH (the raw name path) or --url (an encoded path), not both")
    if url is not None:
        if "#" in url:
            raise SignError("--url has a #fragment, which clients never send: encode it as %23")
        encoded_path, _, query = url.partition("?")
    else:
        assert path is not None
        encoded_path, query = encode_path(path), ""
    if not encoded_path.startswith("/"):
        raise SignError(f"{path or url!r} must start with the URL prefix, e.g. {url_prefix}/")
    try:
        decoded = unquote_to_bytes(encoded_path).decode("utf-8")
    except UnicodeDecodeError:
        raise SignError("the path is not UTF-8 once decoded; the server would refuse it") from None
    prefix = "/" + url_prefix.strip("/") if url_prefix.strip("/") else ""
    if not decoded.startswith(prefix + "/"):
        raise SignError(
            f"{decoded} is outside the URL prefix {prefix or '/'} (see --prefix): "
            "the server would never serve it"
        )
    name = decoded[len(prefix) + 1 :]
    listing = name == "" or name.endswith("/")

    verb = method.upper()
    if verb == "HEAD":
        verb = "GET"  # the server verifies HEAD as GET
    if verb == "DELETE":
        raise SignError(
            "a signed URL never deletes (the server honours no signature for DELETE); "
            "deletes need the --upload-token"
        )
    if verb == "POST":
        raise SignError("uploads are signed as --method PUT of one name, with --max-size")
    if verb not in ("GET", "PUT"):
        raise SignError(f"--method {method}: the server honours signatures for GET, HEAD and PUT")

    pairs: list[tuple[str, str]] = []
    for name_value in params:
        key, sep, value = name_value.partition("=")
        if not sep or not key:
            raise SignError(f"--param {name_value!r}: expected KEY=VALUE")
        pairs.append((key, value))
    if rev is not None:
        pairs.append(("rev", str(rev)))
    if download:
        pairs.append(("download", "1"))
    if max_size is not None:
        if max_size < 0:
            raise SignError("--max-size must be a number of bytes >= 0")
        pairs.append((MAX_SIZE_PARAM, str(max_size)))
    try:
        for key, values in parse_query(query).items():
            key = key.encode("latin-1").decode("utf-8")
            pairs += [(key, value.decode("utf-8")) for value in values]
    except UnicodeDecodeError:
        raise SignError("the --url query is not UTF-8 once decoded") from None

    allowed: tuple[str, ...]
    if verb == "PUT":
        allowed, what = UPLOAD_PARAMS, "a scoped upload (PUT) takes only --max-size"
        if listing:
            raise SignError("a scoped upload names one file, not a folder")
        if not any(key == MAX_SIZE_PARAM for key, _ in pairs):
            raise SignError("a scoped upload (--method PUT) needs --max-size")
    elif listing:
        allowed, what = LISTING_PARAMS, "a listing takes --param prefix=, after=, limit="
    else:
        allowed, what = FILE_PARAMS, "a file takes --rev and --download"
    for key, value in pairs:
        if key in SIGNATURE_PARAMS:
            raise SignError(f"the URL already has {key}=: sign the unsigned URL")
        if key not in allowed:
            raise SignError(f"{key}= is not a parameter the server honours here: {what}")
        if key == "limit" and not (value.isascii() and value.isdigit() and 1 <= int(value) <= 1000):
            raise SignError(f"limit={value}: the server takes 1 to 1000")
        if key == "prefix" and not value.startswith(name):
            raise SignError(f"prefix={value} lies outside the listed folder {name or '/'}")
    query_out = "&".join(f"{_component(k)}={_component(v)}" for k, v in pairs)
    return SignedRequest(verb, encoded_path + (f"?{query_out}" if query_out else ""))
