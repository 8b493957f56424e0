"""Peer servers for scripts/bench, each run as its own process:

  python scripts/bench_peers.py motor-tornado URI DB PORT   # motor.web.GridFSHandler
  python scripts/bench_peers.py motor-aiohttp URI DB PORT   # motor.aiohttp.AIOHTTPGridFS
  python scripts/bench_peers.py tornado-static DIR PORT     # tornado.web.StaticFileHandler

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


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    kind, *rest = sys.argv[1:]
    if kind == "motor-tornado":
        motor_tornado(rest[0], rest[1], int(rest[2]))
    elif kind == "motor-aiohttp":
        motor_aiohttp(rest[0], rest[1], int(rest[2]))
    elif kind == "tornado-static":
        tornado_static(rest[0], int(rest[1]))
    else:
        sys.exit(f"unknown peer {kind}")
