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
    the :class:`~gridserve.storage.base.FileInfo` for ``read`` and ``delete`` (so a policy can
    look at ``target.metadata``), the requested name (``str``) for ``write``, the prefix
    (``str``) for ``list``.

It returns True to allow. A denial is answered 401 with ``WWW-Authenticate: Bearer`` when the
request carried no credentials (no ``Authorization`` header, no ``sig``), else 403. Pass it as
the ``acl`` option of the handlers or of :func:`gridserve.make_app`. Example, per-file metadata::

    async def owner_or_public(request, action, target):
        if action == "read" and target.metadata.get("public"):
            return True
        user = await sessions.user_for(request.headers.get("Authorization"))
        if action == "write":
            return user is not None
        return user is not None and target.metadata.get("owner") == user.name

Built-in policies compose with :class:`AnyOf`: :class:`AllowReads` (read and list for
everyone, the default), :class:`BearerToken` (``Authorization: Bearer <token>`` for writes and
deletes, ``--upload-token``) and :class:`SignedURLs` (``?exp=<unix time>&sig=<HMAC>`` over
method, path and expiry, ``gridserve sign``; ``--require-signed-reads``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

from tornado.httputil import HTTPServerRequest

Action = Literal["read", "list", "write", "delete"]
ACL = Callable[[HTTPServerRequest, Action, Any], "bool | Awaitable[bool]"]
READ_ACTIONS = ("read", "list")


async def is_allowed(acl: ACL, request: HTTPServerRequest, action: Action, target: Any) -> bool:
    """Runs ``acl``, awaiting it if it is asynchronous. Anything but True is a denial."""
    decision = acl(request, action, target)
    if inspect.isawaitable(decision):
        decision = await decision
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


def canonical_path(path: str) -> str:
    """The form of a URL path that signatures cover: decoded once, then re-encoded the same
    way every time, so ``/fs/a%20b`` and ``/fs/a b`` sign alike."""
    return quote(unquote(path), safe="/")


def _mac(key: bytes, method: str, path: str, expires: int) -> str:
    message = f"{method.upper()}\n{canonical_path(path)}\n{expires}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_path(
    key: str | bytes, path: str, ttl: int, *, method: str = "GET", now: float | None = None
) -> str:
    """``path`` with ``?exp=…&sig=…`` (or ``&exp=…``) valid for ``ttl`` seconds.

    A GET signature also admits HEAD of the same path.
    """
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    raw = key.encode() if isinstance(key, str) else key
    expires = int(now if now is not None else time.time()) + ttl
    path_only, _, query = path.partition("?")
    signed = f"exp={expires}&sig={_mac(raw, method, path_only, expires)}"
    return f"{path_only}?{query}&{signed}" if query else f"{path_only}?{signed}"


def verify_signature(
    key: str | bytes,
    method: str,
    path: str,
    exp: str | None,
    sig: str | None,
    *,
    now: float | None = None,
) -> bool:
    """True when ``sig`` is a valid, unexpired signature of (method, path, exp)."""
    if not exp or not sig or not exp.isdigit() or len(exp) > 12 or len(sig) > 64:
        return False
    expires = int(exp)
    if expires < (now if now is not None else time.time()):
        return False
    raw = key.encode() if isinstance(key, str) else key
    signed_method = "GET" if method.upper() == "HEAD" else method
    return hmac.compare_digest(_mac(raw, signed_method, path, expires).encode(), sig.encode())


@dataclass(frozen=True)
class SignedURLs:
    """A valid ``?exp=…&sig=…`` for this method and path allows ``actions`` (default: read).

    Lets a ``<video src>`` carry its own authorisation, with no header to set.
    """

    key: str | bytes
    actions: tuple[Action, ...] = ("read",)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("an empty signing key would let anyone forge URLs")

    def __call__(self, request: HTTPServerRequest, action: Action, target: Any) -> bool:
        if action not in self.actions:
            return False

        def arg(name: str) -> str | None:
            values = request.query_arguments.get(name)
            return values[-1].decode("latin-1") if values else None

        return verify_signature(
            self.key, request.method or "GET", request.path, arg("exp"), arg("sig")
        )


@dataclass(frozen=True)
class AnyOf:
    """Allows what any of ``policies`` allows (evaluated in order, stopping at the first yes)."""

    policies: tuple[ACL, ...]

    def __init__(self, *policies: ACL) -> None:
        object.__setattr__(self, "policies", policies)

    async def __call__(self, request: HTTPServerRequest, action: Action, target: Any) -> bool:
        for policy in self.policies:
            if await is_allowed(policy, request, action, target):
                return True
        return False


def default_acl(
    *,
    upload_token: str | None = None,
    signing_key: str | bytes | None = None,
    require_signed_reads: bool = False,
) -> ACL:
    """The daemon's ACL from its flags: reads open (or signed-only), writes and deletes only
    with the upload token (refused when there is none)."""
    policies: list[ACL] = []
    if require_signed_reads:
        if not signing_key:
            raise ValueError("signed reads need a signing key")
        policies.append(SignedURLs(signing_key, ("read", "list")))
    else:
        policies.append(AllowReads())
        if signing_key:
            policies.append(SignedURLs(signing_key))
    if upload_token:
        policies.append(BearerToken(upload_token))
    return AnyOf(*policies)
