"""Access control: one hook, called before any byte is read or written, and built-in policies.

The hook
--------
An ACL is any callable ``authorize(request, action, target) -> bool | Awaitable[bool]``:

``request``
    the ``tornado.httputil.HTTPServerRequest`` (headers, query arguments, remote address).
``action``
    ``"read"`` (GET/HEAD of a file), ``"list"`` (the listing), ``"write"`` (PUT/POST),
    ``"delete"`` (DELETE).
``target``
    for ``read`` and ``delete``: the :class:`~gridserve.storage.base.FileInfo` of the file
    found (so a policy can look at ``target.metadata``), or, **when no file was found**, the
    requested name or id as a ``str`` (so the policy decides a miss too: a caller it refuses
    gets the same answer whether or not the file exists, and only a caller it allows learns
    404). For ``write`` the requested name (``str``), for ``list`` the prefix (``str``).
    A resumable (tus) upload asks ``write`` with its file name at creation and at every later
    request; for an upload id it does not know (or that is another credential's) with
    ``".uploads/<id>"``, before answering 404.

It returns True to allow. A denial is answered 401 with ``WWW-Authenticate: Bearer`` when the
request carried no credentials (no ``Authorization`` header, no ``sig``), else 403. A policy
that knows better may raise :class:`Refused` to choose the status and a short reason (the
daemon without ``--upload-token`` answers writes and deletes 403 "... --upload-token", since
no credential could help). A hook that raises anything else on a ``str`` target (one written
before misses reached hooks) counts as a denial. Pass it as the ``acl`` option of the handlers
or of :func:`gridserve.make_app`. Example, per-file metadata::

    async def owner_or_public(request, action, target):
        user = await sessions.user_for(request.headers.get("Authorization"))
        if action == "write":
            return user is not None
        if isinstance(target, str):  # no such file: answer as for a file you may not see
            return user is not None
        if action == "read" and target.metadata.get("public"):
            return True
        return user is not None and target.metadata.get("owner") == user.name

Built-in policies compose with :class:`AnyOf`: :class:`AllowReads` (read and list for
everyone, the default), :class:`BearerToken` (``Authorization: Bearer <token>`` for writes and
deletes, ``--upload-token``) and :class:`SignedURLs` (``gridserve sign``;
``--require-signed-reads``). All of them handle a ``str`` target.

Signed URLs
-----------
``?<params>&exp=<unix time>&sig=<HMAC-SHA256>`` where the MAC covers the method (HEAD is
verified as GET), the canonical path, ``exp`` and every other query parameter but ``sig``,
canonically ordered and encoded (:func:`canonical_query`): a URL grants exactly what was
signed, and any added, removed or changed parameter (``rev``, ``download``, ``prefix``,
``after``, ``limit``, ``max-size``) makes it invalid. A URL with no parameter beyond ``exp``
and ``sig`` signs the same message as before parameters were covered, so such older URLs still
verify. A PUT signature with ``max-size=N`` is a scoped upload: one name, at most N bytes,
until ``exp``. Several keys may verify (the first signs), so keys can be rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote_to_bytes

from tornado.escape import parse_qs_bytes
from tornado.httputil import HTTPServerRequest

log = logging.getLogger("gridserve.acl")

Action = Literal["read", "list", "write", "delete"]
ACL = Callable[[HTTPServerRequest, Action, Any], "bool | Awaitable[bool]"]
READ_ACTIONS = ("read", "list")
SigningKeys = str | bytes | Sequence[str | bytes]
"""One key, or several: the first signs, every one verifies (key rotation)."""
QueryArguments = Mapping[str, Sequence[bytes]]
"""Query arguments as Tornado parses them: latin-1 names, percent-decoded byte values."""

MAX_SIZE_PARAM = "max-size"
"""The parameter of a scoped upload URL: the most bytes its PUT may send."""
SIGNATURE_PARAMS = ("exp", "sig")

_EXP_RE = re.compile(rb"[0-9]{1,12}")
_SIG_RE = re.compile(rb"[A-Za-z0-9_-]{1,64}")
_SIZE_RE = re.compile(rb"[0-9]{1,18}")


class Refused(Exception):
    """Raised by a policy to choose the answer to a denial: ``status`` (e.g. 403) and a short
    ASCII ``reason`` the client reads. :class:`AnyOf` raises it only when no policy allows."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def is_allowed(acl: ACL, request: HTTPServerRequest, action: Action, target: Any) -> bool:
    """Runs ``acl``, awaiting it if it is asynchronous. Anything but True is a denial.

    :class:`Refused` propagates. For a ``str`` target of ``read`` or ``delete`` (a miss), any
    other exception is a denial: hooks written when they only ever saw a ``FileInfo`` there
    keep working.
    """
    try:
        decision = acl(request, action, target)
        if inspect.isawaitable(decision):
            decision = await decision
    except Refused:
        raise
    except Exception:
        if action not in ("read", "delete") or not isinstance(target, str):
            raise
        log.debug("ACL hook failed on a miss (str target %r): a denial", target, exc_info=True)
        return False
    return decision is True


