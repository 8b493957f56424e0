"""Byte ranges: parsing ``Range`` (RFC 9110 §14), resolving it against a length, framing.

Everything here is pure: header strings in, small typed values out. The HTTP layer parses a
header once with :func:`parse_range_header` and never passes the raw string around.

Decisions, each from RFC 9110 unless noted:

- A ``Range`` header that is not syntactically valid, or uses a unit other than ``bytes``, is
  ignored (§14.2): :func:`parse_range_header` returns ``None`` and the server sends 200.
- A range set is satisfiable when at least one of its ranges is (§14.1.1, §15.5.17); the
  unsatisfiable ones are dropped. Only when none is left is the answer 416.
- Overlapping and adjacent ranges are coalesced (§14.2 allows it, and it is the defence against
  many small overlapping ranges).
- Abuse is bounded (the lesson of Apache's CVE-2011-3192): a set with more than ``max_ranges``
  ranges, or whose ranges add up to more than ``max_overlap`` times the length before
  coalescing, is answered with the whole representation (:class:`RangeDecision` ``FULL``).
- A zero-length representation has no satisfiable byte range and no way to write one in
  ``Content-Range``; its Range header is ignored (200 with an empty body), which every player
  accepts, rather than 416, which some treat as fatal.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

# Positions longer than this many digits are beyond any file we could store; treat them as
# "infinitely large" rather than parse them (int() of a huge digit string is slow, and CPython
# refuses more than 4300 digits).
_MAX_DIGITS = 18
_HUGE: int = 10**_MAX_DIGITS

DEFAULT_MAX_RANGES = 16
DEFAULT_MAX_OVERLAP = 2


@dataclass(frozen=True)
class RangeSpec:
    """One ``range-spec`` as written by the client, not yet resolved against a length.

    ``first``/``last`` for ``first-last`` and ``first-``; ``suffix`` for ``-N``.
    """

    first: int | None = None
    last: int | None = None
    suffix: int | None = None

    def resolve(self, length: int) -> ByteRange | None:
        """The bytes this spec selects in a representation of ``length`` bytes, or None."""
        if self.suffix is not None:
            if self.suffix == 0 or length == 0:
                return None
            return ByteRange(max(0, length - self.suffix), length - 1)
        assert self.first is not None
        if self.first >= length:
            return None
        last = length - 1 if self.last is None else min(self.last, length - 1)
        return ByteRange(self.first, last)


@dataclass(frozen=True, order=True)
class ByteRange:
    """An inclusive, satisfiable byte range ``start..end`` within a known length."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def content_range(self, length: int) -> str:
        """The ``Content-Range`` value for this range of a ``length``-byte representation."""
        return f"bytes {self.start}-{self.end}/{length}"


class RangeOutcome(enum.Enum):
    FULL = "full"  # send the whole representation, 200
    PARTIAL = "partial"  # send ``ranges``, 206 (one range: plain; several: multipart)
    UNSATISFIABLE = "unsatisfiable"  # 416 with Content-Range: bytes */length


@dataclass(frozen=True)
class RangeDecision:
    outcome: RangeOutcome
    ranges: tuple[ByteRange, ...] = ()


def _parse_pos(text: str) -> int | None:
    if not text or not text.isascii() or not text.isdigit():
        return None
    stripped = text.lstrip("0")
    if len(stripped) > _MAX_DIGITS:
        return _HUGE
    return int(text) if stripped else 0


def parse_range_header(value: str | None) -> list[RangeSpec] | None:
    """Parses a ``Range`` header value into its range-specs, in the client's order.

    Returns None when the header is absent, not a ``bytes`` range, or invalid anywhere (a
    server must then ignore it, RFC 9110 §14.2). Empty list elements are skipped (§5.6.1).
    """
    if value is None:
        return None
    unit, sep, spec_text = value.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs: list[RangeSpec] = []
    for element in spec_text.split(","):
        element = element.strip(" \t")
        if not element:
            continue
        first_text, dash, last_text = element.partition("-")
        if not dash:
            return None
        if not first_text:
            suffix = _parse_pos(last_text)
            if suffix is None:
                return None
            specs.append(RangeSpec(suffix=suffix))
            continue
        first = _parse_pos(first_text)
        if first is None:
            return None
        if not last_text:
            specs.append(RangeSpec(first=first))
            continue
        last = _parse_pos(last_text)
        if last is None or last < first:
            return None
        specs.append(RangeSpec(first=first, last=last))
    return specs or None


