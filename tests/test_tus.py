"""The tus protocol's decisions (gridserve.tus): pure, no server."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridserve import tus
from gridserve.storage.resumable import Checksum, UploadState
from gridserve.tus import TusError

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def state(offset: int = 0, length: int | None = 100, owner: str = "") -> UploadState:
    return UploadState("id", "a.mp4", length, offset, NOW, NOW + timedelta(hours=1), owner=owner)


def status_of(call: object, *args: object, **kwargs: object) -> int:
    with pytest.raises(TusError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value.status


# -- version and capabilities -----------------------------------------------------------------


def test_version_missing_or_other_is_412_with_tus_version() -> None:
    for value in (None, "0.2.2", "", "1.0"):
        with pytest.raises(TusError) as caught:
            tus.check_version(value)
        assert caught.value.status == 412
        assert caught.value.headers == {"Tus-Version": "1.0.0"}
    tus.check_version("1.0.0")


def test_capabilities() -> None:
    headers = tus.capability_headers(1000)
    assert headers["Tus-Version"] == "1.0.0"
    assert headers["Tus-Max-Size"] == "1000"
    assert set(headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
        "checksum",
    }
    assert {"sha1", "sha256"} <= set(headers["Tus-Checksum-Algorithm"].split(","))
    assert "Tus-Max-Size" not in tus.capability_headers(None)


# -- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "+1", "1.0", "0x10", "", "1 2", "9" * 19, "١"])
def test_malformed_counts_are_400(value: str) -> None:
    assert status_of(tus.parse_count, value, "Upload-Offset") == 400


def test_counts() -> None:
    assert tus.parse_count(None, "Upload-Offset") is None
    assert tus.parse_count(" 42 ", "Upload-Offset") == 42
    assert tus.parse_count("0", "Upload-Length") == 0


def test_defer_length_only_1() -> None:
    assert tus.parse_defer_length(None) is False
    assert tus.parse_defer_length("1") is True
    for value in ("0", "true", "2", ""):
        assert status_of(tus.parse_defer_length, value) == 400


# -- metadata ---------------------------------------------------------------------------------


def test_metadata_pairs_and_bare_keys() -> None:
    parsed = tus.parse_metadata(f"filename {b64('vidéo a.mp4')},filetype {b64('video/mp4')},x")
    assert parsed == {"filename": "vidéo a.mp4", "filetype": "video/mp4", "x": ""}
    assert tus.parse_metadata(None) == {} == tus.parse_metadata("  ")


@pytest.mark.parametrize(
    "value",
    [
        "filename not-base64!",
        "filename YQ",  # unpadded
        f"a {b64('x')},a {b64('y')}",  # repeated key
        f"a {b64('x')} extra",
        "filename " + base64.b64encode(b"\xff\xfe").decode(),  # not UTF-8
        "k " + b64("x" * 5000),  # too large
        ",",
    ],
)
def test_bad_metadata_is_400(value: str) -> None:
    assert status_of(tus.parse_metadata, value) == 400


@given(
    st.dictionaries(
        st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
            min_size=1,
            max_size=20,
        ),
        st.text(max_size=50),
        max_size=8,
    )
)
def test_metadata_round_trips(metadata: dict[str, str]) -> None:
    assert tus.parse_metadata(tus.format_metadata(metadata)) == metadata


# -- checksum ---------------------------------------------------------------------------------


def test_checksum_parsed_for_every_algorithm() -> None:
    for algorithm in ("sha1", "sha256", "md5", "sha512"):
        digest = hashlib.new(algorithm, b"abc").digest()
        value = f"{algorithm} {base64.b64encode(digest).decode()}"
        assert tus.parse_checksum(value) == Checksum(algorithm, digest)
    assert tus.parse_checksum(None) is None


@pytest.mark.parametrize(
    "value",
    [
        "crc32 AAAAAA==",  # unsupported algorithm: the extension says 400
        "sha1 !!!!",
        "sha1 " + base64.b64encode(b"short").decode(),  # wrong digest size
        "sha256",
    ],
)
def test_bad_checksum_is_400(value: str) -> None:
    assert status_of(tus.parse_checksum, value) == 400


# -- creation ---------------------------------------------------------------------------------


def test_creation() -> None:
    creation = tus.parse_creation(
        {"Upload-Length": "10", "Upload-Metadata": f"filename {b64('a.mp4')}"}, None
    )
    assert (creation.length, creation.filename, creation.filetype) == (10, "a.mp4", None)
    deferred = tus.parse_creation({"Upload-Defer-Length": "1"}, 5)
    assert deferred.length is None and deferred.filename is None


def test_creation_refusals() -> None:
    both = {"Upload-Length": "10", "Upload-Defer-Length": "1"}
    assert status_of(tus.parse_creation, both, None) == 400
    assert status_of(tus.parse_creation, {}, None) == 400
    assert status_of(tus.parse_creation, {"Upload-Length": "11"}, 10) == 413
    assert tus.parse_creation({"Upload-Length": "10"}, 10).length == 10
    partial = {"Upload-Length": "10", "Upload-Concat": "partial"}
    assert status_of(tus.parse_creation, partial, None) == 400


# -- appends ----------------------------------------------------------------------------------


def test_patch_content_type_is_415() -> None:
    tus.check_patch_type("application/offset+octet-stream")
    tus.check_patch_type("Application/Offset+Octet-Stream; charset=x")
    for value in (None, "application/octet-stream", "text/plain"):
        assert status_of(tus.check_patch_type, value) == 415


def test_append_offsets_and_room() -> None:
    append = tus.parse_append(state(40), {"Upload-Offset": "40", "Content-Length": "60"}, None)
    assert (append.offset, append.length, append.room, append.checksum) == (40, None, 60, None)
    assert status_of(tus.parse_append, state(40), {"Upload-Offset": "39"}, None) == 409
    assert status_of(tus.parse_append, state(40), {}, None) == 400
    too_many = {"Upload-Offset": "40", "Content-Length": "61"}
    assert status_of(tus.parse_append, state(40), too_many, None) == 413


def test_append_sets_a_deferred_length_once() -> None:
    deferred = state(10, length=None)
    append = tus.parse_append(deferred, {"Upload-Offset": "10", "Upload-Length": "30"}, None)
    assert (append.length, append.room) == (30, 20)
    below = {"Upload-Offset": "10", "Upload-Length": "9"}
    assert status_of(tus.parse_append, deferred, below, None) == 409
    over = {"Upload-Offset": "10", "Upload-Length": "31"}
    assert status_of(tus.parse_append, deferred, over, 30) == 413
    other = {"Upload-Offset": "10", "Upload-Length": "99"}
    assert status_of(tus.parse_append, state(10), other, None) == 409
    # Repeating the length already set is no change: no length passed on.
    same = tus.parse_append(state(10), {"Upload-Offset": "10", "Upload-Length": "100"}, None)
    assert same.length is None


def test_deferred_room_is_the_max_size() -> None:
    deferred = state(10, length=None)
    assert tus.parse_append(deferred, {"Upload-Offset": "10"}, 50).room == 40
    assert tus.parse_append(deferred, {"Upload-Offset": "10"}, None).room is None
    big = {"Upload-Offset": "10", "Content-Length": "41"}
    assert status_of(tus.parse_append, deferred, big, 50) == 413


def test_creation_body_starts_at_zero_without_upload_offset() -> None:
    append = tus.parse_append(state(0, 5), {"Content-Length": "5"}, None, offset=0)
    assert (append.offset, append.room) == (0, 5)


# -- expiry and owners ------------------------------------------------------------------------


def test_expires_is_an_imf_fixdate() -> None:
    assert tus.format_expires(NOW) == "Fri, 02 Jan 2026 03:04:05 GMT"
    assert tus.format_expires(NOW.replace(tzinfo=None)) == "Fri, 02 Jan 2026 03:04:05 GMT"
    later = tus.expires_at(NOW, 3600)
    assert later - NOW == timedelta(hours=1)
    assert not tus.is_expired(state(), NOW)
    assert tus.is_expired(state(), NOW + timedelta(hours=1))


def test_owner_fingerprints() -> None:
    alice = tus.owner_of("Bearer alice")
    assert alice == tus.owner_of("Bearer alice") != tus.owner_of("Bearer bob")
    assert "alice" not in alice and len(alice) == 64
    assert tus.owner_of(None) == "" == tus.owner_of("")
    assert tus.owned_by(state(owner=alice), alice)
    assert not tus.owned_by(state(owner=alice), tus.owner_of("Bearer bob"))
    assert not tus.owned_by(state(owner=alice), "")


def test_owner_fingerprints_keyed() -> None:
    keyed = tus.owner_of("Bearer alice", b"key")
    assert keyed != tus.owner_of("Bearer alice") and len(keyed) == 64
    assert keyed != tus.owner_of("Bearer alice", b"other key")
    assert tus.owner_of(None, b"key") == ""
    owners = tus.owners_of("Bearer alice", [b"new", b"key"])
    assert owners[1] == keyed and tus.owned_by(state(owner=keyed), owners)
    assert not tus.owned_by(state(owner=keyed), tus.owners_of("Bearer alice"))
    assert tus.owners_of("Bearer alice") == [tus.owner_of("Bearer alice")]
