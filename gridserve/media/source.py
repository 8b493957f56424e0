"""A loopback HTTP endpoint that serves stored files to ffprobe/ffmpeg with byte ranges.

Why HTTP and not a pipe: ffprobe must seek (an MP4's ``moov`` may sit at the end, a WebM's cues
too), and a pipe cannot seek, so a pipe would need the whole file first (in memory or on disk).
ffmpeg's ``http://`` protocol asks for ``Range: bytes=N-`` on every seek and reads only what it
needs, so each read goes straight to :meth:`Storage.read` for that range: no copy of the file
anywhere. The endpoint binds 127.0.0.1 on a free port; each file is reachable only while it is
being probed, under a random token and its base name (``serving``), so nothing else on the
machine can name files.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

from gridserve.storage.base import FileInfo, Storage, StorageError

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Handler(tornado.web.RequestHandler):
    def initialize(self, files: dict[str, tuple[Storage, FileInfo]]) -> None:
        self.files = files

    async def head(self, token: str) -> None:
        await self.get(token, include_body=False)

    async def get(self, token: str, include_body: bool = True) -> None:
        entry = self.files.get(token)
        if entry is None:
            raise tornado.web.HTTPError(404)
        storage, info = entry
        start, stop = 0, info.length
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Content-Type", "application/octet-stream")
        match = _RANGE.fullmatch(self.request.headers.get("Range", "").strip())
        if match:
            start = int(match.group(1))
            if match.group(2):
                stop = min(int(match.group(2)) + 1, info.length)
            if start >= info.length or start >= stop:
                self.set_header("Content-Range", f"bytes */{info.length}")
                raise tornado.web.HTTPError(416)
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{stop - 1}/{info.length}")
        self.set_header("Content-Length", str(stop - start))
        if not include_body:
            return
        try:
            async with aclosing(storage.read(info, start, stop)) as chunks:
                async for chunk in chunks:
                    self.write(chunk)
                    await self.flush()
        except tornado.iostream.StreamClosedError:
            return  # ffprobe seeks by dropping the connection
        except StorageError:
            self.request.connection.close()  # type: ignore[union-attr]

    def log_exception(self, *args: Any) -> None:  # quiet: ffprobe hangs up routinely
        pass


class RangeSource:
    """The endpoint: ``await start()``, then ``with source.serving(storage, info) as url``."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[Storage, FileInfo]] = {}
        self._server: tornado.httpserver.HTTPServer | None = None
        self.port = 0

    async def start(self) -> None:
        if self._server is not None:
            return
        app = tornado.web.Application(
            [(r"/([A-Za-z0-9_-]+)/[^/]*", _Handler, {"files": self._files})], log_function=_quiet
        )
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]

    @contextlib.contextmanager
    def serving(self, storage: Storage, info: FileInfo) -> Iterator[str]:
        """The URL of ``info`` while the block runs."""
        if self._server is None:
            raise RuntimeError("RangeSource.start() first")
        token = secrets.token_urlsafe(18)
        self._files[token] = (storage, info)
        try:
            # The file's own name last, so that ffmpeg picks demuxers as it does for the file
            # on disk (image2 for a .jpg, say).
            name = quote(info.filename.rsplit("/", 1)[-1], safe="")
            yield f"http://127.0.0.1:{self.port}/{token}/{name}"
        finally:
            del self._files[token]

    async def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None


def _quiet(handler: tornado.web.RequestHandler) -> None:
    pass
