"""Upload policy: names, types, sizes and conflicts, decided without a server.

- :func:`sanitize_name` turns a requested name into a storage key or raises :class:`Rejected`
  (the rules are :mod:`gridserve.names`').
- :func:`sniff` asks libmagic (python-magic) what the first bytes are.
- :func:`decide_content_type` picks what to store from the declared and the sniffed type; a
  client never gets to label active content (HTML, SVG, XML, scripts) as something else, nor to
  label anything else as active content.
- :class:`UploadPolicy` holds the per-storage rules: allowed type families
  (``Only(VIDEO + AUDIO)``, ``AllExcept(SCRIPTS + EXECUTABLES)``), maximum size, and what to do
  when the name exists (``revision``, ``reject``, ``rename``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from gridserve.mediatypes import DEFAULT_TYPE, guess_type, is_valid_media_type, sniff_manifest
from gridserve.names import InvalidName, normalize_folder, normalize_name

SNIFF_BYTES = 8192
GENERIC_TYPES = frozenset(
    {DEFAULT_TYPE, "text/plain", "application/x-empty", "inode/x-empty", "binary/octet-stream"}
)
# Declared types that say nothing about the body: curl sends the form type with -d/--data.
UNDECLARED_TYPES = GENERIC_TYPES | {"application/x-www-form-urlencoded"}
# Types a browser may run as a document or script when navigated to or embedded.
ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/ecmascript",
        "application/x-shockwave-flash",
        "text/xsl",
        "application/x-httpd-php",
    }
)


class Rejected(Exception):
    """An upload the policy refuses; ``status`` is the HTTP answer (400, 409, 413, 415)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# -- names ----------------------------------------------------------------------------------


def sanitize_name(name: str, *, basename_only: bool = False) -> str:
    """:func:`gridserve.names.normalize_name` with its refusal as :class:`Rejected` (400)."""
    try:
        return normalize_name(name, basename_only=basename_only)
    except InvalidName as exc:
        raise Rejected(400, str(exc)) from None


def sanitize_folder(folder: str) -> str:
    """:func:`gridserve.names.normalize_folder` with its refusal as :class:`Rejected` (400)."""
    try:
        return normalize_folder(folder)
    except InvalidName as exc:
        raise Rejected(400, str(exc)) from None


def renamed(name: str, attempt: int) -> str:
    """``name`` with a numeric suffix before its extension: ``a.mp4`` → ``a (2).mp4``."""
    stem, ext = posixpath.splitext(name)
    return f"{stem} ({attempt}){ext}"


# -- types ----------------------------------------------------------------------------------


