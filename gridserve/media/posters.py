"""Posters: one JPEG per fixed size, a frame at ~10% of a video or a downscale of a picture.

Only :data:`SIZES` exist (no size from the URL: an arbitrary size would let any client make the
server transcode at will, the denial-of-service lever thumbor and imgproxy warn about). A poster
is never wider than its source (no upscaling); its height keeps the aspect ratio, even.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

SIZES: dict[str, int] = {"small": 320, "large": 1280}
CONTENT_TYPE = "image/jpeg"
SEEK_FRACTION = 0.10


def poster_name(size: str) -> str:
    """The derived-file name of the poster of ``size`` (a key of :data:`SIZES`)."""
    if size not in SIZES:
        raise ValueError(f"no poster size {size!r}")
    return f"poster-{size}.jpg"


def ffmpeg_args(url: str, width: int, media: Mapping[str, Any]) -> list[str]:
    """ffmpeg's arguments for one poster of ``width`` from the file at ``url`` (pure)."""
    seek: list[str] = []
    duration = media.get("duration")
    if not media.get("image") and isinstance(duration, (int, float)) and duration > 0:
        seek = ["-ss", f"{duration * SEEK_FRACTION:.3f}"]
    return [
        "-v", "error", "-nostdin", *seek, "-i", url, "-map", "0:v:0", "-frames:v", "1",
        "-vf", f"scale='min({width},iw)':-2", "-f", "image2", "-c:v", "mjpeg", "-q:v", "4",
        "pipe:1",
    ]  # fmt: skip


def wants_poster(media: Mapping[str, Any]) -> bool:
    return isinstance(media.get("video"), Mapping)


async def make_poster(
    binary: str, url: str, width: int, media: Mapping[str, Any], timeout: float
) -> bytes:
    """The JPEG bytes of one poster; raises RuntimeError when ffmpeg fails."""
    process = await asyncio.create_subprocess_exec(
        binary,
        *ffmpeg_args(url, width, media),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0 or not out.startswith(b"\xff\xd8"):
        lines = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"ffmpeg exited {process.returncode}")
    return out