def has_credentials(request: HTTPServerRequest) -> bool:
    return "Authorization" in request.headers or "sig" in request.query_arguments


@dataclass(frozen=True)
class AllowReads:
    """Reads and listings for everyone; nothing else."""

    def __call__(self, request: HTTPServerRequest, action: Action, target: Any) -> bool:
        return action in READ_ACTIONS


@dataclass(frozen=True)
class BearerToken:
    """``Authorization: Bearer <token>`` allows ``actions`` (default: write and delete)."""

    token: str
    actions: tuple[Action, ...] = ("write", "delete")

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("an empty bearer token would let anyone in")

    def __call__(self, request: HTTPServerRequest, action: Action, target: Any) -> bool:
        if action not in self.actions:
            return False
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())


@dataclass(frozen=True)
class UploadsDisabled:
    """Refuses ``actions`` with 403 and a reason naming ``--upload-token``: put last in the
    daemon's ACL when it has no token, where a 401 asking for a bearer token would mislead."""

    actions: tuple[Action, ...] = ("write", "delete")

    def __call__(self, request: HTTPServerRequest, action: Action, target: Any) -> bool:
        if action in self.actions:
            what = "Uploads and deletes" if "write" in self.actions else "Deletes"
            raise Refused(403, f"{what} are disabled: the server runs without --upload-token")
        return False


# -- signatures -----------------------------------------------------------------------------


def encode_path(name_path: str) -> str:
    """A raw path of names (any Unicode; spaces, ``?``, ``#``, ``%`` are part of names) as the
    canonically percent-encoded URL path that signatures cover and clients accept."""
    return quote(name_path.encode("utf-8"), safe="/")


def canonical_path(path: str) -> str:
    """The form of a URL path that signatures cover: decoded once, then re-encoded the same
    way every time, so ``/fs/a%20b`` and ``/fs/a b`` sign alike."""
    return quote(unquote_to_bytes(path), safe="/")


def _encode_component(raw: bytes) -> str:
    return quote(raw, safe="-._~")  # RFC 3986 unreserved characters stay, all else is %XX


def canonical_query(arguments: QueryArguments, *, exclude: Sequence[str] = ("sig",)) -> str:
    """The query parameters a signature covers, as one string: names in byte order, the
    values of a repeated name in their order (the server uses the last), every byte outside
    RFC 3986's unreserved set percent-encoded. ``a+b``, ``a%20b`` (both a space) sign alike.
    Total: any bytes give a string."""
    pairs = []
    for name in sorted(arguments, key=lambda n: n.encode("latin-1")):
        if name in exclude:
            continue
        for value in arguments[name]:
            pairs.append(f"{_encode_component(name.encode('latin-1'))}={_encode_component(value)}")
    return "&".join(pairs)


def parse_query(query: str) -> dict[str, list[bytes]]:
    """A raw query string parsed the way Tornado parses a request's (blank values kept)."""
    return parse_qs_bytes(query, keep_blank_values=True)


def key_list(keys: SigningKeys) -> list[bytes]:
    """The signing keys as bytes, the signing one first (ValueError for an empty one)."""
    return _keys(keys)


def _keys(keys: SigningKeys) -> list[bytes]:
    if isinstance(keys, (str, bytes)):
        keys = [keys]
    raw = [k.encode() if isinstance(k, str) else bytes(k) for k in keys]
    if not raw or not all(raw):
        raise ValueError("an empty signing key would let anyone forge URLs")
    return raw


def _mac(key: bytes, method: str, path: str, expires: int, rest: str) -> str:
    message = f"{method.upper()}\n{canonical_path(path)}\n{expires}"
    if rest:  # without parameters, the message of URLs signed before they were covered
        message += f"\n{rest}"
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_path(
    key: SigningKeys,
    path: str,
    ttl: int | None = None,
    *,
    method: str = "GET",
    now: float | None = None,
    expires: int | None = None,
) -> str:
    """``path`` (URL-encoded, with any query: ``/fs/a%20b?rev=0``) signed: its canonical path
    and query, then ``exp`` and ``sig``, valid for ``ttl`` seconds (or until ``expires``).

    The signature covers every query parameter given. A GET signature also admits HEAD (sign
    HEAD as GET: a HEAD signature is made as GET). With several keys, the first signs.
    """
    if expires is None:
        if ttl is None or ttl <= 0:
            raise ValueError("ttl must be positive")
        expires = int(now if now is not None else time.time()) + ttl
    signed_method = "GET" if method.upper() == "HEAD" else method.upper()
    path_only, _, query = path.partition("?")
    arguments = parse_query(query)
    for name in SIGNATURE_PARAMS:
        if name in arguments:
            raise ValueError(f"the URL to sign already has a {name!r} parameter")
    rest = canonical_query(arguments)
    mac = _mac(_keys(key)[0], signed_method, path_only, expires, rest)
    signed = f"exp={expires}&sig={mac}"
    return f"{canonical_path(path_only)}?{rest + '&' if rest else ''}{signed}"


