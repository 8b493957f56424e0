"""Validators and the conditional-request decision (pure; no server)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridserve.validators import (
    ETag,
    Precondition,
    etag_for,
    evaluate_preconditions,
    if_range_allows_partial,
    parse_etag_list,
    parse_http_date,
)

TAG = ETag('"abc"')
MODIFIED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
BEFORE = "Fri, 02 Jan 2026 03:04:04 GMT"
AT = "Fri, 02 Jan 2026 03:04:05 GMT"
AFTER = "Fri, 02 Jan 2026 03:04:06 GMT"

PROCEED, NOT_MODIFIED, FAILED = Precondition.PROCEED, Precondition.NOT_MODIFIED, Precondition.FAILED


def decide(method: str = "GET", **headers: str) -> Precondition:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return evaluate_preconditions(method, named, TAG, MODIFIED)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, PROCEED),
        ({"If_Match": '"abc"'}, PROCEED),
        ({"If_Match": '"x", "abc"'}, PROCEED),
        ({"If_Match": "*"}, PROCEED),
        ({"If_Match": '"x"'}, FAILED),
        ({"If_Match": 'W/"abc"'}, FAILED),  # If-Match compares strongly
        ({"If_Unmodified_Since": AT}, PROCEED),
        ({"If_Unmodified_Since": BEFORE}, FAILED),
        ({"If_Match": '"abc"', "If_Unmodified_Since": BEFORE}, PROCEED),  # If-Match wins
        ({"If_None_Match": '"abc"'}, NOT_MODIFIED),
        ({"If_None_Match": 'W/"abc"'}, NOT_MODIFIED),  # If-None-Match compares weakly
        ({"If_None_Match": '"x", W/"abc"'}, NOT_MODIFIED),
        ({"If_None_Match": "*"}, NOT_MODIFIED),
        ({"If_None_Match": '"x"'}, PROCEED),
        ({"If_Modified_Since": AT}, NOT_MODIFIED),
        ({"If_Modified_Since": AFTER}, NOT_MODIFIED),
        ({"If_Modified_Since": BEFORE}, PROCEED),
        ({"If_None_Match": '"x"', "If_Modified_Since": AFTER}, PROCEED),  # INM wins
        ({"If_Match": '"x"', "If_None_Match": '"abc"'}, FAILED),  # 412 before 304
        ({"If_Modified_Since": "yesterday"}, PROCEED),  # invalid date: ignored
        ({"If_None_Match": "abc"}, PROCEED),  # unquoted: invalid, ignored
        ({"If_Match": "garbage"}, PROCEED),
    ],
)
def test_get_preconditions(headers: dict[str, str], expected: Precondition) -> None:
    assert decide(**headers) == expected


def test_if_none_match_on_other_methods_fails_and_ims_is_ignored() -> None:
    assert decide("DELETE", If_None_Match='"abc"') == FAILED
    assert decide("DELETE", If_Modified_Since=AFTER) == PROCEED


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (None, True),
        ('"abc"', True),
        ('"x"', False),
        ('W/"abc"', False),  # If-Range needs a strong match
        (AT, True),
        (BEFORE, False),
        (AFTER, False),  # a date must match exactly
        ("garbage", False),
    ],
)
def test_if_range(value: str | None, allowed: bool) -> None:
    assert if_range_allows_partial(value, TAG, MODIFIED) is allowed


def test_parse_etag_list() -> None:
    assert parse_etag_list('"a", W/"b" ,"c"') == [ETag('"a"'), ETag('"b"', weak=True), ETag('"c"')]
    assert parse_etag_list("*") == "*"
    assert parse_etag_list('"a" "b"') is None
    assert parse_etag_list("") is None


def test_http_dates() -> None:
    assert parse_http_date(AT) == MODIFIED
    assert parse_http_date("Friday, 02-Jan-26 03:04:05 GMT") == MODIFIED  # RFC 850
    assert parse_http_date("Fri Jan  2 03:04:05 2026") == MODIFIED  # asctime
    assert parse_http_date("x" * 1000) is None
    assert parse_http_date("Fri, 99 Jan 2026 03:04:05 GMT") is None


def test_etag_prefers_the_stored_digest() -> None:
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert etag_for(1, 10, when, "ABCDEF", {}) == ETag('"abcdef"')
    assert etag_for(1, 10, when, None, {"sha256": "00ff"}) == ETag('"00ff"')
    fallback = etag_for(1, 10, when, None, {})
    assert fallback.opaque.startswith('"g') and not fallback.weak
    assert etag_for(2, 10, when, None, {}) != fallback
    assert etag_for(1, 11, when, None, {}) != fallback
    assert etag_for(1, 10, when.replace(microsecond=1000), None, {}) != fallback
    assert etag_for(1, 10, when, "not hex!", {}) == fallback


@given(st.text(max_size=100), st.text(max_size=100), st.text(max_size=100))
def test_decision_never_raises(if_match: str, if_none_match: str, since: str) -> None:
    headers = {"If-Match": if_match, "If-None-Match": if_none_match, "If-Modified-Since": since}
    assert evaluate_preconditions("GET", headers, TAG, MODIFIED) in Precondition
    assert if_range_allows_partial(since, TAG, MODIFIED) in (True, False)


def test_etag_falls_back_to_the_backends_own_validator() -> None:
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert etag_for(1, 10, when, None, {}, '"abc-3"') == ETag('"abc-3"')
    assert etag_for(1, 10, when, None, {}, "abc-3") == ETag('"abc-3"')
    assert etag_for(1, 10, when, "ff", {}, '"abc-3"') == ETag('"ff"')  # a digest wins
    assert etag_for(1, 10, when, None, {}, 'W/"weak"') == etag_for(1, 10, when, None, {})
