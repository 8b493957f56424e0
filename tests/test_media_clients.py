"""Real clients against a live server: curl, ffprobe and ffmpeg seeking in generated media.

The media is generated per session with ffmpeg from lavfi test sources (nothing large is
committed). Byte counts come from a counting TCP proxy in front of the server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PutFile, report_figure
from tests.livehttp import LiveServer
from tests.multipart import parse_byteranges

pytestmark = pytest.mark.media

GRIDFS_CHUNK = 255 * 1024


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (scripts/test installs it from Debian)")
    return path


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60 s H.264/AAC MP4 (faststart) and a 20 s VP9/Opus WebM."""
    out = tmp_path_factory.mktemp("media")
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi"]
    sine = ["-i", "sine=frequency=440:sample_rate=48000"]
    mp4 = [*lavfi, *sine, "-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50"]
    mp4 += ["-b:v", "1200k", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"]
    mp4 += ["-movflags", "+faststart", str(out / "clip.mp4")]
    webm = [*lavfi, *sine, "-t", "20", "-c:v", "libvpx-vp9", "-deadline", "realtime"]
    webm += ["-cpu-used", "8", "-b:v", "300k", "-g", "25", "-c:a", "libopus", "-b:a", "48k"]
    webm += [str(out / "clip.webm")]
    for args in (mp4, webm):
        result = run(tool("ffmpeg"), "-v", "error", "-y", *args, timeout=300)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    return out


@pytest.fixture
def mp4(media_dir: Path, put_file: PutFile) -> bytes:
    data = (media_dir / "clip.mp4").read_bytes()
    put_file("videos/clip.mp4", data, chunk_size=GRIDFS_CHUNK)
    return data


@pytest.fixture
def proxied(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(counting_proxy=True)


def test_curl_single_and_multiple_ranges(proxied: LiveServer, mp4: bytes, tmp_path: Path) -> None:
    url = proxied.url("/fs/videos/clip.mp4")
    single = run(tool("curl"), "-sS", "-f", "-r", "1000000-1000999", url)
    assert single.returncode == 0, single.stderr
    assert single.stdout == mp4[1_000_000:1_001_000]

    headers_file, body_file = tmp_path / "headers", tmp_path / "body"
    multi = run(
        tool("curl"), "-sS", "-D", str(headers_file), "-o", str(body_file), "-r", "0-9,20-29", url
    )
    assert multi.returncode == 0, multi.stderr
    content_type = next(
        line.split(":", 1)[1].strip()
        for line in headers_file.read_text().splitlines()
        if line.lower().startswith("content-type:")
    )
    body = body_file.read_bytes()
    assert parse_byteranges(content_type, body) == [
        ("video/mp4", f"bytes 0-9/{len(mp4)}", mp4[0:10]),
        ("video/mp4", f"bytes 20-29/{len(mp4)}", mp4[20:30]),
    ]


def test_ffprobe_reads_the_container_over_http(proxied: LiveServer, mp4: bytes) -> None:
    result = run(
        tool("ffprobe"),
        "-v",
        "error",
        "-show_entries",
        "format=duration:stream=codec_name",
        "-of",
        "json",
        proxied.proxy_url("/fs/videos/clip.mp4"),
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert abs(float(info["format"]["duration"]) - 60) < 0.5
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert proxied.bytes_to_client < len(mp4) / 4


def test_ffmpeg_seeks_to_90_percent_reading_a_small_fraction(
    proxied: LiveServer, mp4: bytes
) -> None:
    result = run(
        tool("ffmpeg"),
        "-v",
        "error",
        "-ss",
        "54",
        "-i",
        proxied.proxy_url("/fs/videos/clip.mp4"),
        "-frames:v",
        "1",
        "-f",
        "image2pipe",
        "-c:v",
        "ppm",
        "-",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"P6\n640 360\n")  # one decoded 640x360 frame
    fraction = proxied.bytes_to_client / len(mp4)
    report_figure(f"ffmpeg -ss 90%: {proxied.bytes_to_client} of {len(mp4)} bytes ({fraction:.1%})")
    assert fraction < 0.2, f"seeking to 90% moved {fraction:.0%} of the file"


def test_ffprobe_webm_vp9_opus(proxied: LiveServer, media_dir: Path, put_file: PutFile) -> None:
    put_file("clip.webm", (media_dir / "clip.webm").read_bytes(), chunk_size=GRIDFS_CHUNK)
    result = run(
        tool("ffprobe"),
        "-v",
        "error",
        "-show_entries",
        "stream=codec_name",
        "-of",
        "json",
        proxied.url("/fs/clip.webm"),
    )
    assert result.returncode == 0, result.stderr
    codecs = sorted(s["codec_name"] for s in json.loads(result.stdout)["streams"])
    assert codecs == ["opus", "vp9"]