def _single(arguments: QueryArguments, name: str, pattern: re.Pattern[bytes]) -> bytes | None:
    values = arguments.get(name)
    if not values or len(values) != 1 or not pattern.fullmatch(values[0]):
        return None
    return values[0]


def verify_signature(
    key: SigningKeys,
    method: str,
    path: str,
    arguments: QueryArguments,
    *,
    now: float | None = None,
) -> bool:
    """True when ``arguments`` (the request's query) carry one ``exp`` and one ``sig``, not
    expired, that one of the keys made for (method, path, the other parameters). Total: no
    input raises."""
    exp = _single(arguments, "exp", _EXP_RE)
    sig = _single(arguments, "sig", _SIG_RE)
    if exp is None or sig is None:
        return False
    expires = int(exp)
    if expires < (now if now is not None else time.time()):
        return False
    signed_method = "GET" if method.upper() == "HEAD" else method.upper()
    rest = canonical_query(arguments, exclude=SIGNATURE_PARAMS)
    found = False
    for raw in _keys(key):
        found |= hmac.compare_digest(_mac(raw, signed_method, path, expires, rest).encode(), sig)
    return found


def signed_expiry(request: HTTPServerRequest) -> int | None:
    """The ``exp`` of a request that carries a well-formed signature, else None (not a check
    of the signature: for capping what a signed request hands out)."""
    arguments = request.query_arguments
    if _single(arguments, "sig", _SIG_RE) is None:
        return None
    exp = _single(arguments, "exp", _EXP_RE)
    return int(exp) if exp is not None else None


def upload_size_limit(request: HTTPServerRequest) -> int | None:
    """``max-size`` of the request's query (a scoped upload URL), None when absent; raises
    ``ValueError`` when it is not one decimal number."""
    if MAX_SIZE_PARAM not in request.query_arguments:
        return None
    value = _single(request.query_arguments, MAX_SIZE_PARAM, _SIZE_RE)
    if value is None:
        raise ValueError(f"{MAX_SIZE_PARAM} must be one number of bytes")
    return int(value)


@dataclass(frozen=True)
class SignedURLs:
    """A valid signature for this method, path and query allows ``actions`` (default: read).

    Lets a ``<video src>`` carry its own authorisation, with no header to set. ``write`` is
    allowed only to a PUT signed with ``max-size`` (a scoped upload: the signed path is the
    one name it may write); ``delete`` is never allowed by a signature. ``key`` may be several
    keys (all verify).
    """

    key: SigningKeys
    actions: tuple[Action, ...] = ("read",)

    def __post_init__(self) -> None:
        _keys(self.key)

    def __call__(self, request: HTTPServerRequest, action: Action, target: Any) -> bool:
        if action not in self.actions or action == "delete":
            return False
        if action == "write" and (
            request.method != "PUT" or MAX_SIZE_PARAM not in request.query_arguments
        ):
            return False
        return verify_signature(
            self.key, request.method or "GET", request.path, request.query_arguments
        )


@dataclass(frozen=True)
class AnyOf:
    """Allows what any of ``policies`` allows (evaluated in order, stopping at the first yes).
    When none allows, the first :class:`Refused` one of them raised is raised."""

    policies: tuple[ACL, ...]

    def __init__(self, *policies: ACL) -> None:
        object.__setattr__(self, "policies", policies)

    async def __call__(self, request: HTTPServerRequest, action: Action, target: Any) -> bool:
        refused: Refused | None = None
        for policy in self.policies:
            try:
                if await is_allowed(policy, request, action, target):
                    return True
            except Refused as exc:
                refused = refused or exc
        if refused is not None:
            raise refused
        return False


def default_acl(
    *,
    upload_token: str | None = None,
    signing_key: SigningKeys | None = None,
    require_signed_reads: bool = False,
) -> ACL:
    """The daemon's ACL from its flags: reads open (or signed-only), writes and deletes with
    the upload token, scoped uploads with a signed PUT URL. Without a token, deletes (and
    writes, unless a signing key allows scoped uploads) are refused 403 naming the flag."""
    policies: list[ACL] = []
    if require_signed_reads:
        if not signing_key:
            raise ValueError("signed reads need a signing key")
        policies.append(SignedURLs(signing_key, ("read", "list", "write")))
    else:
        policies.append(AllowReads())
        if signing_key:
            policies.append(SignedURLs(signing_key, ("read", "write")))
    if upload_token:
        policies.append(BearerToken(upload_token))
    else:
        policies.append(UploadsDisabled(("delete",) if signing_key else ("write", "delete")))
    return AnyOf(*policies)
