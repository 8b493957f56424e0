"""Validators and the conditional-request decision (RFC 9110 §8.8, §13).

Pure functions: what ETag and Last-Modified a stored file has, and what a request's
preconditions say about it. The handler calls :func:`evaluate_preconditions` once, then
:func:`if_range_allows_partial` before honouring ``Range``.
"""

from __future__ import annotations

import email.utils
import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text
_ETAG_RE = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class ETag:
    """An entity tag: ``opaque`` includes its double quotes, as on the wire."""

    opaque: str
    weak: bool = False

    def __str__(self) -> str:
        return ("W/" if self.weak else "") + self.opaque

    def strong_match(self, other: ETag) -> bool:
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: ETag) -> bool:
        return self.opaque == other.opaque


ANY = "*"


def parse_etag_list(value: str | None) -> list[ETag] | str | None:
    """Parses ``If-Match``/``If-None-Match``: a list of ETags, ``"*"``, or None if invalid.

    An invalid header is treated as absent by the caller (the precondition is not evaluated),
    which is what RFC 9110 §13.1 expects of a field whose value cannot be parsed.
    """
    if value is None:
        return None
    text = value.strip()
    if text == ANY:
        return ANY
    tags: list[ETag] = []
    pos = 0
    while pos < len(text):
        if text[pos] in " \t,":
            pos += 1
            continue
        m = _ETAG_RE.match(text, pos)
        if not m:
            return None
        tags.append(ETag(m.group(2), weak=bool(m.group(1))))
        pos = m.end()
    return tags or None


def parse_etag(value: str | None) -> ETag | None:
    """Parses a single entity tag (as in ``If-Range``), or None."""
    tags = parse_etag_list(value)
    if isinstance(tags, list) and len(tags) == 1:
        return tags[0]
    return None


def parse_http_date(value: str | None) -> datetime | None:
    """Parses an HTTP-date (IMF-fixdate or the obsolete forms) to an aware UTC datetime."""
    if not value or len(value) > 64:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def http_seconds(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime truncated to whole seconds (HTTP-date precision)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def etag_for(
    file_id: Any,
    length: int,
    upload_date: datetime,
    md5: str | None,
    metadata: Mapping[str, Any],
    native: str | None = None,
) -> ETag:
    """The strong ETag of a stored file, computed without reading its content.

    In order of preference: the top-level ``md5`` GridFS (and our uploads) store; a digest kept
    in metadata (``sha256`` or ``md5``); the backend's own strong validator (``native``, such as
    S3's ETag); else a hash of (id, length, uploadDate), which changes whenever the stored bytes
    could have.
    """
    if md5 and _HEX_RE.fullmatch(md5):
        return ETag(f'"{md5.lower()}"')
    for key in ("sha256", "md5"):
        digest = metadata.get(key)
        if isinstance(digest, str) and _HEX_RE.fullmatch(digest):
            return ETag(f'"{digest.lower()}"')
    if native:
        tag = parse_etag(native if native.startswith('"') else f'"{native}"')
        if tag is not None and not tag.weak:
            return tag
    identity = f"{file_id}\x00{length}\x00{upload_date.isoformat()}"
    return ETag(f'"g{hashlib.sha256(identity.encode()).hexdigest()[:32]}"')


class Precondition(enum.Enum):
    PROCEED = 200
    NOT_MODIFIED = 304
    FAILED = 412


def evaluate_preconditions(
    method: str,
    headers: Mapping[str, str],
    etag: ETag,
    last_modified: datetime,
) -> Precondition:
    """Evaluates the preconditions of a request on an existing representation.

    Order and rules of RFC 9110 §13.2.2; ``last_modified`` must be whole seconds, UTC.
    """
    if_match = parse_etag_list(headers.get("If-Match"))
    if if_match is not None:
        # §13.1.1: strong comparison; "*" matches any current representation.
        if isinstance(if_match, list) and not any(etag.strong_match(t) for t in if_match):
            return Precondition.FAILED
    else:
        # §13.1.4: only evaluated when If-Match is absent.
        since = parse_http_date(headers.get("If-Unmodified-Since"))
        if since is not None and last_modified > since:
            return Precondition.FAILED

    if_none_match = parse_etag_list(headers.get("If-None-Match"))
    if if_none_match is not None:
        # §13.1.2: weak comparison; a match is 304 for GET/HEAD, 412 for anything else.
        if not isinstance(if_none_match, list) or any(etag.weak_match(t) for t in if_none_match):
            return Precondition.NOT_MODIFIED if method in ("GET", "HEAD") else Precondition.FAILED
    elif method in ("GET", "HEAD"):
        # §13.1.3: only for GET/HEAD, and only when If-None-Match is absent.
        since = parse_http_date(headers.get("If-Modified-Since"))
        if since is not None and last_modified <= since:
            return Precondition.NOT_MODIFIED
    return Precondition.PROCEED


def if_range_allows_partial(value: str | None, etag: ETag, last_modified: datetime) -> bool:
    """True when ``If-Range`` is absent or matches, i.e. ``Range`` may be honoured (§13.1.5).

    An entity tag must match by strong comparison; a date must equal Last-Modified exactly.
    Anything else, including a header we cannot parse, means "send the whole thing".
    """
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        tag = parse_etag(value)
        return tag is not None and etag.strong_match(tag)
    date = parse_http_date(value)
    return date is not None and date == last_modified
