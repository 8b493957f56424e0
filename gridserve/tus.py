"""The tus 1.0.0 resumable-upload protocol, decided without a server: headers parsed into
typed values, the statuses the protocol answers, and what the server advertises.

Pure: no I/O. :mod:`gridserve.handlers.tus` is the thin HTTP layer over this module and the
storage's partial-upload operations (:mod:`gridserve.storage.resumable`).

Every refusal is a :class:`TusError` carrying its status, a short reason and the headers the
status needs. The statuses, in the order a request meets them:

- 412 ``Tus-Resumable`` missing or not ``1.0.0`` (with ``Tus-Version``): :func:`check_version`.
- 400 a malformed ``Upload-Offset`` / ``Upload-Length`` / ``Upload-Defer-Length`` /
  ``Upload-Metadata`` / ``Upload-Checksum``, both or neither of length and defer-length at
  creation, an unsupported checksum algorithm (the checksum extension says 400).
- 415 a PATCH whose ``Content-Type`` is not ``application/offset+octet-stream``.
- 413 ``Upload-Length`` (or the bytes a PATCH announces) over ``Tus-Max-Size``, or a PATCH
  announcing more bytes than the upload has left.
- 404 an upload that does not exist, belongs to another credential, or has **expired**.
  tusd, the reference server, answers 404 (``ERR_UPLOAD_NOT_FOUND``) for every upload it no
  longer has and never 410; the spec allows either. 404 also keeps the no-oracle rule: an
  expired upload, a swept one, another credential's and one never created look alike.
- 409 ``Upload-Offset`` is not the stored offset, or a deferred length set twice differently.
- 423 another request is appending to this upload now.
- 460 the bytes did not match ``Upload-Checksum`` (they were discarded).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from gridserve.storage.resumable import CHECKSUM_ALGORITHMS, Checksum, UploadState

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "checksum",
)
PATCH_CONTENT_TYPE = "application/offset+octet-stream"
CHECKSUM_MISMATCH = 460
# Upload-Metadata is stored with the upload: a bound on what a client may make us keep.
MAX_METADATA_BYTES = 4096
DEFAULT_EXPIRY_SECONDS = 24 * 3600

_DIGITS_RE = re.compile(r"[0-9]{1,18}")
_METADATA_KEY_RE = re.compile(r"[!-+\--~]+")  # printable ASCII but space and comma
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class TusError(Exception):
    """A request the protocol refuses: ``status``, a short ASCII ``reason``, and the
    ``headers`` the answer carries (412's ``Tus-Version``)."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


# -- what the server advertises ---------------------------------------------------------------


def capability_headers(max_size: int | None) -> dict[str, str]:
    """The headers of an ``OPTIONS`` answer: version, extensions, checksum algorithms, and
    ``Tus-Max-Size`` when uploads are capped."""
    headers = {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }
    if max_size is not None:
        headers["Tus-Max-Size"] = str(max_size)
    return headers


def check_version(value: str | None) -> None:
    """412 (with ``Tus-Version``) unless the request speaks tus 1.0.0."""
    if value is None or value.strip() != TUS_VERSION:
        raise TusError(
            412,
            "Tus-Resumable 1.0.0 required" if value is None else "Unsupported Tus-Resumable",
            {"Tus-Version": TUS_VERSION},
        )


# -- numbers ----------------------------------------------------------------------------------


def parse_count(value: str | None, header: str) -> int | None:
    """A non-negative decimal header value (``Upload-Offset``, ``Upload-Length``): None when
    absent, 400 when it is anything but 1-18 digits (no sign, no spaces inside)."""
    if value is None:
        return None
    value = value.strip()
    if not _DIGITS_RE.fullmatch(value):
        raise TusError(400, f"Invalid {header}")
    return int(value)


def parse_defer_length(value: str | None) -> bool:
    """``Upload-Defer-Length``: absent False, ``1`` True, anything else 400."""
    if value is None:
        return False
    if value.strip() != "1":
        raise TusError(400, "Invalid Upload-Defer-Length")
    return True


# -- metadata ---------------------------------------------------------------------------------


def parse_metadata(value: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs (a key alone has the
    empty value). Keys are printable ASCII without space or comma and unique; values must be
    canonical base64 of UTF-8 text. 400 otherwise, or past :data:`MAX_METADATA_BYTES`."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA_BYTES * 2:
        raise TusError(400, "Upload-Metadata too large")
    pairs: dict[str, str] = {}
    size = 0
    for item in value.split(","):
        parts = item.strip().split(" ")
        if len(parts) > 2 or not _METADATA_KEY_RE.fullmatch(parts[0]):
            raise TusError(400, "Invalid Upload-Metadata")
        key = parts[0]
        if key in pairs:
            raise TusError(400, f"Upload-Metadata repeats {key}")
        encoded = parts[1] if len(parts) == 2 else ""
        if not _BASE64_RE.fullmatch(encoded) or len(encoded) % 4:
            raise TusError(400, f"Upload-Metadata {key} is not base64")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise TusError(400, f"Upload-Metadata {key} is not base64 of UTF-8 text") from None
        size += len(key) + len(decoded.encode("utf-8"))
        if size > MAX_METADATA_BYTES:
            raise TusError(400, "Upload-Metadata too large")
        pairs[key] = decoded
    return pairs


def format_metadata(metadata: Mapping[str, str]) -> str:
    """The inverse of :func:`parse_metadata`, for ``HEAD`` answers."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode('utf-8')).decode()}" if value else key
        for key, value in metadata.items()
    )


# -- checksum ---------------------------------------------------------------------------------


def parse_checksum(value: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``: None when absent; 400 for an algorithm
    not in :data:`~gridserve.storage.resumable.CHECKSUM_ALGORITHMS` or a digest that is not
    base64 of that algorithm's size."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise TusError(400, "Unsupported checksum algorithm")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise TusError(400, "Invalid Upload-Checksum") from None
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise TusError(400, "Invalid Upload-Checksum")
    return Checksum(algorithm, digest)


# -- requests ---------------------------------------------------------------------------------


def check_patch_type(content_type: str | None) -> None:
    """415 unless the body is ``application/offset+octet-stream`` (parameters ignored)."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base != PATCH_CONTENT_TYPE:
        raise TusError(415, f"Content-Type must be {PATCH_CONTENT_TYPE}")


@dataclasses.dataclass(frozen=True)
class Creation:
    """A creation request (``POST``): the total ``length`` (None: deferred), the decoded
    ``metadata`` and its ``filename`` / ``filetype``."""

    length: int | None
    metadata: dict[str, str]

    @property
    def filename(self) -> str | None:
        return self.metadata.get("filename") or None

    @property
    def filetype(self) -> str | None:
        return self.metadata.get("filetype") or None


def parse_creation(headers: Mapping[str, str], max_size: int | None) -> Creation:
    """The creation request in ``headers``: exactly one of ``Upload-Length`` and
    ``Upload-Defer-Length: 1`` (400), the length within ``max_size`` (413), the metadata; no
    ``Upload-Concat`` (400: concatenation is not offered)."""
    if headers.get("Upload-Concat") is not None:  # a client ignoring Tus-Extension
        raise TusError(400, "Upload-Concat: the concatenation extension is not supported")
    length = parse_count(headers.get("Upload-Length"), "Upload-Length")
    deferred = parse_defer_length(headers.get("Upload-Defer-Length"))
    if length is not None and deferred:
        raise TusError(400, "Upload-Length and Upload-Defer-Length both given")
    if length is None and not deferred:
        raise TusError(400, "Upload-Length or Upload-Defer-Length required")
    check_size(length, max_size)
    return Creation(length, parse_metadata(headers.get("Upload-Metadata")))


def check_size(length: int | None, max_size: int | None) -> None:
    """413 when ``length`` is over ``max_size`` (None: no limit / no length yet)."""
    if length is not None and max_size is not None and length > max_size:
        raise TusError(413, f"larger than the {max_size}-byte limit")


@dataclasses.dataclass(frozen=True)
class Append:
    """A ``PATCH`` (or the body of a creation-with-upload) to an upload in ``state``:
    ``offset``, the ``length`` it sets (a deferred one), its ``checksum``, and ``room``, the most
    bytes it may carry (None: unknown while the length is deferred and unbounded)."""

    offset: int
    length: int | None
    checksum: Checksum | None
    room: int | None


def parse_append(
    state: UploadState,
    headers: Mapping[str, str],
    max_size: int | None,
    *,
    offset: int | None = None,
) -> Append:
    """Decides an append to ``state`` from its headers (``offset`` given: a creation's body,
    which starts at 0 and carries no ``Upload-Offset``).

    400 malformed or missing ``Upload-Offset``; 409 the offset is not the stored one, or
    ``Upload-Length`` sets a length differing from the stored one or below the offset; 413 a
    length over ``max_size`` or a ``Content-Length`` past the room left."""
    if offset is None:
        offset = parse_count(headers.get("Upload-Offset"), "Upload-Offset")
        if offset is None:
            raise TusError(400, "Upload-Offset required")
        length = parse_count(headers.get("Upload-Length"), "Upload-Length")
    else:
        length = None
    checksum = parse_checksum(headers.get("Upload-Checksum"))
    if offset != state.offset:
        raise TusError(409, f"Upload-Offset {offset} is not the upload's offset {state.offset}")
    if length is not None:
        if state.length is not None and length != state.length:
            raise TusError(409, "Upload-Length differs from the upload's length")
        if length < state.offset:
            raise TusError(409, "Upload-Length below the upload's offset")
        check_size(length, max_size)
    total = state.length if state.length is not None else length
    room: int | None = total - offset if total is not None else None
    if room is None and max_size is not None:
        room = max_size - offset
    declared = parse_count(headers.get("Content-Length"), "Content-Length")
    if declared is not None and room is not None and declared > room:
        if total is None:
            raise TusError(413, f"larger than the {max_size}-byte limit")
        raise TusError(413, "more bytes than the upload has left")
    return Append(offset, length if state.length is None else None, checksum, room)


# -- expiry and ownership ---------------------------------------------------------------------


def expires_at(now: datetime, expiry_seconds: float) -> datetime:
    """When an upload touched at ``now`` expires. Sliding: creation and every PATCH renew it,
    so only an abandoned upload expires, never a slow one in progress. (tusd has no expiry of
    its own; tusdotnet's ``SlidingExpiration`` renews on every PATCH as well, and the spec
    says the value "MAY change over time".)"""
    return now + timedelta(seconds=expiry_seconds)


def is_expired(state: UploadState, now: datetime) -> bool:
    return state.expires_at <= now


def format_expires(moment: datetime) -> str:
    """``Upload-Expires``: an RFC 9110 IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return format_datetime(moment.astimezone(timezone.utc).replace(microsecond=0), usegmt=True)


def owner_of(authorization: str | None, key: bytes | None = None) -> str:
    """The owner fingerprint stored with an upload: a one-way hash of the request's
    ``Authorization`` header (``""`` without one: an open server, where the unguessable id is
    the authority), so the storage never holds the credential itself.

    Keyed (HMAC-SHA256 with ``key``, the server's signing key) when one is configured: then
    whoever can read the storage cannot test guesses of a weak credential (a Basic password)
    against the fingerprint. Unkeyed (SHA-256) without a key: a guess can be tested, so a
    server whose credentials are guessable should set ``--signing-key``. Either way stable
    across processes and hosts that share the configuration."""
    if not authorization:
        return ""
    message = b"gridserve tus owner\x00" + authorization.encode("utf-8")
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def owners_of(authorization: str | None, keys: Sequence[bytes] = ()) -> list[str]:
    """The fingerprints under which an upload of ``authorization`` may be stored: one per
    signing key (the first one's is what creation stores; the others' are uploads created
    before a key rotation), or the unkeyed one when no key is configured."""
    if not keys:
        return [owner_of(authorization)]
    return [owner_of(authorization, key) for key in keys]


def owned_by(state: UploadState, owner: str | Sequence[str]) -> bool:
    """Whether ``owner`` (a fingerprint, or several: :func:`owners_of`) is the upload's
    (constant time)."""
    candidates = [owner] if isinstance(owner, str) else owner
    matches = [hmac.compare_digest(state.owner.encode(), c.encode()) for c in candidates]
    return any(matches)
