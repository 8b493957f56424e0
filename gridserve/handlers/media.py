"""The HTTP side of media awareness, used by :class:`~gridserve.handlers.files.FilesHandler`.

``GET|HEAD {prefix}/<key>?poster=small|large``
    the poster of that file (:data:`gridserve.media.posters.SIZES`; any other size is a 400,
    no poster a 404): ``image/jpeg``, its own strong ETag (a digest of the poster, so
    ``If-None-Match`` answers 304), ``Cache-Control: public, max-age=604800`` (a week: a poster
    only changes when its file does, and then under a new ETag).

Listings carry each file's facts in ``media`` and, for a file with posters, their URLs in
``posterUrls`` (``{"small": URL, "large": URL}``, signed like the file's ``url`` when the
server signs listed URLs: a signature covers every query parameter, so a page cannot append
``poster=`` to a signed URL itself) (:func:`add_media_facts`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import tornado.web

from gridserve.media.posters import SIZES, poster_name
from gridserve.storage.base import FileInfo, Storage, StorageError

POSTER_MAX_AGE = 7 * 24 * 3600
LISTING_LOOKUPS = 16  # media_of calls at once (S3 reads one small record per file)


async def send_poster(
    handler: tornado.web.RequestHandler, storage: Storage, info: FileInfo, include_body: bool
) -> None:
    size = handler.get_query_argument("poster")
    if size not in SIZES:
        raise tornado.web.HTTPError(400, reason=f"poster must be one of {', '.join(SIZES)}")
    try:
        poster = await storage.get_derived(info, poster_name(size))
    except StorageError:
        raise tornado.web.HTTPError(503, reason="Storage unavailable") from None
    if poster is None:
        raise tornado.web.HTTPError(404, reason="No poster")
    handler.set_header("Content-Type", poster.content_type)
    handler.set_header("Cache-Control", f"public, max-age={POSTER_MAX_AGE}")
    handler.set_header("ETag", f'"p{hashlib.sha256(poster.data).hexdigest()[:32]}"')
    handler.clear_header("Accept-Ranges")
    handler.clear_header("Last-Modified")
    if handler.check_etag_header():
        handler.set_status(304)
        handler.finish()
        return
    handler.set_header("Content-Length", str(len(poster.data)))
    handler.finish(poster.data if include_body else None)


async def add_media_facts(
    storage: Storage,
    infos: Sequence[FileInfo],
    described: Sequence[dict[str, Any]],
    url_prefix: str,
    sign: Callable[[str], str],
) -> None:
    """Sets ``media`` of each listed file from ``storage.media_of`` (metadata for GridFS and
    local disk, a derived record for S3), a bounded number at once, and ``posterUrls`` (each
    URL passed through ``sign``)."""
    gate = asyncio.Semaphore(LISTING_LOOKUPS)

    async def one(info: FileInfo) -> Mapping[str, Any] | None:
        async with gate:
            try:
                return await storage.media_of(info)
            except StorageError:
                return None

    facts = await asyncio.gather(*(one(info) for info in infos))
    for info, entry, media in zip(infos, described, facts, strict=True):
        entry["media"] = dict(media) if media is not None else None
        posters = media.get("posters") if media is not None else None
        if isinstance(posters, list) and posters:
            url = f"{url_prefix.rstrip('/')}/{quote(str(info.id), safe='/')}"
            entry["posterUrls"] = {
                size: sign(f"{url}?poster={size}") for size in posters if size in SIZES
            }
