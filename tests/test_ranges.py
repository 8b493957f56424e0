"""Range parsing and resolution (pure; no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridserve.ranges import (
    ByteRange,
    RangeOutcome,
    RangeSpec,
    coalesce,
    parse_range_header,
    plan_multipart,
    resolve_ranges,
)
from tests.multipart import parse_byteranges


def outcome(header: str | None, length: int) -> tuple[RangeOutcome, tuple[tuple[int, int], ...]]:
    decision = resolve_ranges(parse_range_header(header), length)
    return decision.outcome, tuple((r.start, r.end) for r in decision.ranges)


FULL, PARTIAL, UNSAT = RangeOutcome.FULL, RangeOutcome.PARTIAL, RangeOutcome.UNSATISFIABLE


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        ("bytes=0-99", 1000, (PARTIAL, ((0, 99),))),
        ("bytes=100-", 1000, (PARTIAL, ((100, 999),))),
        ("bytes=-500", 1000, (PARTIAL, ((500, 999),))),
        ("bytes=-5000", 1000, (PARTIAL, ((0, 999),))),  # suffix longer than the file
        ("bytes=900-5000", 1000, (PARTIAL, ((900, 999),))),  # end clamped
        ("bytes=0-1", 1000, (PARTIAL, ((0, 1),))),  # Safari's probe
        ("bytes=999-999", 1000, (PARTIAL, ((999, 999),))),
        ("bytes=1000-", 1000, (UNSAT, ())),
        ("bytes=1000-2000", 1000, (UNSAT, ())),
        ("bytes=-0", 1000, (UNSAT, ())),
        ("BYTES = 0-9", 1000, (PARTIAL, ((0, 9),))),  # unit is case-insensitive
        ("bytes=0-9,", 1000, (PARTIAL, ((0, 9),))),  # empty list elements are allowed
        (" bytes=0-9 ,\t20-29", 1000, (PARTIAL, ((0, 9), (20, 29)))),
        ("bytes=0-", 0, (FULL, ())),  # zero-length file: Range ignored
        ("bytes=-1", 0, (FULL, ())),
        (None, 1000, (FULL, ())),
    ],
)
def test_resolve(
    header: str | None, length: int, expected: tuple[RangeOutcome, tuple[tuple[int, int], ...]]
) -> None:
    assert outcome(header, length) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",
        "bytes=",
        "bytes=,",
        "items=0-9",
        "bytes=9-0",
        "bytes=a-b",
        "bytes=0-9,x",
        "bytes=--5",
        "bytes=-5-",
        "bytes=+1-2",
        "bytes=1.5-2",
        "bytes=0x10-20",
        "bytes=1 -2",
        "bytes=١-٢",  # non-ASCII digits
        "bytes=0-9;q=1",
    ],
)
def test_invalid_headers_are_ignored(header: str) -> None:
    assert parse_range_header(header) is None
    assert outcome(header, 1000) == (FULL, ())


def test_huge_numbers_do_not_overflow_or_hang() -> None:
    huge = "9" * 5000
    assert outcome(f"bytes=0-{huge}", 1000) == (PARTIAL, ((0, 999),))
    assert outcome(f"bytes={huge}-", 1000) == (UNSAT, ())
    assert outcome(f"bytes=-{huge}", 1000) == (PARTIAL, ((0, 999),))
    assert outcome(f"bytes={2**64}-{2**65}", 1000) == (UNSAT, ())


def test_unsatisfiable_ranges_are_dropped_not_fatal() -> None:
    assert outcome("bytes=5000-6000,0-9", 1000) == (PARTIAL, ((0, 9),))
    assert outcome("bytes=5000-6000,7000-", 1000) == (UNSAT, ())


def test_overlapping_and_adjacent_ranges_coalesce() -> None:
    assert outcome("bytes=0-9,5-19,20-29,100-109", 1000) == (PARTIAL, ((0, 29), (100, 109)))
    assert outcome("bytes=500-599,0-9", 1000) == (PARTIAL, ((0, 9), (500, 599)))


def test_multi_range_covering_everything_is_sent_whole() -> None:
    assert outcome("bytes=0-499,500-", 1000) == (FULL, ())


def test_abusive_range_sets_get_the_whole_file() -> None:
    many = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(17))
    assert outcome(many, 10_000) == (FULL, ())
    overlapping = "bytes=" + ",".join("0-999" for _ in range(3))
    assert outcome(overlapping, 1000) == (FULL, ())
    commas = "bytes=0-1" + "," * 10_000
    assert outcome(commas, 1000) == (PARTIAL, ((0, 1),))


def test_coalesce_keeps_disjoint_ranges() -> None:
    assert coalesce([ByteRange(10, 19), ByteRange(0, 8)]) == (ByteRange(0, 8), ByteRange(10, 19))
    assert coalesce([ByteRange(0, 8), ByteRange(9, 9)]) == (ByteRange(0, 9),)


def test_content_range_and_size() -> None:
    r = ByteRange(5, 9)
    assert r.size == 5
    assert r.content_range(100) == "bytes 5-9/100"


def test_multipart_framing_parses_back() -> None:
    data = bytes(range(256)) * 4
    ranges = (ByteRange(0, 9), ByteRange(500, 519))
    plan = plan_multipart(ranges, len(data), "video/webm", boundary="b0undary")
    body = b"".join(
        h + data[r.start : r.end + 1] for h, r in zip(plan.part_headers, plan.ranges, strict=True)
    )
    body += plan.closing
    assert len(body) == plan.content_length
    assert parse_byteranges(plan.content_type, body) == [
        ("video/webm", "bytes 0-9/1024", data[0:10]),
        ("video/webm", "bytes 500-519/1024", data[500:520]),
    ]


def test_multipart_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        plan_multipart([ByteRange(0, 1)], 10, "text/plain\r\nX-Evil: 1")


@given(
    length=st.integers(0, 10_000),
    first=st.integers(0, 12_000),
    span=st.integers(0, 12_000) | st.none(),
)
def test_resolved_single_range_is_within_the_file(
    length: int, first: int, span: int | None
) -> None:
    last = None if span is None else first + span
    spec = RangeSpec(first=first, last=last)
    resolved = spec.resolve(length)
    if first >= length:
        assert resolved is None
    else:
        assert resolved is not None
        assert 0 <= resolved.start <= resolved.end < length
        assert resolved.end == (length - 1 if last is None else min(last, length - 1))


@given(st.text(max_size=200))
def test_parser_never_raises(header: str) -> None:
    specs = parse_range_header(header)
    decision = resolve_ranges(specs, 1000)
    for r in decision.ranges:
        assert 0 <= r.start <= r.end < 1000