def _base(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def sniff(head: bytes) -> str:
    """The MIME type libmagic sees in the first bytes of a file; DASH manifests and HLS
    playlists, which libmagic calls XML or text, by :func:`~gridserve.mediatypes.sniff_manifest`
    (so a DASH manifest is the one XML document an upload may store)."""
    import magic

    manifest = sniff_manifest(head[:SNIFF_BYTES])
    if manifest:
        return manifest
    try:
        return str(magic.from_buffer(head[:SNIFF_BYTES], mime=True)).lower()
    except Exception:  # libmagic errors on odd input are not the uploader's problem
        return DEFAULT_TYPE


def is_active(content_type: str) -> bool:
    base = _base(content_type)
    return base in ACTIVE_TYPES or (base.endswith("+xml") and base != "application/dash+xml")


def decide_content_type(declared: str | None, sniffed: str, filename: str) -> str:
    """What to store as ``contentType``.

    - Sniffed active content is stored as what it is, whatever was declared.
    - Nothing else may become active content: a declared or extension-guessed active type on
      bytes that are not is replaced by the sniffed type (or ``application/octet-stream``).
    - Otherwise a specific sniffed type wins over a declared one of another top-level family
      (a PNG declared as ``video/mp4`` is stored as ``image/png``); a declared type refines a
      generic sniff; with neither, the extension. A generic declared type (``octet-stream``,
      curl's ``application/x-www-form-urlencoded``) counts as none.
    """
    sniffed = _base(sniffed) or DEFAULT_TYPE
    if is_active(sniffed):
        return sniffed
    declared = declared.strip() if declared and is_valid_media_type(declared.strip()) else None
    if declared and _base(declared) in UNDECLARED_TYPES:
        declared = None
    if sniffed not in GENERIC_TYPES:
        if declared and not is_active(declared) and _family(declared) == _family(sniffed):
            return declared
        return sniffed
    candidate = declared or guess_type(filename)
    if is_active(candidate):
        return sniffed if sniffed != "application/x-empty" else DEFAULT_TYPE
    return candidate


def _family(content_type: str) -> str:
    return _base(content_type).split("/", 1)[0]


@dataclass(frozen=True)
class TypeFamily:
    """A set of content types (exact, or ``type/*``) and file extensions.

    Families add up: ``SCRIPTS + EXECUTABLES``.
    """

    name: str
    types: frozenset[str] = field(default_factory=frozenset)
    extensions: frozenset[str] = field(default_factory=frozenset)

    def __add__(self, other: TypeFamily) -> TypeFamily:
        return TypeFamily(
            f"{self.name}+{other.name}",
            self.types | other.types,
            self.extensions | other.extensions,
        )

    def matches(self, filename: str, content_type: str) -> bool:
        base = _base(content_type)
        if base in self.types or f"{base.split('/', 1)[0]}/*" in self.types:
            return True
        return posixpath.splitext(filename)[1].lower() in self.extensions


def family(name: str, types: Iterable[str], extensions: Iterable[str] = ()) -> TypeFamily:
    return TypeFamily(name, frozenset(types), frozenset(e.lower() for e in extensions))


VIDEO = family(
    "VIDEO",
    ["video/*", "application/vnd.apple.mpegurl", "application/dash+xml", "application/x-mpegurl"],
    [".mp4", ".m4v", ".webm", ".mkv", ".mov", ".ts", ".m4s", ".m3u8", ".mpd", ".ogv"],
)
AUDIO = family(
    "AUDIO",
    ["audio/*"],
    [".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".wav", ".weba"],
)
IMAGES = family(
    "IMAGES",
    ["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"],
    [".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".bmp"],
)
DOCUMENTS = family(
    "DOCUMENTS",
    ["application/pdf", "text/plain", "text/vtt", "application/x-subrip", "text/csv"],
    [".pdf", ".txt", ".vtt", ".srt", ".csv"],
)
ARCHIVES = family(
    "ARCHIVES",
    ["application/zip", "application/gzip", "application/x-tar", "application/x-7z-compressed"],
    [".zip", ".gz", ".tgz", ".tar", ".7z"],
)
SCRIPTS = family(
    "SCRIPTS",
    [*ACTIVE_TYPES, "text/x-shellscript", "text/x-python", "text/x-php", "application/x-sh"],
    [".html", ".htm", ".xhtml", ".svg", ".js", ".mjs", ".xml", ".xsl", ".php", ".sh", ".py"],
)
EXECUTABLES = family(
    "EXECUTABLES",
    [
        "application/x-executable",
        "application/x-sharedlib",
        "application/x-pie-executable",
        "application/x-dosexec",
        "application/x-msdownload",
        "application/x-mach-binary",
    ],
    [".exe", ".dll", ".so", ".msi", ".com", ".bat", ".cmd", ".elf", ".dylib"],
)


@dataclass(frozen=True)
class Only:
    """Allows only the files of ``family`` (by type or by extension)."""

    family: TypeFamily

    def allows(self, filename: str, content_type: str) -> bool:
        return self.family.matches(filename, content_type)


@dataclass(frozen=True)
class AllExcept:
    """Allows every file that is not of ``family`` (neither its type nor its extension)."""

    family: TypeFamily

    def allows(self, filename: str, content_type: str) -> bool:
        return not self.family.matches(filename, content_type)


ConflictPolicy = Literal["revision", "reject", "rename"]


@dataclass(frozen=True)
class UploadPolicy:
    """The rules an upload must pass. ``max_size`` None is unlimited.

    ``on_conflict`` when the name exists: ``revision`` stores a new revision (GridFS keeps the
    old ones; local disk and S3 replace), ``reject`` answers 409, ``rename`` stores
    ``name (2).ext`` (the first free of up to 1000 suffixes).
    """

    types: Only | AllExcept = AllExcept(SCRIPTS + EXECUTABLES)
    max_size: int | None = None
    on_conflict: ConflictPolicy = "revision"

    def check_size(self, size: int) -> None:
        if self.max_size is not None and size > self.max_size:
            raise Rejected(413, f"larger than the {self.max_size}-byte limit")

    def check_name(self, filename: str) -> None:
        """415 for a name whose extension alone is refused, whatever its content: decided
        from the request's headers, before the body is read. Only ``AllExcept`` refuses by
        extension alone (``Only`` accepts a file whose type matches, whatever its name)."""
        if isinstance(self.types, AllExcept) and self.types.family.matches(filename, ""):
            raise Rejected(415, f"{posixpath.basename(filename)} not allowed")

    def check_type(self, filename: str, content_type: str) -> None:
        if not self.types.allows(filename, content_type):
            raise Rejected(415, f"{content_type} ({posixpath.basename(filename)}) not allowed")
