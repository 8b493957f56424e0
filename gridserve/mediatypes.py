"""Content types: which stored types are safe to send, and what a filename's extension means.

Our own table comes first for the media types players depend on, because the platform's
``mimetypes`` database differs between machines (``.ts`` is TypeScript on some, ``.m4s``
unknown on most).
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
from urllib.parse import quote

DEFAULT_TYPE = "application/octet-stream"

MEDIA_TYPES: dict[str, str] = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m3u": "audio/x-mpegurl",
    ".mpd": "application/dash+xml",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".m4a": "audio/mp4",
    ".webm": "video/webm",
    ".weba": "audio/webm",
    ".mkv": "video/x-matroska",
    ".mka": "audio/x-matroska",
    ".mov": "video/quicktime",
    ".ogv": "video/ogg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".aac": "audio/aac",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".vtt": "text/vtt",
    ".srt": "application/x-subrip",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".txt": "text/plain",
    ".pdf": "application/pdf",
}

# type "/" subtype *( OWS ";" OWS parameter ), tokens only; no CR/LF can pass.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"[^\"\\\r\n]*\"))*"
)

# Types a browser renders as an active document when navigated to.
_PASSIVE_PREFIXES = ("audio/", "video/")
_PASSIVE_IMAGE_EXCLUDES = ("image/svg+xml",)


def is_valid_media_type(value: str) -> bool:
    """True when ``value`` is a syntactically valid media type (safe to put in a header)."""
    return len(value) <= 255 and _MEDIA_TYPE_RE.fullmatch(value) is not None


def guess_type(filename: str) -> str:
    """The content type of ``filename`` by its extension, else ``application/octet-stream``."""
    ext = posixpath.splitext(filename)[1].lower()
    if ext in MEDIA_TYPES:
        return MEDIA_TYPES[ext]
    guessed, _ = mimetypes.guess_type("x" + ext, strict=False) if ext else (None, None)
    return guessed or DEFAULT_TYPE


def choose_content_type(stored: str | None, filename: str) -> str:
    """The stored type when it is a valid media type, else the guess from the extension."""
    if stored and is_valid_media_type(stored.strip()):
        return stored.strip()
    return guess_type(filename)


def is_passive(content_type: str) -> bool:
    """True for types a browser plays or shows but never runs (audio, video, raster images)."""
    base = content_type.split(";", 1)[0].strip().lower()
    if base.startswith(_PASSIVE_PREFIXES):
        return True
    return base.startswith("image/") and base not in _PASSIVE_IMAGE_EXCLUDES


def content_disposition(filename: str, *, attachment: bool = False) -> str:
    """A ``Content-Disposition`` value naming the file's last path segment (RFC 6266).

    The quoted ``filename`` is an ASCII fallback (controls, quotes, backslashes and non-ASCII
    replaced by ``_``); ``filename*`` (RFC 8187) carries the real name when they differ. No
    character of ``filename`` can end the header or start another one.
    """
    name = filename.rsplit("/", 1)[-1] or "download"
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    value = f'{"attachment" if attachment else "inline"}; filename="{fallback}"'
    if fallback != name:
        value += "; filename*=UTF-8''" + quote(name, safe="", errors="surrogatepass")
    return value
