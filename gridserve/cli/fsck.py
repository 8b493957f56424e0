"""``gridserve fsck``: report what interrupted uploads left in a storage (orphan GridFS chunks,
temporary files, pending S3 multipart uploads, expired resumable uploads); ``--repair`` deletes
it. See
:mod:`gridserve.sweep` for what counts and what it costs.

Exit codes: 0 nothing found (or everything found was deleted), 3 leftovers found and kept
(run again with ``--repair``); 1 and 2 as for every command.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gridserve.storage.base import Storage
from gridserve.sweep import DEFAULT_GRACE, sweep

EXIT_LEFTOVERS = 3


def add_parser(commands: Any) -> argparse.ArgumentParser:
    fsck: argparse.ArgumentParser = commands.add_parser(
        "fsck", help="find (--repair: delete) what interrupted uploads left behind"
    )
    fsck.add_argument("--repair", action="store_true", help="delete what is found")
    fsck.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help=f"only leftovers older than this (default {DEFAULT_GRACE:.0f}: a day; uploads "
        "in progress, of gridserve or of other tools, are younger)",
    )
    fsck.add_argument("--json", action="store_true", help="one JSON report")
    return fsck


async def cmd_fsck(args: argparse.Namespace, storage: Storage) -> int:
    leftovers: list[dict[str, Any]] = []
    report = await sweep(storage, grace=args.grace, repair=args.repair, start=None)
    leftovers += [vars(item) for item in report.leftovers]
    while not report.complete:
        report = await sweep(storage, grace=args.grace, repair=args.repair, start=report.checkpoint)
        leftovers += [vars(item) for item in report.leftovers]
    if args.json:
        print(json.dumps({"storage": storage.description, "leftovers": leftovers}, indent=1))
    else:
        for item in leftovers:
            state = "deleted" if item["deleted"] else "found"
            print(
                f"{state}\t{item['kind']}\t{item['what']}\t{item['count']}\t"
                f"{item['size']}\t{item['age_seconds'] / 3600:.1f}h"
            )
        print(f"{len(leftovers)} leftover(s) in {storage.description}")
    if leftovers and not args.repair:
        return EXIT_LEFTOVERS
    return 0
