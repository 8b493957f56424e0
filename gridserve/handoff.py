"""Hand-off of a read to nginx after gridserve decided it (``--accel-redirect``): pure helpers.

gridserve resolves the name, runs the ACL and the signed-URL checks and answers 304/412 itself;
a read it would serve from a local directory is then answered with ``X-Accel-Redirect:
<prefix><percent-encoded relative path>`` and no body, and nginx sends the file with sendfile
from its ``internal`` location (see ``deploy/nginx.conf``). nginx keeps gridserve's ETag and
Last-Modified (``etag off``, ``add_header ETag $upstream_http_etag``...), so its range filter
judges If-Range on gridserve's validators and a client sees one ETag for the same bytes.

With ``--s3-redirect SECONDS`` a read of an S3 object is answered with a 307 to a presigned
``GetObject`` URL (:func:`s3_storage_of`, :func:`presign_ttl`), never for the types gridserve
sandboxes (S3 cannot add ``Content-Security-Policy: sandbox``).

Contract of :func:`accel_path`: only a :class:`~gridserve.storage.local.LocalStorage` file whose
real location lies inside the storage root is handed off; anything else returns None and is
served by gridserve as usual. :func:`wants_direct` names the requests nginx cannot answer as
gridserve would, which are then served directly too.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import quote

from gridserve import ranges
from gridserve.storage.base import FileInfo
from gridserve.storage.cache import CachedStorage
from gridserve.storage.local import LocalStorage
from gridserve.storage.s3 import S3Storage


def normalize_prefix(prefix: str | None) -> str | None:
    """``--accel-redirect`` as given: ``/internal/`` (a leading and a trailing slash are
    added); None or empty: off."""
    if not prefix or not prefix.strip("/"):
        return None
    return "/" + prefix.strip("/") + "/"


def accel_path(storage: object, info: FileInfo, prefix: str) -> str | None:
    """The ``X-Accel-Redirect`` value for ``info``: ``prefix`` plus its path relative to the
    storage root, percent-encoded; None unless ``storage`` is a local directory and the file's
    real path (after symlinks) lies inside its real root."""
    if not isinstance(storage, LocalStorage):
        return None
    relative = str(info.id)
    if any(part in ("", ".", "..") for part in relative.split("/")):
        return None
    if not storage.is_file_inside(info):
        return None
    return prefix + _quoted(relative)


@lru_cache(maxsize=4096)
def _quoted(relative: str) -> str:
    return quote(relative, safe="/")


def wants_direct(headers: Mapping[str, str], max_ranges: int) -> bool:
    """True for a request gridserve serves itself although hand-off is on: one carrying
    If-Match or If-Unmodified-Since (nginx would test them against its own validators before it
    sees ours), or asking for several ranges (gridserve's multipart answer, its coalescing and
    its ``max_ranges`` stay the same with and without nginx)."""
    if headers.get("If-Match") is not None or headers.get("If-Unmodified-Since") is not None:
        return True
    specs = ranges.parse_range_header(headers.get("Range"))
    return specs is not None and (len(specs) > 1 or len(specs) > max_ranges)


def s3_storage_of(storage: object) -> S3Storage | None:
    """The :class:`~gridserve.storage.s3.S3Storage` that serves reads of ``storage`` (itself,
    or under the chunk cache), else None."""
    if isinstance(storage, CachedStorage):
        storage = storage.inner
    return storage if isinstance(storage, S3Storage) else None


def presign_ttl(ttl: int, signed_until: int | None, now: float) -> int:
    """Seconds a presigned URL may live: ``ttl``, never past ``signed_until`` (the ``exp`` of
    the gridserve signature that admitted the request); at least 1."""
    if signed_until is not None:
        ttl = min(ttl, int(signed_until - now))
    return max(1, ttl)
