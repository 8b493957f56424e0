"""The ``gridserve`` command: ``serve`` the HTTP server (:mod:`.serve`), and file tools like
mongofiles (``put``, ``get``, ``ls``, ``rm``, ``info``: :mod:`.files`) that talk to the storage
directly, plus ``fsck`` (:mod:`.fsck`), ``probe`` (:mod:`.probe`), ``sign`` (:mod:`.sign`) and
``migrate`` (:mod:`.migrate`). This module builds the parser and dispatches; what the commands
share is in :mod:`.common`.

Every setting comes from a flag, a ``GRIDSERVE_<FLAG>`` environment variable or the
``--config`` TOML file, in that order of precedence (see :mod:`gridserve.config`).

Exit codes: 0 success; 1 a runtime failure (storage unreachable, file not found); 2 bad usage
(unknown flag, invalid value or storage URI).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gridserve import __version__
from gridserve.cli import files, fsck, migrate, probe, serve, sign
from gridserve.cli.common import (
    DEFAULT_LOCAL_DIR,
    EXIT_RUNTIME,
    EXIT_USAGE,
    UsageError,
    add_settings,
    open_storage,
    quiet_libraries,
    settings_for,
    short_reason,
)
from gridserve.config import ALL_SETTINGS, STORAGE_SETTINGS, ConfigError
from gridserve.storage import FileNotFound, InvalidKey, Storage, StorageUnavailable, mask_uri

__all__ = [
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "TOOLS",
    "UsageError",
    "build_parser",
    "main",
    "open_storage",
    "run_tool",
    "settings_for",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridserve",
        description="Stream files stored in MongoDB GridFS, S3 or a directory over HTTP.",
    )
    parser.add_argument("--version", action="version", version=f"gridserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The order of `gridserve --help`.
    serve.add_parser(commands)
    files.add_parsers(commands)
    add_settings(fsck.add_parser(commands), STORAGE_SETTINGS)
    probe.add_probe_parser(commands, lambda p: add_settings(p, STORAGE_SETTINGS))
    sign.add_parser(commands)
    migrate.add_parser(commands)
    return parser


TOOLS: dict[str, Callable[[argparse.Namespace, Storage], Awaitable[int]]] = {
    "put": files.cmd_put,
    "get": files.cmd_get,
    "ls": files.cmd_ls,
    "rm": files.cmd_rm,
    "info": files.cmd_info,
    "fsck": fsck.cmd_fsck,
    "probe": probe.cmd_probe,
}


async def run_tool(args: argparse.Namespace, values: dict[str, Any]) -> int:
    """Runs one of :data:`TOOLS` on the storage ``values`` name, closing it after; a missing
    file or an unreachable storage is exit 1, an invalid key a :class:`UsageError`."""
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        if args.command == "sign":
            return sign.cmd_sign(args, environ)
        if args.command == "migrate":
            return migrate.run(args)
        if args.command == "serve":
            values = settings_for(args, ALL_SETTINGS, environ)
            return serve.serve(values, args.print_config)
        values = settings_for(args, STORAGE_SETTINGS, environ)
        logging.basicConfig(level=getattr(logging, values["log_level"].upper()))
        quiet_libraries(values)
        return asyncio.run(run_tool(args, values))
    except (UsageError, ConfigError) as exc:
        parser.exit(EXIT_USAGE, f"gridserve: {exc}\n")
    except KeyboardInterrupt:
        return 130
