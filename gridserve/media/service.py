"""Media work off the request path: :class:`MediaService`.

``submit(info)`` queues a stored file for probing (bounded queue: when it is full the file is
skipped with a log line, never delaying an upload); one worker runs ffprobe through a loopback
:class:`~gridserve.media.source.RangeSource`, stores the facts with
``storage.update_metadata(info, {"media": ...})`` and, for video and pictures, a poster of each
size with ``storage.put_derived``. ffprobe/ffmpeg are optional: when absent the service says so
once in the log and does nothing. Failures count in ``gridserve_probe_failures_total``.

``faststart_body(head, body)`` is the upload hook of ``--faststart``: an MP4/MOV body is spooled
to an anonymous temporary file and streamed on with ``moov`` first, so the storage stores (and
digests) the rewritten bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import IO, Any

from gridserve.media import faststart, posters
from gridserve.media.probe import ProbeError, facts, is_iso_media, moov_first, run_ffprobe
from gridserve.media.source import RangeSource
from gridserve.mediatypes import choose_content_type
from gridserve.metrics import Metrics
from gridserve.storage.base import FileInfo, FileNotFound, Storage, StorageError

log = logging.getLogger("gridserve.media")

QUEUE_SIZE = 256
PROBE_TIMEOUT = 60.0
SPOOL_BLOCK = 1024 * 1024


PROBED_TYPES = ("audio/", "video/", "image/", "application/ogg", "application/mp4")


def worth_probing(info: FileInfo) -> bool:
    """Whether ``info`` may be media: its type is audio, video, a picture (or unknown, then the
    extension decides). Anything else (text, archives) is never handed to ffprobe."""
    content_type = choose_content_type(info.content_type, info.filename).lower()
    return content_type.startswith(PROBED_TYPES) and "svg" not in content_type


class MediaService:
    """Probes and posters for ``storage`` (see the module docstring). ``faststart``: rewrite
    MP4/MOV uploads with ``moov`` at the end. ``facts``: probe after uploads.
    ``ffprobe``/``ffmpeg``: the tools (default: found on PATH). ``metrics``: where failures
    count."""

    def __init__(
        self,
        storage: Storage,
        *,
        faststart: bool = False,
        facts: bool = True,
        metrics: Metrics | None = None,
        queue_size: int = QUEUE_SIZE,
        ffprobe: str | None = None,
        ffmpeg: str | None = None,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.storage = storage
        self.faststart = faststart
        self.facts = facts
        self.metrics = metrics
        self.timeout = timeout
        self.ffprobe = ffprobe or shutil.which("ffprobe")
        self.ffmpeg = ffmpeg or shutil.which("ffmpeg")
        self._queue: asyncio.Queue[FileInfo] = asyncio.Queue(queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._source = RangeSource()
        self._warned = False

    @property
    def available(self) -> bool:
        if self.ffprobe is None and not self._warned:
            self._warned = True
            log.warning("ffprobe not found: media facts and posters are off (apt install ffmpeg)")
        return self.ffprobe is not None

    # -- the queue -----------------------------------------------------------------------

    def submit(self, info: FileInfo) -> bool:
        """Queues ``info`` for probing; False when the tools are absent or the queue is full."""
        if not self.facts or not worth_probing(info) or not self.available:
            return False
        try:
            self._queue.put_nowait(info)
        except asyncio.QueueFull:
            log.warning(
                "media queue full: %s not probed (gridserve probe catches up)", info.filename
            )
            return False
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())
        return True

    async def idle(self) -> None:
        """Returns once every queued file has been processed."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            info = await self._queue.get()
            try:
                await self.process(info)
            except Exception:  # the worker must survive anything one file does
                log.exception("media: processing %s failed", info.filename)
            finally:
                self._queue.task_done()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self._source.close()

    # -- one file ------------------------------------------------------------------------

    async def process(self, info: FileInfo) -> dict[str, Any] | None:
        """Probes ``info``, stores its facts and posters; returns the facts (None on failure
        or without ffprobe)."""
        if not self.available or self.ffprobe is None:
            return None
        await self._source.start()
        try:
            with self._source.serving(self.storage, info) as url:
                media = facts(await run_ffprobe(self.ffprobe, url, self.timeout))
                if is_iso_media(media["container"]):
                    order = await moov_first(self.storage, info)
                    if order is not None:
                        media["faststart"] = order
                        if not order:
                            log.info(
                                "%s: moov after mdat (not faststart): players need extra round "
                                "trips before the first frame; --faststart rewrites uploads",
                                info.filename,
                            )
                made = await self._posters(info, url, media)
        except (ProbeError, StorageError) as exc:
            if not await self._unchanged(info):
                return None  # deleted or replaced meanwhile (a replacement is queued itself)
            self._failed(info, str(exc))
            return None
        media["posters"] = made
        media["probedAt"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            await self.storage.update_metadata(info, {"media": media})
        except FileNotFound:
            if not await self._exists(info):
                await self.storage.delete_derived(info)  # deleted while we worked
            return None
        except (StorageError, NotImplementedError) as exc:
            self._failed(info, f"storing facts: {exc}")
            return None
        return media

    async def _posters(self, info: FileInfo, url: str, media: dict[str, Any]) -> list[str]:
        if self.ffmpeg is None or not posters.wants_poster(media):
            return []
        made: list[str] = []
        for size, width in posters.SIZES.items():
            try:
                jpeg = await posters.make_poster(self.ffmpeg, url, width, media, self.timeout)
            except (RuntimeError, asyncio.TimeoutError) as exc:
                self._failed(info, f"poster {size}: {exc}")
                continue
            await self.storage.put_derived(
                info, posters.poster_name(size), jpeg, posters.CONTENT_TYPE
            )
            made.append(size)
        return made

    async def _exists(self, info: FileInfo) -> bool:
        try:
            await self.storage.resolve(str(info.id))
        except FileNotFound:
            return False
        return True

    async def _unchanged(self, info: FileInfo) -> bool:
        """Whether ``info``'s id still names the content ``info`` describes."""
        try:
            current = await self.storage.resolve(str(info.id))
        except FileNotFound:
            return False
        except StorageError:
            return True  # cannot tell: the failure stands
        return current.etag == info.etag

    def _failed(self, info: FileInfo, reason: str) -> None:
        log.warning("media: cannot probe %s: %s", info.filename, reason)
        if self.metrics is not None:
            self.metrics.probe_failures.inc()

    # -- faststart on upload -------------------------------------------------------------

    def faststart_body(self, head: bytes, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body`` (whose first bytes are ``head``, already consumed) as it should be stored:
        rewritten moov-first when faststart is on and it is an MP4/MOV with moov at the end."""
        if not self.faststart or not faststart.looks_like_iso_media(head):
            return _prepend(head, body)
        return _faststart_stream(head, body)


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk


async def _faststart_stream(head: bytes, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # An anonymous file: unlinked from the start, so nothing is left behind however this ends.
    with tempfile.TemporaryFile() as spool:
        await asyncio.to_thread(spool.write, head)
        async for chunk in body:
            await asyncio.to_thread(spool.write, chunk)
        length = spool.tell()
        read_at = faststart.file_reader(spool)
        try:
            plan = await asyncio.to_thread(faststart.plan_for, read_at, length)
        except faststart.FaststartError as exc:
            log.info("faststart: stored as uploaded (%s)", exc)
            plan = None
        if plan is None:
            async for block in _blocks(spool, 0, length):
                yield block
            return
        for piece in plan.pieces:
            if isinstance(piece, bytes):
                yield piece
            else:
                async for block in _blocks(spool, *piece):
                    yield block


async def _blocks(spool: IO[bytes], start: int, stop: int) -> AsyncIterator[bytes]:
    while start < stop:
        spool.seek(start)
        block = await asyncio.to_thread(spool.read, min(SPOOL_BLOCK, stop - start))
        if not block:
            raise OSError(f"spool ended at byte {start}")
        start += len(block)
        yield block
