"""Content types and Content-Disposition (pure; no server)."""

from __future__ import annotations

import pytest

from gridserve.mediatypes import choose_content_type, content_disposition, guess_type, is_passive


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("live/index.m3u8", "application/vnd.apple.mpegurl"),
        ("show/ep1/seg001.ts", "video/mp2t"),
        ("dash/seg-1.m4s", "video/iso.segment"),
        ("clip.webm", "video/webm"),
        ("clip.MP4", "video/mp4"),
        ("song.mp3", "audio/mpeg"),
        ("song.ogg", "audio/ogg"),
        ("voice.opus", "audio/ogg"),
        ("track.flac", "audio/flac"),
        ("noextension", "application/octet-stream"),
        ("weird.zzzqqq", "application/octet-stream"),
    ],
)
def test_guess_type(name: str, expected: str) -> None:
    assert guess_type(name) == expected


def test_stored_type_wins_when_valid() -> None:
    assert choose_content_type("audio/ogg; codecs=opus", "x.bin") == "audio/ogg; codecs=opus"
    assert choose_content_type("text/html\r\nX-Evil: 1", "a.mp4") == "video/mp4"
    assert choose_content_type("not a type", "a.mp3") == "audio/mpeg"
    assert choose_content_type(None, "a.flac") == "audio/flac"


def test_passive_types() -> None:
    assert is_passive("video/webm") and is_passive("audio/mpeg") and is_passive("image/png")
    assert not is_passive("image/svg+xml")
    assert not is_passive("text/html; charset=utf-8")
    assert not is_passive("application/octet-stream")


@pytest.mark.parametrize(
    ("filename", "attachment", "expected"),
    [
        ("show/ep1.webm", False, 'inline; filename="ep1.webm"'),
        ("a.mp3", True, 'attachment; filename="a.mp3"'),
        (
            "Motörhead – Ace.mp3",
            False,
            'inline; filename="Mot_rhead _ Ace.mp3"; '
            "filename*=UTF-8''Mot%C3%B6rhead%20%E2%80%93%20Ace.mp3",
        ),
        (
            'evil"\r\nSet-Cookie: x=1.txt',
            False,
            "inline; filename=\"evil___Set-Cookie: x=1.txt\"; filename*=UTF-8''"
            "evil%22%0D%0ASet-Cookie%3A%20x%3D1.txt",
        ),
        ("dir/", False, 'inline; filename="download"'),
    ],
)
def test_content_disposition(filename: str, attachment: bool, expected: str) -> None:
    value = content_disposition(filename, attachment=attachment)
    assert value == expected
    assert "\r" not in value and "\n" not in value
