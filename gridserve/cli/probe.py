"""``gridserve probe [PREFIX] [--faststart]``: media facts and posters for files already stored.

Each file under PREFIX (newest revisions, by name) is probed as an upload would be and one JSON
line is printed: ``{"filename", "id", "media"}``. With ``--faststart``, an MP4/MOV whose ``moov``
comes after ``mdat`` is rewritten into a *new* file of the same name (GridFS: a new revision with
a new id; the old revision's bytes are never changed) and the line says ``"rewrittenFrom"``.
On local disk and S3, which keep one revision per name, the new file replaces the old one (its
ETag changes, so a player's If-Range sees it). Exit status 1 when any file failed.

Also here: :func:`media_service` (the daemon's :class:`MediaService` from its settings) and
:func:`probe_stored` (what ``gridserve put`` runs after each file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import IO, Any

from gridserve.media import faststart
from gridserve.media.service import MediaService, worth_probing
from gridserve.storage.base import FileInfo, Storage

PAGE = 500
COPY_BLOCK = 1024 * 1024


def add_probe_parser(
    commands: Any, add_settings: Callable[[argparse.ArgumentParser], None]
) -> None:
    probe = commands.add_parser("probe", help="media facts and posters for stored files")
    probe.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    probe.add_argument(
        "--faststart",
        action="store_true",
        help="store MP4/MOV files with moov after mdat again, moov first (a new revision)",
    )
    add_settings(probe)


def media_service(storage: Storage, values: dict[str, Any]) -> MediaService | None:
    """The daemon's media service, or None when both facts and faststart are off."""
    facts = values.get("media_facts", True) is not False
    fast = bool(values.get("faststart"))
    if not facts and not fast:
        return None
    return MediaService(storage, faststart=fast, facts=facts)


async def probe_stored(storage: Storage, info: FileInfo) -> dict[str, Any] | None:
    """Facts and posters for one stored file, now (None without ffprobe or on failure)."""
    service = MediaService(storage)
    try:
        if not service.ffprobe or not worth_probing(info):
            return None
        return await service.process(info)
    finally:
        await service.close()


async def _all(storage: Storage, prefix: str) -> AsyncIterator[FileInfo]:
    after = ""
    while True:
        page = [info async for info in storage.list(prefix, PAGE, after=after)]
        for info in page:
            yield info
        if len(page) < PAGE:
            return
        after = page[-1].filename


async def _spool(storage: Storage, info: FileInfo, spool: IO[bytes]) -> None:
    async with aclosing(storage.read(info)) as chunks:
        async for chunk in chunks:
            await asyncio.to_thread(spool.write, chunk)


async def rewrite_faststart(storage: Storage, info: FileInfo) -> FileInfo | None:
    """Stores ``info`` again moov-first as a new file of the same name; None when it needs no
    rewrite. The copy is spooled to an anonymous temporary file, never held in memory."""
    with tempfile.TemporaryFile() as spool:
        await _spool(storage, info, spool)
        read_at = faststart.file_reader(spool)
        plan = await asyncio.to_thread(faststart.plan_for, read_at, info.length)
        if plan is None:
            return None

        async def pieces() -> AsyncIterator[bytes]:
            for piece in plan.pieces:
                if isinstance(piece, bytes):
                    yield piece
                    continue
                start, stop = piece
                while start < stop:
                    block = await asyncio.to_thread(read_at, start, min(COPY_BLOCK, stop - start))
                    start += len(block)
                    yield block

        metadata = {k: v for k, v in info.metadata.items() if k not in ("sha256", "media")}
        return await storage.save(
            info.filename, pieces(), content_type=info.content_type, metadata=metadata
        )


async def cmd_probe(args: argparse.Namespace, storage: Storage) -> int:
    service = MediaService(storage)
    if service.ffprobe is None:
        print("gridserve: ffprobe not found (apt install ffmpeg)", file=sys.stderr)
        return 1
    status = 0
    try:
        async for info in _all(storage, args.prefix):
            if not worth_probing(info):
                continue
            line: dict[str, Any] = {"filename": info.filename, "id": str(info.id)}
            if args.faststart:
                try:
                    rewritten = await rewrite_faststart(storage, info)
                except faststart.FaststartError as exc:
                    line["faststartError"] = str(exc)
                    rewritten = None
                if rewritten is not None:
                    line.update(id=str(rewritten.id), rewrittenFrom=str(info.id))
                    info = rewritten
            media = await service.process(info)
            line["media"] = media
            if media is None:
                status = 1
            print(json.dumps(line), flush=True)
    finally:
        await service.close()
    return status
