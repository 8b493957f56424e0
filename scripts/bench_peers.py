"""Peer servers for scripts/bench, each run as its own process:

  python scripts/bench_peers.py motor-tornado URI DB PORT   # motor.web.GridFSHandler
  python scripts/bench_peers.py motor-aiohttp URI DB PORT   # motor.aiohttp.AIOHTTPGridFS
  python scripts/bench_peers.py tornado-static DIR PORT     # tornado.web.StaticFileHandler
  python scripts/bench_peers.py tornado-memory LARGE SMALL PORT   # bytes from memory, no database

All serve under /fs/ like gridserve, so one load generator drives them all.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def motor_tornado(uri: str, db: str, port: int) -> None:
    import motor.motor_tornado
    import motor.web
    import tornado.ioloop
    import tornado.web

    database: Any = motor.motor_tornado.MotorClient(uri)[db]
    app = tornado.web.Application([(r"/fs/(.*)", motor.web.GridFSHandler, {"database": database})])
    app.listen(port, "127.0.0.1")
    tornado.ioloop.IOLoop.current().start()


def motor_aiohttp(uri: str, db: str, port: int) -> None:
    import motor.aiohttp
    import motor.motor_asyncio
    from aiohttp import web

    async def main() -> None:
        database: Any = motor.motor_asyncio.AsyncIOMotorClient(uri)[db]
        app = web.Application()
        gridfs_handler: Any = motor.aiohttp.AIOHTTPGridFS(database)  # type: ignore[no-untyped-call]
        resource = app.router.add_resource("/fs/{filename:.*}")
        resource.add_route("GET", gridfs_handler)
        resource.add_route("HEAD", gridfs_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def tornado_static(root: str, port: int) -> None:
    import tornado.ioloop
    import tornado.web

    app = tornado.web.Application([(r"/fs/(.*)", tornado.web.StaticFileHandler, {"path": root})])
    app.listen(port, "127.0.0.1")
    tornado.ioloop.IOLoop.current().start()


def tornado_memory(large: int, small: int, port: int) -> None:
    """Sends random bytes held in memory, as gridserve sends a GridFS file: ``/fs/large.bin``
    is ``large`` bytes in 255 KiB memoryviews, one flush per 8 (a 2 MiB reply), any other
    path ``small`` bytes in one write. No database, no lookup, no validators: what a Tornado
    server costs to answer and send the bytes, the floor above the driver's for any GridFS
    server on Tornado (scripts/bench --cpu)."""
    import os

    import tornado.web

    from gridserve import loops

    chunk = 255 * 1024
    large_data, small_data = os.urandom(large), os.urandom(small)

    class FromMemory(tornado.web.RequestHandler):
        async def get(self, path: str) -> None:
            if path != "large.bin":
                self.write(small_data)
                return
            self.set_header("Content-Length", len(large_data))
            await self.flush()
            view = memoryview(large_data)
            connection: Any = self.request.connection
            for start in range(0, large, 8 * chunk):
                pieces = range(start, min(start + 8 * chunk, large), chunk)
                done = [connection.write(view[piece : piece + chunk]) for piece in pieces]
                await done[-1]

        def head(self, path: str) -> None:
            self.set_header("Content-Length", large if path == "large.bin" else small)

    async def serve() -> None:
        app = tornado.web.Application([(r"/fs/(.*)", FromMemory)], log_function=lambda _: None)
        app.listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    loops.run(serve(), loops.default_loop())  # the loop gridserve serve runs on


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    kind, *rest = sys.argv[1:]
    if kind == "motor-tornado":
        motor_tornado(rest[0], rest[1], int(rest[2]))
    elif kind == "motor-aiohttp":
        motor_aiohttp(rest[0], rest[1], int(rest[2]))
    elif kind == "tornado-memory":
        tornado_memory(int(rest[0]), int(rest[1]), int(rest[2]))
    elif kind == "tornado-static":
        tornado_static(rest[0], int(rest[1]))
    else:
        sys.exit(f"unknown peer {kind}")
