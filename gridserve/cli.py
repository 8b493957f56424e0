"""The ``gridserve`` command: ``serve`` the HTTP server, and file tools like mongofiles
(``put``, ``get``, ``ls``, ``rm``, ``info``) that talk to the storage directly, plus ``sign``
and ``migrate`` (:mod:`gridserve.cli_migrate`).

Every setting comes from a flag, a ``GRIDSERVE_<FLAG>`` environment variable or the
``--config`` TOML file, in that order of precedence (see :mod:`gridserve.config`).

Exit codes: 0 success; 1 a runtime failure (storage unreachable, file not found); 2 bad usage
(unknown flag, invalid value or storage URI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import tornado.httpserver
import tornado.netutil

from gridserve import __version__, cli_fsck, cli_migrate, loops, tuning
from gridserve.acl import ACL, default_acl, sign_path
from gridserve.app import make_app
from gridserve.cli_probe import add_probe_parser, cmd_probe, media_service, probe_stored
from gridserve.config import (
    ALL_SETTINGS,
    SERVE_SETTINGS,
    STORAGE_SETTINGS,
    ConfigError,
    Setting,
    config_path_from,
    masked,
    parse_size,
    render_toml,
    resolve_settings,
)
from gridserve.handlers.files import describe_file, doomed_files
from gridserve.handoff import normalize_prefix
from gridserve.metrics import enable_multiprocess, process_exited
from gridserve.signing import DEFAULT_TTL, plan_signed_request
from gridserve.storage import (
    FallbackStorage,
    FileNotFound,
    InvalidKey,
    Storage,
    StorageUnavailable,
    StorageURIError,
    from_uri,
    mask_uri,
)
from gridserve.storage.cache import CachedStorage
from gridserve.storage.local import LocalStorage
from gridserve.supervisor import fork_workers
from gridserve.sweep import sweep_periodically
from gridserve.uploads import (
    SNIFF_BYTES,
    Rejected,
    UploadPolicy,
    decide_content_type,
    sanitize_name,
    sniff,
)

log = logging.getLogger("gridserve")

EXIT_RUNTIME = 1
EXIT_USAGE = 2
DEFAULT_LOCAL_DIR = "gridserve-data"
START_TIMEOUT = 10.0
COPY_BLOCK = 1024 * 1024


class UsageError(Exception):
    """A usage problem found after parsing: exit 2 with this message."""


# -- parsing ----------------------------------------------------------------------------------


def _add_settings(parser: argparse.ArgumentParser, settings: tuple[Setting, ...]) -> None:
    for setting in settings:
        if setting.convert.__name__ == "parse_bool":
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                action="store_const",
                const="true",
                default=None,
                help=f"{setting.help} [{setting.env}]",
            )
            parser.add_argument(
                "--no-" + setting.flag[2:],
                dest=setting.name,
                action="store_const",
                const="false",
                help=f"the opposite of {setting.flag}",
            )
            continue
        default = "" if setting.default in (None, ()) else f"; default {setting.default}"
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            action="append" if setting.multiple else "store",
            default=None,
            metavar=setting.metavar or setting.name.upper(),
            help=f"{setting.help} [{setting.env}{default}]",
        )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file ([gridserve] table) [GRIDSERVE_CONFIG]",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridserve",
        description="Stream files stored in MongoDB GridFS, S3 or a directory over HTTP.",
    )
    parser.add_argument("--version", action="version", version=f"gridserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server")
    _add_settings(serve, ALL_SETTINGS)
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (secrets masked) and exit",
    )

    put = commands.add_parser("put", help="store files")
    put.add_argument("files", nargs="+", metavar="FILE")
    put.add_argument("--name", help="the stored name (one FILE only); default: FILE's path")
    put.add_argument("--content-type", help="default: sniffed from the content")
    put.add_argument("--metadata", metavar="JSON", help="a JSON object stored with each file")
    _add_settings(put, STORAGE_SETTINGS)

    get = commands.add_parser("get", help="fetch a file")
    get.add_argument("key", metavar="KEY", help="ObjectId or name")
    get.add_argument("-o", "--output", help="file to write, - for stdout; default: its name")
    get.add_argument("--rev", type=int, default=None, help="revision (-1 newest, 0 oldest)")
    _add_settings(get, STORAGE_SETTINGS)

    ls = commands.add_parser("ls", help="list files")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    ls.add_argument("--json", action="store_true", help="one JSON array")
    ls.add_argument("--limit", type=int, default=1000)
    _add_settings(ls, STORAGE_SETTINGS)

    rm = commands.add_parser(
        "rm",
        help="delete files: every revision of a NAME (or --rev N), or the one file of an ID",
    )
    rm.add_argument("keys", nargs="+", metavar="KEY", help="a name, or a file's id")
    rm.add_argument(
        "--rev", type=int, default=None, help="only this revision (-1 newest, 0 oldest)"
    )
    _add_settings(rm, STORAGE_SETTINGS)

    info = commands.add_parser("info", help="describe a file as JSON")
    info.add_argument("key", metavar="KEY")
    info.add_argument("--rev", type=int, default=None)
    _add_settings(info, STORAGE_SETTINGS)

    _add_settings(cli_fsck.add_parser(commands), STORAGE_SETTINGS)
    add_probe_parser(commands, lambda p: _add_settings(p, STORAGE_SETTINGS))

    sign = commands.add_parser(
        "sign",
        help="print a signed URL",
        description="Print a URL that grants exactly one request: GET/HEAD of a file or a "
        "listing, or a scoped upload (PUT of one name, up to --max-size bytes), until --ttl "
        "runs out. Every query parameter is signed: the holder can change none.",
    )
    sign.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="the raw name path, e.g. '/fs/my show/ep 1.webm' (spaces, ?, #, %% are part of "
        "the name); a trailing / signs the folder's listing",
    )
    sign.add_argument("--url", metavar="PATH?QUERY", help="an already encoded path and query")
    sign.add_argument(
        "--ttl", type=int, default=DEFAULT_TTL, metavar="SECONDS", help="default 3600"
    )
    sign.add_argument("--method", default="GET", help="GET (default), HEAD (signed as GET), PUT")
    sign.add_argument("--rev", type=int, default=None, help="a revision (-1 newest, 0 oldest)")
    sign.add_argument("--download", action="store_true", help="served as an attachment")
    sign.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="listing parameter: prefix, after or limit (repeatable)",
    )
    sign.add_argument("--max-size", metavar="SIZE", help="PUT: the most bytes, e.g. 50M")
    sign.add_argument("--base-url", default="", help="prepended to the path, e.g. https://cdn")
    sign.add_argument(
        "--signing-key",
        dest="signing_key",
        action="append",
        default=None,
        metavar="KEY",
        help="[GRIDSERVE_SIGNING_KEY] the first of several signs",
    )
    sign.add_argument("--prefix", default=None, help="the server's URL prefix (default /fs)")
    sign.add_argument("--config", metavar="FILE")
    cli_migrate.add_parser(commands)
    return parser


def settings_for(
    args: argparse.Namespace, settings: tuple[Setting, ...], environ: dict[str, str]
) -> dict[str, Any]:
    flags = {s.name: getattr(args, s.name, None) for s in settings}
    return resolve_settings(settings, flags, environ, config_path_from(args.config, environ))


# -- storage and logging ----------------------------------------------------------------------


def open_storage(values: dict[str, Any], *, create_default: bool = False) -> Storage:
    """The storage the settings name. A missing local directory is an error unless
    ``--create``, or it is the embedded default and ``create_default`` (serve, put)."""
    uri = values.get("storage") or DEFAULT_LOCAL_DIR
    create = bool(values.get("create")) or (create_default and not values.get("storage"))
    options: dict[str, Any] = {}
    if uri.startswith("s3://"):
        if values.get("s3_endpoint"):
            options["endpoint_url"] = values["s3_endpoint"]
        if values.get("s3_region"):
            options["region_name"] = values["s3_region"]
    elif uri.startswith("mongodb"):
        if values.get("read_preference"):
            options["readPreference"] = values["read_preference"]
        if values.get("file_cache_seconds") is not None:
            options["file_cache_seconds"] = values["file_cache_seconds"]
    try:
        primary = from_uri(uri, bucket=values.get("bucket") or "fs", create=create, **options)
        fallbacks = [
            from_uri(other, create=False) for other in values.get("fallback_storage") or ()
        ]
    except StorageURIError as exc:
        raise UsageError(str(exc)) from exc
    return FallbackStorage(primary, *fallbacks) if fallbacks else primary


class ReopenableFileHandler(logging.FileHandler):
    """A log file that SIGHUP reopens (after logrotate moved it)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def configure_logging(values: dict[str, Any]) -> list[ReopenableFileHandler]:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    files: list[ReopenableFileHandler] = []
    root = logging.getLogger()
    root.handlers.clear()
    main: logging.Handler
    if values.get("log_file"):
        main = ReopenableFileHandler(values["log_file"])
        files.append(main)
    else:
        main = logging.StreamHandler(sys.stderr)
    main.setFormatter(fmt)
    root.addHandler(main)
    root.setLevel(getattr(logging, str(values.get("log_level", "info")).upper()))
    access = logging.getLogger("gridserve.access")
    access.propagate = False
    access.handlers.clear()
    access.setLevel(logging.INFO)
    target = values.get("access_log")
    if target:
        handler: logging.Handler
        if target == "-":
            handler = logging.StreamHandler(sys.stderr)
        else:
            handler = ReopenableFileHandler(target)
            files.append(handler)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
    # Tornado's own per-request lines would repeat the access log; keep its warnings.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    quiet_libraries(values)
    return files


