"""Small media files made with ffmpeg for the media tests (nothing is committed), and ffprobe
run directly on them, the reference the stored facts are compared with."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"]
AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]

# name -> ffmpeg arguments (after the inputs); each file is a second or two.
RECIPES: dict[str, list[str]] = {
    "clip.webm": [
        *VIDEO, *AUDIO, "-t", "2", "-c:v", "libvpx-vp9", "-deadline", "realtime",
        "-cpu-used", "8", "-b:v", "200k", "-c:a", "libopus", "-b:a", "48k",
    ],
    "clip-end.mp4": [  # ffmpeg's default: moov after mdat
        *VIDEO, *AUDIO, "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
    ],
    "clip-fast.mp4": [
        *VIDEO, *AUDIO, "-t", "2", "-c:v", "mpeg4", "-q:v", "5", "-c:a", "aac",
        "-b:a", "64k", "-movflags", "+faststart",
    ],
    "clip-end.mov": [
        *VIDEO, "-t", "1", "-c:v", "mpeg4", "-q:v", "5",
    ],
    "tone.opus": [*AUDIO, "-t", "2", "-c:a", "libopus", "-b:a", "48k"],
    "tone.mp3": [*AUDIO, "-t", "2", "-c:a", "libmp3lame", "-b:a", "64k"],
    "still.png": [
        "-f", "lavfi", "-i", "testsrc2=size=640x480", "-frames:v", "1",
    ],
    "still.jpg": [
        "-f", "lavfi", "-i", "testsrc2=size=1600x900", "-frames:v", "1", "-q:v", "4",
    ],
}  # fmt: skip


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (scripts/test installs it from Debian)")
    return path


def make(directory: Path, name: str) -> Path:
    target = directory / name
    if not target.exists():
        result = subprocess.run(
            [tool("ffmpeg"), "-v", "error", "-y", *RECIPES[name], str(target)],
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    return target


def ffprobe(source: str | Path) -> dict[str, Any]:
    result = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(source)],
        capture_output=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def framemd5(source: str | Path) -> list[str]:
    """The per-frame MD5s of every decoded stream (lines without the header comments)."""
    result = subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", str(source), "-map", "0", "-f", "framemd5", "-"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    lines = [line for line in result.stdout.decode().splitlines() if not line.startswith("#")]
    assert lines
    return lines


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding every file of :data:`RECIPES`, made once per session."""
    out = tmp_path_factory.mktemp("mediafiles")
    for name in RECIPES:
        make(out, name)
    return out
