"""Upload policy: names, sniffing, content-type decisions, type families (pure; no server)."""

from __future__ import annotations

import pytest

from gridserve.uploads import (
    ARCHIVES,
    AUDIO,
    EXECUTABLES,
    IMAGES,
    SCRIPTS,
    VIDEO,
    AllExcept,
    Only,
    Rejected,
    UploadPolicy,
    decide_content_type,
    renamed,
    sanitize_name,
    sniff,
)
from tests.conftest import UPLOAD_HEAD

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip.mp4", "clip.mp4"),
        ("show/ep1/seg001.ts", "show/ep1/seg001.ts"),
        ("Cafe\u0301.mp3", "Café.mp3"),  # NFC
    ],
)
def test_sanitize_accepts(name: str, expected: str) -> None:
    assert sanitize_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["", "a\x01b", "a\nb", "a\u202eb", "../x", "a/../b", "/abs", "a//b", "a/", ".env", "x/.git/y"],
)
def test_sanitize_rejects(name: str) -> None:
    with pytest.raises(Rejected) as raised:
        sanitize_name(name)
    assert raised.value.status == 400


def test_form_filenames_keep_only_the_basename() -> None:
    assert sanitize_name("../../etc/evil.mp4", basename_only=True) == "evil.mp4"
    assert sanitize_name("C:\\Users\\me\\song.mp3", basename_only=True) == "song.mp3"
    with pytest.raises(Rejected):
        sanitize_name("dir/..", basename_only=True)


def test_renamed() -> None:
    assert renamed("a/clip.mp4", 2) == "a/clip (2).mp4"
    assert renamed("noext", 3) == "noext (3)"


def test_sniff() -> None:
    assert sniff(UPLOAD_HEAD) == "application/octet-stream"  # the suite's upload_data()
    assert sniff(PNG) == "image/png"
    assert sniff(HTML) == "text/html"
    assert sniff(SVG) == "image/svg+xml"
    assert sniff(b"") in ("application/x-empty", "inode/x-empty")


@pytest.mark.parametrize(
    ("declared", "sniffed", "filename", "expected"),
    [
        ("image/png", "text/html", "x.png", "text/html"),  # HTML declared as PNG: not trusted
        ("image/png", "image/svg+xml", "x.png", "image/svg+xml"),
        ("text/html", "image/png", "x.html", "image/png"),  # nor PNG relabelled as HTML
        ("text/html", "text/plain", "x.txt", "text/plain"),
        (None, "text/plain", "page.html", "text/plain"),  # extension cannot make it active
        ("video/mp4", "image/png", "x.mp4", "image/png"),  # another family: the bytes win
        ("audio/ogg; codecs=opus", "audio/ogg", "a.opus", "audio/ogg; codecs=opus"),
        ("application/vnd.apple.mpegurl", "text/plain", "i.m3u8", "application/vnd.apple.mpegurl"),
        (None, "text/plain", "i.m3u8", "application/vnd.apple.mpegurl"),
        (None, "application/octet-stream", "seg.ts", "video/mp2t"),
        ("application/octet-stream", "video/webm", "x.bin", "video/webm"),
        ("garbage\r\nX: y", "application/octet-stream", "x.flac", "audio/flac"),
    ],
)
def test_decide_content_type(
    declared: str | None, sniffed: str, filename: str, expected: str
) -> None:
    assert decide_content_type(declared, sniffed, filename) == expected


def test_families_and_rules() -> None:
    media = Only(VIDEO + AUDIO)
    assert media.allows("a.webm", "video/webm")
    assert media.allows("a.m3u8", "application/vnd.apple.mpegurl")
    assert not media.allows("a.png", "image/png")
    safe = AllExcept(SCRIPTS + EXECUTABLES)
    assert safe.allows("a.png", "image/png")
    assert not safe.allows("a.html", "text/html")
    assert not safe.allows("x.txt", "image/svg+xml")
    assert not safe.allows("run.exe", "application/octet-stream")  # by extension
    assert not safe.allows("elf", "application/x-executable")
    assert Only(IMAGES + ARCHIVES).allows("a.zip", "application/zip")


def test_policy_limits() -> None:
    policy = UploadPolicy(max_size=10)
    policy.check_size(10)
    with pytest.raises(Rejected) as raised:
        policy.check_size(11)
    assert raised.value.status == 413
    with pytest.raises(Rejected) as raised:
        UploadPolicy().check_type("a.sh", "text/x-shellscript")
    assert raised.value.status == 415
