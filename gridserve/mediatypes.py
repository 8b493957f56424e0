"""Content types: which stored types are safe to send, and what a filename's extension means.

:data:`MEDIA_TYPES` is the project's own table of media, streaming, subtitle, image and
archive extensions; it decides first. Past it, Python's built-in table decides
(:data:`_BUILTIN`, a :class:`mimetypes.MimeTypes` that never reads ``/etc/mime.types``), so a
type never depends on the machine (Debian's file calls ``.ass`` subtitles ``audio/aac`` and
``.mts`` ``model/vnd.mts``; ``.ts`` is TypeScript on some). A compressed file is its archive
type (``.gz`` is ``application/gzip``): stored bytes are never served with a
``Content-Encoding``. Add to the table with ``MEDIA_TYPES[".ext"] = "type/subtype"``.

:func:`sniff_manifest` recognises the two text formats libmagic cannot tell from XML or
plain text: DASH manifests (root element ``MPD`` in the DASH namespace) and HLS playlists
(``#EXTM3U`` first).
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
from functools import lru_cache
from urllib.parse import quote
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

DEFAULT_TYPE = "application/octet-stream"

MEDIA_TYPES: dict[str, str] = {
    # streaming manifests and segments
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m3u": "audio/x-mpegurl",
    ".mpd": "application/dash+xml",
    ".ts": "video/mp2t",
    ".mts": "video/mp2t",
    ".m2ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".cmfv": "video/mp4",
    ".cmfa": "audio/mp4",
    # video
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mk3d": "video/x-matroska",
    ".mov": "video/quicktime",
    ".ogv": "video/ogg",
    ".avi": "video/x-msvideo",
    ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg",
    ".3gp": "video/3gpp",
    ".flv": "video/x-flv",
    ".wmv": "video/x-ms-wmv",
    # audio
    ".m4a": "audio/mp4",
    ".weba": "audio/webm",
    ".mka": "audio/x-matroska",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".aac": "audio/aac",
    ".ac3": "audio/ac3",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".aiff": "audio/aiff",
    ".mid": "audio/midi",
    # subtitles
    ".vtt": "text/vtt",
    ".srt": "application/x-subrip",
    ".ass": "text/x-ssa",
    ".ssa": "text/x-ssa",
    # images
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".heic": "image/heic",
    ".jxl": "image/jxl",
    ".bmp": "image/bmp",
    ".ico": "image/vnd.microsoft.icon",
    ".svg": "image/svg+xml",
    # archives and compressed files: their own type, never a Content-Encoding
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".xz": "application/x-xz",
    ".txz": "application/x-xz",
    ".bz2": "application/x-bzip2",
    ".zst": "application/zstd",
    ".lz4": "application/x-lz4",
    ".br": "application/x-brotli",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".7z": "application/x-7z-compressed",
    ".rar": "application/vnd.rar",
    ".iso": "application/x-iso9660-image",
    # documents
    ".json": "application/json",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".md": "text/markdown",
    ".pdf": "application/pdf",
}

# Python's own table, without the machine's /etc/mime.types (MimeTypes() reads no files).
_BUILTIN = mimetypes.MimeTypes()
DASH_NAMESPACE = "urn:mpeg:dash:schema:mpd:2011"
DASH_TYPE = "application/dash+xml"
HLS_TYPE = "application/vnd.apple.mpegurl"

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
    return _type_of_extension(posixpath.splitext(filename)[1].lower())


@lru_cache(maxsize=1024)
def _type_of_extension(ext: str) -> str:
    if ext in MEDIA_TYPES:
        return MEDIA_TYPES[ext]
    guessed, _ = _BUILTIN.guess_type("x" + ext, strict=False) if ext else (None, None)
    return guessed or DEFAULT_TYPE


def sniff_manifest(head: bytes) -> str | None:
    """``application/dash+xml`` when ``head`` (a file's first bytes) is an XML document whose
    root element is ``MPD`` in the DASH namespace; ``application/vnd.apple.mpegurl`` when it
    starts with ``#EXTM3U``; else None. Only the root start tag is parsed; a document with a
    DOCTYPE (where entities could hide) is never a manifest."""
    text = head.removeprefix(b"\xef\xbb\xbf")
    if text.startswith(b"#EXTM3U") and text[7:8] in (b"", b"\r", b"\n"):
        return HLS_TYPE
    if not text.lstrip().startswith(b"<") or b"<!DOCTYPE" in text.upper():
        return None
    parser: XMLPullParser[Element] = XMLPullParser(events=("start",))
    try:
        parser.feed(text)
        for event in parser.read_events():
            element = event[-1] if isinstance(event, tuple) else None
            is_mpd = isinstance(element, Element) and element.tag == f"{{{DASH_NAMESPACE}}}MPD"
            return DASH_TYPE if is_mpd else None
    except ParseError:
        return None
    return None


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
