"""The file tools, like mongofiles: ``put``, ``get``, ``ls``, ``rm``, ``info``. They talk to
the storage directly (no server); :func:`run_tool` in :mod:`gridserve.cli` opens it, runs one and
maps the storage's errors to exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from gridserve.cli.common import EXIT_RUNTIME, UsageError, add_settings
from gridserve.cli.probe import probe_stored
from gridserve.config import STORAGE_SETTINGS
from gridserve.handlers.files import describe_file, doomed_files
from gridserve.storage import FileNotFound, Storage
from gridserve.uploads import SNIFF_BYTES, Rejected, decide_content_type, sanitize_name, sniff

COPY_BLOCK = 1024 * 1024


def add_parsers(commands: Any) -> None:
    """Adds ``put``, ``get``, ``ls``, ``rm`` and ``info``, each with the storage flags."""
    put = commands.add_parser("put", help="store files")
    put.add_argument("files", nargs="+", metavar="FILE")
    put.add_argument("--name", help="the stored name (one FILE only); default: FILE's path")
    put.add_argument("--content-type", help="default: sniffed from the content")
    put.add_argument("--metadata", metavar="JSON", help="a JSON object stored with each file")
    add_settings(put, STORAGE_SETTINGS)

    get = commands.add_parser("get", help="fetch a file")
    get.add_argument("key", metavar="KEY", help="ObjectId or name")
    get.add_argument("-o", "--output", help="file to write, - for stdout; default: its name")
    get.add_argument("--rev", type=int, default=None, help="revision (-1 newest, 0 oldest)")
    add_settings(get, STORAGE_SETTINGS)

    ls = commands.add_parser("ls", help="list files")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    ls.add_argument("--json", action="store_true", help="one JSON array")
    ls.add_argument("--limit", type=int, default=1000)
    add_settings(ls, STORAGE_SETTINGS)

    rm = commands.add_parser(
        "rm",
        help="delete files: every revision of a NAME (or --rev N), or the one file of an ID",
    )
    rm.add_argument("keys", nargs="+", metavar="KEY", help="a name, or a file's id")
    rm.add_argument(
        "--rev", type=int, default=None, help="only this revision (-1 newest, 0 oldest)"
    )
    add_settings(rm, STORAGE_SETTINGS)

    info = commands.add_parser("info", help="describe a file as JSON")
    info.add_argument("key", metavar="KEY")
    info.add_argument("--rev", type=int, default=None)
    add_settings(info, STORAGE_SETTINGS)


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
