"""Media facts via ffprobe: :func:`run_ffprobe` (a subprocess on a URL) and :func:`facts` (pure:
ffprobe's JSON to the facts gridserve stores under ``metadata.media``).

The facts (keys absent when ffprobe does not know them)::

    {"container": "mov,mp4,m4a,3gp,3g2,mj2", "duration": 2.0, "bitrate": 301234,
     "video": {"codec": "h264", "width": 320, "height": 180, "frameRate": 25.0},
     "audio": {"codec": "aac", "channels": 1, "sampleRate": 48000},
     "image": false, "faststart": true}

``faststart`` (MP4/MOV only) says whether ``moov`` precedes ``mdat``: see :func:`moov_first`.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import Any

from gridserve.media import faststart
from gridserve.storage.base import FileInfo, Storage

FFPROBE_ARGS = ("-v", "error", "-print_format", "json", "-show_format", "-show_streams")
# Formats ffmpeg reads as one still picture: a poster is a downscale, not a frame at 10%.
IMAGE_FORMATS = frozenset({"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif"})


class ProbeError(Exception):
    """ffprobe failed on the file (not media, truncated, timed out)."""


async def run_ffprobe(binary: str, url: str, timeout: float) -> dict[str, Any]:
    """ffprobe's JSON for ``url``; raises :class:`ProbeError`."""
    process = await asyncio.create_subprocess_exec(
        binary,
        *FFPROBE_ARGS,
        url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise ProbeError(f"ffprobe took longer than {timeout:.0f}s") from None
    except BaseException:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise ProbeError(lines[-1] if lines else f"ffprobe exited {process.returncode}")
    try:
        parsed = json.loads(out)
    except ValueError as exc:
        raise ProbeError(f"ffprobe printed no JSON: {exc}") from None
    if not isinstance(parsed, dict) or not parsed.get("streams"):
        raise ProbeError("no media streams")
    return parsed


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number >= 0 else None  # not NaN


def _rate(text: Any) -> float | None:
    if not isinstance(text, str) or "/" not in text:
        return None
    numerator, _, denominator = text.partition("/")
    try:
        top, bottom = float(numerator), float(denominator)
    except ValueError:
        return None
    return round(top / bottom, 3) if bottom and top else None


def facts(probed: dict[str, Any]) -> dict[str, Any]:
    """The stored facts for ffprobe's ``-show_format -show_streams`` JSON (pure)."""
    fmt = probed.get("format") or {}
    container = str(fmt.get("format_name") or "")
    result: dict[str, Any] = {"container": container}
    duration = _number(fmt.get("duration"), float)
    if duration is not None:
        result["duration"] = round(duration, 3)
    bitrate = _number(fmt.get("bit_rate"), int)
    if bitrate is not None:
        result["bitrate"] = bitrate
    for stream in probed.get("streams") or []:
        kind = stream.get("codec_type")
        if (stream.get("disposition") or {}).get("attached_pic"):
            continue  # cover art in an audio file
        if kind == "video" and "video" not in result:
            result["video"] = {
                "codec": stream.get("codec_name"),
                "width": _number(stream.get("width"), int),
                "height": _number(stream.get("height"), int),
                "frameRate": _rate(stream.get("avg_frame_rate"))
                or _rate(stream.get("r_frame_rate")),
            }
        elif kind == "audio" and "audio" not in result:
            result["audio"] = {
                "codec": stream.get("codec_name"),
                "channels": _number(stream.get("channels"), int),
                "sampleRate": _number(stream.get("sample_rate"), int),
            }
    result["image"] = container in IMAGE_FORMATS or (
        container.endswith("_pipe") and "video" in result and "audio" not in result
    )
    if result["image"]:
        result.pop("duration", None)
        result.pop("bitrate", None)
        if "video" in result:
            result["video"].pop("frameRate", None)
    return result


def is_iso_media(container: str) -> bool:
    return "mp4" in container.split(",") or "mov" in container.split(",")


async def moov_first(storage: Storage, info: FileInfo) -> bool | None:
    """Whether ``moov`` precedes ``mdat`` in a stored MP4/MOV, reading only box headers (None
    when the file is not one, or lacks either box)."""

    async def read_at(offset: int, size: int) -> bytes:
        data = bytearray()
        async with aclosing(storage.read(info, offset, offset + size)) as chunks:
            async for chunk in chunks:
                data += chunk
        return bytes(data)

    if info.length < 8 or not faststart.looks_like_iso_media(await read_at(0, 8)):
        return None
    walker = faststart.scan(info.length)
    try:
        offset = next(walker)
        while True:
            size = min(faststart.HEADER_PROBE, info.length - offset)
            offset = walker.send(await read_at(offset, size))
    except StopIteration as done:
        boxes: list[faststart.Box] = done.value
    except faststart.FaststartError:
        return None
    return faststart.moov_first(boxes)