def quiet_libraries(values: dict[str, Any]) -> None:
    """The S3 and MongoDB client libraries log at INFO for routine events (credentials found,
    connections): only their warnings show, unless ``--log-level debug``."""
    if str(values.get("log_level", "info")) != "debug":
        for name in ("aiobotocore", "botocore", "boto3", "s3transfer", "pymongo", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)


def reopen_all(files: list[ReopenableFileHandler]) -> None:
    for handler in files:
        handler.reopen()


def short_reason(exc: BaseException) -> str:
    """The first clause of a storage error: the driver's topology dump and timeouts cut off."""
    text = str(exc).splitlines()[0] if str(exc) else f"no answer in {START_TIMEOUT:.0f}s"
    for tail in (", Timeout:", " (configured timeouts:", ", Topology Description:"):
        text = text.split(tail, 1)[0]
    return text


async def check_reachable(storage: Storage, uri: str) -> None:
    try:
        await asyncio.wait_for(storage.ping(), START_TIMEOUT)
    except (StorageUnavailable, asyncio.TimeoutError) as exc:
        raise RuntimeError(f"cannot reach storage {mask_uri(uri)}: {short_reason(exc)}") from exc
    finally:
        await storage.close()


# -- serve ------------------------------------------------------------------------------------


def ui_enabled(values: dict[str, Any]) -> bool:
    """``--ui``/``--no-ui`` if given, else on for the embedded local default only."""
    return bool(values["ui"]) if values["ui"] is not None else not values.get("storage")


