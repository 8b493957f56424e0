"""The ``gridserve`` command.

Exit codes: 0 success, 1 a runtime failure (storage unreachable at start), 2 bad usage
(unknown flag, invalid storage URI).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import tornado.httpserver

from gridserve import __version__
from gridserve.app import make_app
from gridserve.storage import Storage, StorageUnavailable, StorageURIError, from_uri, mask_uri

log = logging.getLogger("gridserve")

EXIT_RUNTIME = 1
EXIT_USAGE = 2
DEFAULT_LOCAL_DIR = "gridserve-data"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridserve",
        description="Stream files stored in MongoDB GridFS (or a directory) over HTTP.",
    )
    parser.add_argument("--version", action="version", version=f"gridserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument(
        "--storage",
        default=None,
        metavar="URI",
        help="where files live: mongodb://host/database (GridFS), or a directory "
        f"(file:PATH or PATH); default: ./{DEFAULT_LOCAL_DIR}, created if absent",
    )
    serve.add_argument("--bucket", default="fs", help="GridFS bucket name (default: fs)")
    serve.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3-compatible endpoint for s3:// storages (MinIO, Ceph, R2); default: AWS",
    )
    serve.add_argument("--s3-region", metavar="REGION", help="S3 region (default: AWS config)")
    serve.add_argument("--address", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8888, help="port to listen on (default 8888)")
    serve.add_argument("--prefix", default="/fs", help="URL prefix of the files (default /fs)")
    serve.add_argument(
        "--cache-time", type=int, default=0, metavar="SECONDS", help="Cache-Control max-age"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info)",
    )
    return parser


async def _serve(args: argparse.Namespace, storage: Storage) -> int:
    try:
        await asyncio.wait_for(storage.ping(), timeout=10)
    except (StorageUnavailable, asyncio.TimeoutError) as exc:
        log.error("cannot reach storage %s: %s", mask_uri(args.storage), str(exc).splitlines()[0])
        await storage.close()
        return EXIT_RUNTIME

    app = make_app(storage, args.prefix, cache_time=args.cache_time)
    server = tornado.httpserver.HTTPServer(app, xheaders=False)
    try:
        server.listen(args.port, args.address)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.address, args.port, exc.strerror)
        await storage.close()
        return EXIT_RUNTIME
    log.info(
        "serving %s at http://%s:%d%s/",
        storage.description,
        args.address,
        args.port,
        args.prefix.rstrip("/"),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    server.stop()
    await server.close_all_connections()
    await storage.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    embedded_default = args.storage is None
    if embedded_default:
        args.storage = DEFAULT_LOCAL_DIR
    options = {}
    if args.storage.startswith("s3://"):
        if args.s3_endpoint:
            options["endpoint_url"] = args.s3_endpoint
        if args.s3_region:
            options["region_name"] = args.s3_region
    try:
        storage = from_uri(args.storage, bucket=args.bucket, **options)
    except StorageURIError as exc:
        print(f"gridserve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if embedded_default:
        log.info(
            "no --storage given: using %s (the embedded default; "
            "--storage mongodb://... for GridFS)",
            storage.description,
        )
    return asyncio.run(_serve(args, storage))


if __name__ == "__main__":
    sys.exit(main())
