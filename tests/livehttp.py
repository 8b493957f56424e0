"""A real gridserve HTTP server on a loopback socket, run on its own thread and event loop,
so tests can use blocking clients (requests, curl, ffmpeg) against it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from gridserve.app import make_app
from gridserve.storage.base import Storage

PROXY_BUFFER = 32 * 1024


class LiveServer:
    """Serves ``make_app(make_storage(), **app_options)`` until :meth:`stop`.

    ``make_storage`` runs on the server's loop (async drivers bind to the loop they start on).
    With ``counting_proxy=True`` a byte-counting TCP proxy sits in front of the server:
    ``proxy_url`` goes through it and ``bytes_to_client`` says how much the server sent;
    ``proxy_rate`` caps what it passes to the client (bytes/s) and ``proxy_delay`` delays what
    the client sends, its hang-up included (seconds), like a link with that round trip.
    ``application(storage)``, when given, builds the application instead of ``make_app`` (a
    user's own application mounting gridserve's handlers).
    """

    def __init__(
        self,
        make_storage: Callable[[], Storage],
        *,
        counting_proxy: bool = False,
        proxy_rate: float | None = None,
        proxy_delay: float = 0.0,
        server_options: dict[str, Any] | None = None,
        application: Callable[[Storage], tornado.web.Application] | None = None,
        **app_options: Any,
    ) -> None:
        self.make_storage = make_storage
        self.application = application
        self.app_options = app_options
        self.counting_proxy = counting_proxy
        self.proxy_rate = proxy_rate  # bytes/s towards the client, like a real link; None: no cap
        self.proxy_delay = proxy_delay
        self.server_options = server_options or {}
        self.port = 0
        self.proxy_port = 0
        self.bytes_to_client = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.app: Any = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-gridserve", daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def proxy_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.proxy_port}{path}"

    def start(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("live server did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def run_coroutine(self, coro: Any, timeout: float = 30) -> Any:
        """Runs ``coro`` on the server's loop (to use its storage) and returns the result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def in_flight(self) -> int:
        """Requests the application has neither finished nor seen their client leave (its
        ``gridserve_tracker``), counted on the server's loop: every other request is logged."""

        async def count() -> int:
            tracker = self.app.settings.get("gridserve_tracker")
            return 0 if tracker is None else int(tracker.active)

        result: int = self.run_coroutine(count())
        return result

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.storage = self.make_storage()
        options = dict(self.app_options)
        if callable(options.get("media")):  # media=lambda storage: MediaService(storage, ...)
            options["media"] = self.media = options["media"](self.storage)
        if self.application is not None:
            app = self.application(self.storage)
        else:
            app = make_app(self.storage, **options)
        self.app = app
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(app, **self.server_options)
        server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        proxy = None
        if self.counting_proxy:
            proxy = await asyncio.start_server(self._proxy_connection, "127.0.0.1", 0)
            self.proxy_port = proxy.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.stop()
        if proxy is not None:
            proxy.close()
        await server.close_all_connections()
        if options.get("media") is not None:
            await options["media"].close()
        await self.storage.close()

    async def _proxy_connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        # Small buffers on the proxy's own sockets, so that what it counts is what the client
        # took (plus the client's receive buffer), not what the proxy itself queued.
        upstream = socket.socket()
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PROXY_BUFFER)
        upstream.setblocking(False)
        await asyncio.get_running_loop().sock_connect(upstream, ("127.0.0.1", self.port))
        server_reader, server_writer = await asyncio.open_connection(
            sock=upstream, limit=PROXY_BUFFER
        )
        client_sock = client_writer.get_extra_info("socket")
        if client_sock is not None:
            client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PROXY_BUFFER)
        client_writer.transport.set_write_buffer_limits(high=PROXY_BUFFER)

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool
        ) -> None:
            open_ = True
            try:
                while data := await reader.read(PROXY_BUFFER):
                    if count:
                        self.bytes_to_client += len(data)  # what the server sent on the link
                    elif self.proxy_delay:
                        await asyncio.sleep(self.proxy_delay)
                    if open_:
                        try:
                            writer.write(data)
                            await writer.drain()
                        except (ConnectionError, OSError):
                            open_ = False  # the client is gone; its hang-up is on its way
                    if count and self.proxy_rate:
                        await asyncio.sleep(len(data) / self.proxy_rate)
            except (ConnectionError, OSError):
                pass
            finally:
                if not count and self.proxy_delay:
                    await asyncio.sleep(self.proxy_delay)
                writer.close()

        await asyncio.gather(
            pump(client_reader, server_writer, False), pump(server_reader, client_writer, True)
        )