def effective(values: dict[str, Any]) -> dict[str, Any]:
    """The settings as the daemon uses them, defaults made explicit (``--print-config``)."""
    shown = dict(values)
    shown["ui"] = ui_enabled(values)
    shown["storage"] = values.get("storage") or DEFAULT_LOCAL_DIR
    return shown


def serve(values: dict[str, Any], print_config: bool) -> int:
    if print_config:
        sys.stdout.write(render_toml(masked(effective(values))))
        return 0
    try:
        acl = default_acl(
            upload_token=values["upload_token"],
            signing_key=values["signing_key"],
            require_signed_reads=values["require_signed_reads"],
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    files = configure_logging(values)
    tuning.tune_malloc()  # before the first large buffer (see gridserve.tuning)
    loop = values["loop"] or loops.default_loop()
    try:
        loops.check_loop(loop)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    uri = values.get("storage") or DEFAULT_LOCAL_DIR
    probe = open_storage(values, create_default=True)
    if not values.get("storage"):
        log.info(
            "no --storage given: using %s (the embedded default; "
            "--storage mongodb://... for GridFS)",
            probe.description,
        )
    try:
        asyncio.run(check_reachable(probe, uri))
    except RuntimeError as exc:
        log.error("%s", exc)
        return EXIT_RUNTIME
    try:
        sockets = tornado.netutil.bind_sockets(values["port"], values["address"])
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", values["address"], values["port"], exc.strerror)
        return EXIT_RUNTIME
    processes = values["processes"] or (os.cpu_count() or 1)
    if processes == 1:
        return loops.run(_serve_forever(values, acl, sockets, files), loop)
    with tempfile.TemporaryDirectory(prefix="gridserve-metrics-") as metrics_dir:
        enable_multiprocess(metrics_dir)
        worker, status = fork_workers(
            processes, on_hup=lambda: reopen_all(files), on_exit=process_exited
        )
        if worker is not None:
            # The directory belongs to the master: a worker leaves by os._exit, never
            # through the `with` that removes it.
            code = 1
            try:
                code = loops.run(_serve_forever(values, acl, sockets, files), loop)
            except BaseException:
                log.exception("worker %d failed", worker)
            finally:
                logging.shutdown()
                os._exit(code)
    for sock in sockets:
        sock.close()
    log.info("master exiting: %d worker(s) done", processes)
    return status


async def _serve_forever(
    values: dict[str, Any], acl: ACL, sockets: list[Any], files: list[ReopenableFileHandler]
) -> int:
    storage = open_storage(values, create_default=True)
    # Local disk has the page cache; a fallback chain is not cached yet (only each storage of
    # it knows what identifies its content, see README).
    if values["chunk_cache"] > 0 and not isinstance(storage, (LocalStorage, FallbackStorage)):
        storage = CachedStorage(storage, values["chunk_cache"])
    media = media_service(storage, values)
    app = make_app(
        storage,
        values["prefix"],
        cache_time=values["cache_time"],
        acl=acl,
        upload_policy=UploadPolicy(max_size=values["max_upload_size"]),
        cors_origin=values["cors_origin"],
        send_timeout=values["send_timeout"],
        send_buffer=values["send_buffer"],
        ui=ui_enabled(values),
        ui_uploads=bool(values["upload_token"]),
        signing_key=values["signing_key"],
        combined_access_log=bool(values["access_log"]),
        linger_seconds=values["linger_seconds"],
        linger_bytes=values["linger_bytes"],
        upload_expiry=values["upload_expiry"],
        media=media,
        gridserve_accel_redirect=normalize_prefix(values["accel_redirect"]),
        gridserve_s3_redirect=values["s3_redirect"],
    )
    server = tornado.httpserver.HTTPServer(
        app, idle_connection_timeout=values["idle_timeout"], xheaders=values["xheaders"]
    )
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    base = f"http://{values['address']}:{port}"
    prefix = "/" + values["prefix"].strip("/") if values["prefix"].strip("/") else ""
    if ui_enabled(values):
        log.info(
            "serving %s: media page at %s/ (files under %s%s/)",
            storage.description,
            base,
            base,
            prefix,
        )
    else:
        log.info("serving %s at %s%s/", storage.description, base, prefix)

    sweeper = None
    if values["sweep_interval"] > 0:
        sweeper = asyncio.ensure_future(
            sweep_periodically(storage, values["sweep_interval"], values["sweep_grace"])
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reopen_all, files)
    # A worker ignores SIGHUP from its fork until the line above: a reload in that window must
    # not leave its logs on the rotated file, so reopen them once now.
    reopen_all(files)
    await stop.wait()

    tracker = app.settings["gridserve_tracker"]
    log.info("shutting down: %d request(s) in flight", tracker.active)
    server.stop()
    if not await tracker.drained(values["shutdown_timeout"]):
        log.warning("shutdown timeout: aborting %d request(s)", tracker.active)
    await server.close_all_connections()
    if sweeper is not None:
        sweeper.cancel()
    if media is not None:
        await media.close()
    await storage.close()
    tracker.close_abandoned()
    log.info("stopped")
    return 0


# -- file tools -------------------------------------------------------------------------------


class Progress:
    """A progress line on stderr while a transfer runs, when stderr is a terminal."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def advance(self, size: int) -> None:
        self.done += size
        now = time.monotonic()
        if self.enabled and now - self._last > 0.1:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        mib = self.done / 2**20
        if self.total:
            percent = 100 * self.done / self.total
            text = f"\r{self.label}  {mib:.1f}/{self.total / 2**20:.1f} MiB  {percent:3.0f}%"
        else:
            text = f"\r{self.label}  {mib:.1f} MiB"
        sys.stderr.write(text)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            sys.stderr.write("\n")


async def _read_file(handle: BinaryIO, head: bytes, progress: Progress) -> AsyncIterator[bytes]:
    if head:
        progress.advance(len(head))
        yield head
    while block := await asyncio.to_thread(handle.read, COPY_BLOCK):
        progress.advance(len(block))
        yield block


def _stored_name(path: str, explicit: str | None) -> str:
    if explicit:
        return sanitize_name(explicit)
    candidate = Path(path)
    name = candidate.name if candidate.is_absolute() else candidate.as_posix().removeprefix("./")
    return sanitize_name(name)


async def cmd_put(args: argparse.Namespace, storage: Storage) -> int:
    if args.name and len(args.files) > 1:
        raise UsageError("--name needs exactly one FILE")
    metadata: dict[str, Any] = {}
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except ValueError as exc:
            raise UsageError(f"--metadata is not JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise UsageError("--metadata must be a JSON object")
    for path in args.files:
        try:
            name = _stored_name(path, args.name)
        except Rejected as exc:
            raise UsageError(f"{path}: {exc.reason}") from exc
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except OSError as exc:
            print(f"gridserve: {path}: {exc.strerror}", file=sys.stderr)
            return EXIT_RUNTIME
        with handle:
            head = handle.read(SNIFF_BYTES)
            content_type = args.content_type or decide_content_type(None, sniff(head), name)
            progress = Progress(name, os.fstat(handle.fileno()).st_size)
            info = await storage.save(
                name,
                _read_file(handle, head, progress),
                content_type=content_type,
                metadata=metadata,
            )
            progress.close()
        await probe_stored(storage, info)
        print(json.dumps(describe_file(info)))
    return 0


async def cmd_get(args: argparse.Namespace, storage: Storage) -> int:
    info = await storage.resolve(args.key, args.rev)
    output = args.output or info.filename.rsplit("/", 1)[-1]
    progress = Progress(info.filename, info.length)
    if output == "-":
        async for chunk in storage.read(info):
            sys.stdout.buffer.write(chunk)
            progress.advance(len(chunk))
        sys.stdout.buffer.flush()
    else:
        target = Path(output)
        fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in storage.read(info):
                    await asyncio.to_thread(out.write, chunk)
                    progress.advance(len(chunk))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # noqa: ASYNC240 - must run even when cancelled
            raise
    progress.close()
    return 0


async def cmd_ls(args: argparse.Namespace, storage: Storage) -> int:
    files = [info async for info in storage.list(args.prefix, args.limit)]
    if args.json:
        print(json.dumps([describe_file(info) for info in files], indent=1))
        return 0
    for info in files:
        when = info.upload_date.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{info.length:>14}  {when}  {info.filename}")
    return 0


async def cmd_rm(args: argparse.Namespace, storage: Storage) -> int:
    """Deletes what ``DELETE {prefix}/KEY`` deletes, printing one line per file removed."""
    status = 0
    for key in args.keys:
        try:
            resolved = await storage.resolve(key, args.rev)
            for info in await doomed_files(storage, key, resolved, args.rev):
                await storage.delete(info)
                when = info.upload_date.strftime("%Y-%m-%d %H:%M:%S")
                print(f"removed {info.filename}  id {info.id}  {when}  {info.length} bytes")
        except FileNotFound:
            print(f"gridserve: no file {key}", file=sys.stderr)
            status = EXIT_RUNTIME
    return status


async def cmd_info(args: argparse.Namespace, storage: Storage) -> int:
    info = await storage.resolve(args.key, args.rev)
    described = describe_file(info)
    described.update(etag=str(info.etag), metadata=dict(info.metadata))
    described["media"] = await storage.media_of(info)
    print(json.dumps(described, indent=1, default=str))
    return 0


TOOLS: dict[str, Callable[[argparse.Namespace, Storage], Awaitable[int]]] = {
    "put": cmd_put,
    "get": cmd_get,
    "ls": cmd_ls,
    "rm": cmd_rm,
    "info": cmd_info,
    "fsck": cli_fsck.cmd_fsck,
    "probe": cmd_probe,
}


async def run_tool(args: argparse.Namespace, values: dict[str, Any]) -> int:
    storage = open_storage(values, create_default=args.command == "put")
    try:
        return await TOOLS[args.command](args, storage)
    except FileNotFound as exc:
        print(f"gridserve: no file {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except InvalidKey as exc:
        raise UsageError(f"invalid key: {exc}") from exc
    except StorageUnavailable as exc:
        uri = values.get("storage") or DEFAULT_LOCAL_DIR
        print(f"gridserve: storage {mask_uri(uri)}: {short_reason(exc)}", file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        await storage.close()


def cmd_sign(args: argparse.Namespace, environ: dict[str, str]) -> int:
    wanted = tuple(s for s in SERVE_SETTINGS if s.name in ("signing_key", "prefix"))
    values = settings_for(args, wanted, environ)
    if not values["signing_key"]:
        raise UsageError("no signing key: --signing-key, GRIDSERVE_SIGNING_KEY or --config")
    try:
        max_size = parse_size(args.max_size) if args.max_size is not None else None
        plan = plan_signed_request(
            path=args.path,
            url=args.url,
            url_prefix=values["prefix"],
            method=args.method,
            rev=args.rev,
            download=args.download,
            params=args.param,
            max_size=max_size,
        )
        signed = sign_path(values["signing_key"], plan.url, args.ttl, method=plan.method)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(args.base_url.rstrip("/") + signed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        if args.command == "sign":
            return cmd_sign(args, environ)
        if args.command == "migrate":
            return cli_migrate.run(args)
        if args.command == "serve":
            values = settings_for(args, ALL_SETTINGS, environ)
            return serve(values, args.print_config)
        values = settings_for(args, STORAGE_SETTINGS, environ)
        logging.basicConfig(level=getattr(logging, values["log_level"].upper()))
        quiet_libraries(values)
        return asyncio.run(run_tool(args, values))
    except (UsageError, ConfigError) as exc:
        parser.exit(EXIT_USAGE, f"gridserve: {exc}\n")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