def coalesce(ranges: Sequence[ByteRange]) -> tuple[ByteRange, ...]:
    """Merges overlapping and adjacent ranges; the result is sorted by start."""
    merged: list[ByteRange] = []
    for r in sorted(ranges):
        if merged and r.start <= merged[-1].end + 1:
            if r.end > merged[-1].end:
                merged[-1] = ByteRange(merged[-1].start, r.end)
        else:
            merged.append(r)
    return tuple(merged)


def resolve_ranges(
    specs: Sequence[RangeSpec] | None,
    length: int,
    *,
    max_ranges: int = DEFAULT_MAX_RANGES,
    max_overlap: int = DEFAULT_MAX_OVERLAP,
) -> RangeDecision:
    """Decides what to send for ``specs`` (from :func:`parse_range_header`) and ``length``.

    - None (no/invalid header), a zero length, or an abusive set: ``FULL``.
    - No satisfiable range: ``UNSATISFIABLE``.
    - Otherwise ``PARTIAL`` with the satisfiable ranges coalesced. A multi-range request whose
      coalesced ranges cover the whole representation is sent as ``FULL`` (cheaper, same bytes).
    """
    if specs is None or length == 0:
        return RangeDecision(RangeOutcome.FULL)
    if len(specs) > max_ranges:
        return RangeDecision(RangeOutcome.FULL)
    resolved = [r for r in (spec.resolve(length) for spec in specs) if r is not None]
    if not resolved:
        return RangeDecision(RangeOutcome.UNSATISFIABLE)
    if len(resolved) > 1 and sum(r.size for r in resolved) > max_overlap * length:
        return RangeDecision(RangeOutcome.FULL)
    ranges = coalesce(resolved)
    if len(specs) > 1 and ranges == (ByteRange(0, length - 1),):
        return RangeDecision(RangeOutcome.FULL)
    return RangeDecision(RangeOutcome.PARTIAL, ranges)


def unsatisfied_content_range(length: int) -> str:
    """The ``Content-Range`` value of a 416 response (RFC 9110 §14.4)."""
    return f"bytes */{length}"


@dataclass(frozen=True)
class MultipartPlan:
    """The framing of a ``multipart/byteranges`` body (RFC 9110 §14.6).

    The body is ``part_headers[i]`` followed by the bytes of ``ranges[i]`` for each i, then
    ``closing``. ``content_length`` is exact, so the response needs no chunked encoding.
    """

    boundary: str
    ranges: tuple[ByteRange, ...]
    part_headers: tuple[bytes, ...]
    closing: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return (
            sum(len(h) for h in self.part_headers)
            + sum(r.size for r in self.ranges)
            + len(self.closing)
        )


def plan_multipart(
    ranges: Sequence[ByteRange], length: int, content_type: str, boundary: str | None = None
) -> MultipartPlan:
    """Frames ``ranges`` of a ``length``-byte representation of ``content_type``."""
    boundary = boundary or secrets.token_hex(16)
    # Header values are the server's own (a stored content type is sanitised by the caller);
    # a CR or LF here would split the part headers, so refuse it outright.
    if "\r" in content_type or "\n" in content_type:
        raise ValueError("content type must not contain CR or LF")
    headers = tuple(
        (
            f"\r\n--{boundary}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Range: {r.content_range(length)}\r\n\r\n"
        ).encode("latin-1")
        for r in ranges
    )
    return MultipartPlan(boundary, tuple(ranges), headers, f"\r\n--{boundary}--\r\n".encode())
