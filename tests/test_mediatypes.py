"""Content types and Content-Disposition (pure; no server)."""

from __future__ import annotations

import pytest

from gridserve.mediatypes import (
    choose_content_type,
    content_disposition,
    guess_type,
    is_passive,
    sniff_manifest,
)


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


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dash/manifest.mpd", "application/dash+xml"),
        ("subs/ep1.ass", "text/x-ssa"),  # Debian's /etc/mime.types: audio/aac
        ("cam/00001.MTS", "video/mp2t"),  # Debian's /etc/mime.types: model/vnd.mts
        ("subs/ep1.srt", "application/x-subrip"),
        ("subs/ep1.vtt", "text/vtt"),
        ("film.mkv", "video/x-matroska"),
        ("backup.tar.gz", "application/gzip"),
        ("logs.xz", "application/x-xz"),
        ("logs.bz2", "application/x-bzip2"),
        ("logs.zst", "application/zstd"),
    ],
)
def test_the_table_decides_whatever_the_machine_says(name: str, expected: str) -> None:
    import mimetypes

    ext = "." + name.rsplit(".", 1)[-1].lower()
    mimetypes.add_type("audio/aac", ext)  # as a machine's /etc/mime.types might
    assert guess_type(name) == expected


def test_the_machine_mime_types_are_never_read() -> None:
    import mimetypes

    mimetypes.add_type("text/x-machine-specific", ".zzqqmachine")
    assert guess_type("a.zzqqmachine") == "application/octet-stream"
    assert guess_type("page.html") == "text/html"  # Python's own table still answers


DASH = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<!-- made by ffmpeg -->\n'
    b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" profiles="x">'
    b"<Period><AdaptationSet/></Period>"  # the rest may be cut off: only the root counts
)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (DASH, "application/dash+xml"),
        (DASH[:150], "application/dash+xml"),
        (b"\xef\xbb\xbf" + DASH, "application/dash+xml"),
        (b'<MPD xmlns="urn:example">', None),  # not the DASH namespace
        (b'<MPD xmlns:d="urn:mpeg:dash:schema:mpd:2011">', None),  # MPD itself not in it
        (b'<html xmlns="http://www.w3.org/1999/xhtml"><MPD/></html>', None),
        (b'<!DOCTYPE MPD [<!ENTITY a "b">]><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"/>', None),
        (b"<svg onload=alert(1)>", None),
        (b"#EXTM3U\n#EXT-X-VERSION:3\nseg0.ts\n", "application/vnd.apple.mpegurl"),
        (b"#EXTM3U\r\n", "application/vnd.apple.mpegurl"),
        (b"#EXTM3Ux", None),
        (b"plain text", None),
    ],
)
def test_sniff_manifest(head: bytes, expected: str | None) -> None:
    assert sniff_manifest(head) == expected
