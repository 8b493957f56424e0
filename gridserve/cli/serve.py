"""``gridserve serve``: the HTTP server (one process, or ``--processes N`` forked workers),
its logging (files SIGHUP reopens) and ``--print-config``.

Exit codes: 0 stopped by SIGTERM/SIGINT; 1 the storage unreachable or the port taken; 2 bad
usage (an invalid ``--loop``, ACL settings that contradict each other).
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import signal
import sys
import tempfile
from typing import Any

import tornado.httpserver
import tornado.netutil

from gridserve import loops, tuning
from gridserve.acl import ACL, default_acl
from gridserve.app import make_app
from gridserve.cli.common import (
    DEFAULT_LOCAL_DIR,
    EXIT_RUNTIME,
    EXIT_USAGE,
    START_TIMEOUT,
    UsageError,
    add_settings,
    open_storage,
    quiet_libraries,
    short_reason,
)
from gridserve.cli.probe import media_service
from gridserve.config import ALL_SETTINGS, masked, render_toml
from gridserve.handoff import normalize_prefix
from gridserve.metrics import enable_multiprocess, process_exited
from gridserve.storage import FallbackStorage, Storage, StorageUnavailable, mask_uri
from gridserve.storage.cache import CachedStorage
from gridserve.storage.local import LocalStorage
from gridserve.supervisor import fork_workers
from gridserve.sweep import sweep_periodically
from gridserve.uploads import UploadPolicy

log = logging.getLogger("gridserve")


def add_parser(commands: Any) -> None:
    """Adds ``serve`` to the ``gridserve`` subcommands."""
    serve = commands.add_parser("serve", help="run the HTTP server")
    add_settings(serve, ALL_SETTINGS)
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (secrets masked) and exit",
    )


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


def reopen_all(files: list[ReopenableFileHandler]) -> None:
    for handler in files:
        handler.reopen()


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
