"""``gridserve migrate --from URI --to URI``: copy (or move) files between storages, keeping
their URLs. The work is :func:`gridserve.migrate.migrate`; this is its command line.

Output: a progress line on stderr when it is a terminal; the summary as one JSON object on
stdout, or as a few readable lines when stdout is a terminal. Exit codes as the other file
tools: 0 every file is in the target; 1 a file failed or a storage could not be reached (a
re-run continues); 2 bad usage (unknown flag, invalid storage URI); 130 interrupted
(SIGINT/SIGTERM: the file in flight is abandoned cleanly, nothing partial is left).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gridserve.cli.common import EXIT_RUNTIME, EXIT_USAGE
from gridserve.migrate import Options, Summary, migrate
from gridserve.storage import (
    GridFSStorage,
    LocalStorage,
    Storage,
    StorageUnavailable,
    StorageURIError,
    from_uri,
    mask_text,
    mask_uri,
)
from gridserve.storage.s3 import S3Storage

EXIT_INTERRUPTED = 130
PING_TIMEOUT = 10.0


def _jobs(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 64")
    return value


def add_parser(commands: Any) -> None:
    """Adds ``migrate`` to the ``gridserve`` subcommands."""
    parser = commands.add_parser(
        "migrate",
        help="copy or move files between storages, keeping their URLs",
        description="Copies every file of one storage into another keeping name, type, "
        "metadata, digests and upload date (so URLs, ETags and Last-Modified survive). "
        "Idempotent: run it again to continue an interrupted migration. Storage URIs: "
        "mongodb://host/db?bucket=fs, s3://KEY:SECRET@bucket/prefix?endpoint=URL&region=R, "
        "or a directory.",
    )
    parser.add_argument("--from", dest="source", required=True, metavar="URI", help="source")
    parser.add_argument("--to", dest="target", required=True, metavar="URI", help="target")
    parser.add_argument(
        "--only", default="", metavar="NAMEPREFIX", help="only names starting with this"
    )
    parser.add_argument("--jobs", type=_jobs, default=4, metavar="N", help="files at once (4)")
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read each copy back and compare its SHA-256 (default on)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would move")
    parser.add_argument(
        "--delete-source",
        action="store_true",
        help="delete each source file once its copy is verified",
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``gridserve migrate``; returns the exit code."""
    overlap = "--from and --to overlap: one storage would copy into itself"
    source_dir, target_dir = _local_path(args.source), _local_path(args.target)
    if source_dir is not None and not source_dir.is_dir():
        return _usage(f"--from {args.source}: no such directory")
    if source_dir and target_dir and _overlap(_dir_place(source_dir), _dir_place(target_dir)):
        return _usage(overlap)  # checked before the target directory is created
    try:
        source = from_uri(args.source, create=False)
        target = from_uri(args.target)
    except StorageURIError as exc:
        return _usage(str(exc))
    if _overlap(_place(source, args.source), _place(target, args.target)):
        asyncio.run(_close(source, target))
        return _usage(overlap)
    return asyncio.run(_run(args, source, target))


def _dir_place(path: Path) -> tuple[str, ...]:
    return ("local", *path.resolve().parts)


def _local_path(uri: str) -> Path | None:
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri.removeprefix("file://").removeprefix("file:"))


def _place(storage: Storage, uri: str) -> tuple[str, ...]:
    """Where ``storage`` keeps its files, as a path of names: two storages overlap when one
    place is a prefix of the other."""
    if isinstance(storage, LocalStorage):
        return _dir_place(storage.real_root)
    if isinstance(storage, GridFSStorage):
        hosts = uri.partition("://")[2].partition("/")[0].rpartition("@")[2].lower()
        return ("gridfs", hosts, storage.database.name, storage.bucket)
    if isinstance(storage, S3Storage):
        endpoint = str(storage._client_options.get("endpoint_url") or "aws")
        return ("s3", endpoint, storage.bucket, *storage.prefix.split("/"))
    return ("other", uri)


def _overlap(one: tuple[str, ...], other: tuple[str, ...]) -> bool:
    # an S3 prefix "a/" splits into ("a", ""): dropping empty parts compares "a" to "a/b"
    trimmed = [tuple(part for part in p if part) for p in (one, other)]
    shorter = min(len(trimmed[0]), len(trimmed[1]))
    return trimmed[0][:shorter] == trimmed[1][:shorter]


async def _close(*storages: Storage) -> None:
    for storage in storages:
        await storage.close()


def _usage(message: str) -> int:
    print(f"gridserve: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _run(args: argparse.Namespace, source: Storage, target: Storage) -> int:
    try:
        for storage, uri in ((source, args.source), (target, args.target)):
            try:
                await asyncio.wait_for(storage.ping(), PING_TIMEOUT)
            except (StorageUnavailable, asyncio.TimeoutError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else "no answer"
                print(
                    f"gridserve: cannot reach storage {mask_uri(uri)}: {mask_text(reason, uri)}",
                    file=sys.stderr,
                )
                return EXIT_RUNTIME
        options = Options(
            only=args.only,
            jobs=args.jobs,
            verify=args.verify,
            dry_run=args.dry_run,
            delete_source=args.delete_source,
        )
        summary = Summary()
        bar = ProgressLine()
        work = asyncio.ensure_future(migrate(source, target, options, bar.advance, summary))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, work.cancel)
        status = 0
        try:
            await work
        except asyncio.CancelledError:
            summary.interrupted = "interrupted by a signal"
            status = EXIT_INTERRUPTED
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            bar.close()
        _report(args, summary)
        if status:
            return status
        return EXIT_RUNTIME if summary.failed or summary.interrupted else 0
    finally:
        await source.close()
        await target.close()


def _report(args: argparse.Namespace, summary: Summary) -> None:
    shown = summary.as_json()
    shown = {"from": mask_uri(args.source), "to": mask_uri(args.target), **shown}
    if args.dry_run:
        shown["dry_run"] = True
        shown["files"] = summary.planned
    if summary.interrupted:
        for uri in (args.source, args.target):
            shown["interrupted"] = mask_text(shown["interrupted"], uri)
    if not sys.stdout.isatty():
        print(json.dumps(shown, ensure_ascii=False))
        return
    if args.dry_run:
        for planned in summary.planned:
            print(f"{planned['action']:>10}  {planned['length']:>14}  {planned['name']}")
    print(
        f"copied {summary.copied} ({summary.bytes / 2**20:.1f} MiB, {shown['mb_per_s']} MB/s), "
        f"already there {summary.skipped}, failed {summary.failed}, "
        f"deleted from source {summary.deleted}"
    )
    if summary.skipped_revisions:
        print(f"{summary.skipped_revisions} older revision(s) not copied (newest-only target)")
    if summary.kept_newer:
        print(f"{summary.kept_newer} file(s) kept: the target's is newer")
    for renamed in summary.renamed:
        print(f"renamed {renamed['from']!r} -> {renamed['to']!r}")
    for error in summary.errors:
        print(f"failed: {error['name']}: {error['error']}")
    if summary.interrupted:
        print(f"interrupted: {shown['interrupted']} (run again to continue)")


class ProgressLine:
    """Files done, MiB copied and the rate, redrawn on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.files = self.size = 0
        self.started = time.monotonic()
        self._last = 0.0

    def advance(self, files: int, size: int) -> None:
        self.files += files
        self.size += size
        now = time.monotonic()
        if self.enabled and now - self._last > 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.size / max(now - self.started, 1e-6) / 1e6
        sys.stderr.write(
            f"\rmigrate  {self.files} file(s)  {self.size / 2**20:.1f} MiB  {rate:.1f} MB/s "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
