"""Soak scenario: uploads abandoned at random points must all end and leave nothing behind.

Run through ``scripts/bench soak`` (not a test: it measures). Starts ``gridserve serve`` on the
test database, warms it up, then sends ``--uploads`` PUTs of a declared (every other one:
chunked) ``--size`` bytes, ``--concurrency`` at a time, each abandoned (the socket closed) at
a random point of its body. Once they have settled it prints, and checks:

- ``gridserve_streams_in_flight``, ``gridserve_uploads_in_flight`` and
  ``gridserve_requests_in_flight`` are 0, and every abandoned request ended as a 499;
- the server's RSS grew by less than ``--max-rss-growth`` MiB (after settling, against after a
  warm-up of ``--warmup`` abandoned uploads, which brings the connection pool and the
  allocator to their steady state);
- the database holds no chunk without a file document.

Exit 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pymongo

from scripts.benchtools import MIB, TOKEN, Server, gridserve_server, running
from tests.dbserver import FerretDB, ferretdb_binary

GAUGES = (
    "gridserve_streams_in_flight",
    "gridserve_uploads_in_flight",
    "gridserve_requests_in_flight",
)


async def abandon(port: int, index: int, size: int, cut: int, chunked: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    writer.write(
        f"PUT /fs/soak/{index}.webm HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"{length}\r\n\r\n".encode()
    )
    body = b"\x1aE\xdf\xa3" + bytes(cut)
    body = body[:cut]
    for i in range(0, len(body), 64 * 1024):
        piece = body[i : i + 64 * 1024]
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        await writer.drain()
    writer.close()
    await writer.wait_closed()
    del reader


async def wave(port: int, count: int, concurrency: int, size: int, seed: int) -> None:
    rng = random.Random(seed)
    limit = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with limit:
            await abandon(port, index, size, rng.randrange(0, size), index % 2 == 1)

    await asyncio.gather(*(one(i) for i in range(count)))


def settle(server: Server, abandoned: int, timeout: float = 120) -> tuple[dict[str, float], float]:
    started = time.monotonic()
    while True:
        found = server.metrics()
        ended = found.get('gridserve_requests_total{method="PUT",status="499"}', 0)
        busy = [g for g in GAUGES if found.get(g, 0) > 0]  # /metrics itself is not counted
        if (not busy and ended >= abandoned) or time.monotonic() - started > timeout:
            return found, time.monotonic() - started
        time.sleep(0.5)


def orphans(uri: str, db_name: str) -> int:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(uri)
    try:
        db = client[db_name]
        ids = set(db["fs.chunks"].distinct("files_id"))
        files = {doc["_id"] for doc in db["fs.files"].find({}, {"_id": 1})}
        return db["fs.chunks"].count_documents({"files_id": {"$in": list(ids - files)}})
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--size", type=int, default=2 * MIB)
    parser.add_argument(
        "--warmup",
        type=int,
        default=500,
        help="abandoned uploads before measuring: the database connection pool and the "
        "allocator reach their steady state (default 500)",
    )
    parser.add_argument("--max-rss-growth", type=float, default=5.0, metavar="MIB")
    args = parser.parse_args()

    database = FerretDB(ferretdb_binary())
    database.start()
    db_name = "soak"
    server = gridserve_server(
        database.uri + db_name, "--upload-token", TOKEN, name="gridserve (GridFS)"
    )
    port = server.port
    try:
        with running(server):
            time.sleep(1)
            at_start = server.rss()
            asyncio.run(wave(port, args.warmup, args.concurrency, args.size, 1))
            settle(server, args.warmup)
            time.sleep(2)
            before = server.rss()
            started = time.monotonic()
            asyncio.run(wave(port, args.uploads, args.concurrency, args.size, 2))
            sent = time.monotonic() - started
            found, waited = settle(server, args.warmup + args.uploads)
            time.sleep(2)
            after = server.rss()
            left = orphans(database.uri, db_name)
    finally:
        database.cleanup()
    growth = (after - before) / MIB
    ended = found.get('gridserve_requests_total{method="PUT",status="499"}', 0) - args.warmup
    print(f"abandoned uploads       {args.uploads} ({args.concurrency} at a time), sent in "
          f"{sent:.1f}s, settled {waited:.1f}s later")  # fmt: skip
    print(f"ended as 499            {ended:.0f}")
    for gauge in GAUGES:
        print(f"{gauge:<30} {found.get(gauge, 0):.0f}")
    print(f"RSS at start            {at_start / MIB:.1f} MiB; after {args.warmup} warm-up "
          f"uploads (abandoned likewise) {before / MIB:.1f} MiB")  # fmt: skip
    print(f"RSS                     {before / MIB:.1f} MiB -> {after / MIB:.1f} MiB "
          f"({growth:+.1f} MiB)")  # fmt: skip
    print(f"orphan chunks           {left}")
    ok = (
        ended >= args.uploads
        and found.get("gridserve_streams_in_flight", 0) == 0
        and found.get("gridserve_uploads_in_flight", 0) == 0
        and found.get("gridserve_requests_in_flight", 0) == 0
        and growth < args.max_rss_growth
        and left == 0
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
