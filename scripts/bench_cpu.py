"""CPU per byte and per request, on a database fast enough to measure a server by.

``scripts/bench --cpu`` runs this scenario on mongo-java-server (``scripts/build-bench-db``),
and also on ``MONGODB_URI`` when it is set. On the test database (FerretDB/SQLite) every
GridFS server idles while the database works, so MB/s there is the database's figure; the CPU
a server spends per MiB and per request is its own on any database, and is what this reports,
beside MB/s and req/s, each with its floor measured in the same run:

- full download: the driver's own chunk read (a cursor over ``fs.chunks``) per MiB;
- small files: the driver's own lookup of the file document plus its one-chunk read, per file;
- uploads: PyMongo's ``upload_from_stream`` plus the MD5 and SHA-256 gridserve stores, per MiB.

A server's CPU is read from ``/proc/<pid>/stat`` (user + system time of its process) around
the measured work; the driver's floor with ``time.process_time`` in this process. Every figure
is a median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchmarks import (  # noqa: E402
    CHUNK,
    MIB,
    SMALL_COUNT,
    SMALL_FILES_LUA,
    TOKEN,
    Server,
    checked,
    running,
    seed,
    servers,
    wrk,
)
from tests.dbserver import FastDatabase, bench_database_launcher  # noqa: E402

FULL = 32 * MIB
SERIAL_SMALL = 1000
UPLOAD = 64 * MIB
CONTESTANTS = (
    "gridserve (GridFS)",
    "gridserve, --loop asyncio",
    "motor GridFSHandler",
    "motor AIOHTTPGridFS",
)
PEERS = CONTESTANTS[2:]
TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


BASELINE = "gridserve (baseline)"


def contestant(
    uri: str, db_name: str, disk: Path, workdir: Path, name: str, baseline: Path | None = None
) -> Server:
    """The server ``name`` of :data:`CONTESTANTS` (gridserve runs on its default event loop,
    uvloop when installed, and again on asyncio's), or :data:`BASELINE`: gridserve from the
    source tree ``baseline`` (another version, e.g. ``git archive main | tar -x -C DIR``),
    run from that directory so its package is the one imported."""
    if name == BASELINE:
        assert baseline is not None
        server = servers(uri, db_name, disk, workdir)["gridserve (GridFS)"]
        server.name = name
        server.command = ["sh", "-c", 'cd "$0" && exec "$@"', str(baseline), *server.command]
        return server
    if name == "gridserve, --loop asyncio":
        server = servers(uri, db_name, disk, workdir)["gridserve (GridFS)"]
        server.name = name
        server.command = [*server.command, "--loop", "asyncio"]
        return server
    return servers(uri, db_name, disk, workdir)[name]


def page_faults(pid: int) -> int:
    """Minor page faults of process ``pid`` so far."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def stalled_readers_rss(server: Server, count: int = 50) -> float:
    """MiB of resident memory the server grows by while ``count`` clients request the large
    file and read nothing (a 4 KiB receive buffer each), per client."""
    import socket

    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status")

    def rss() -> float:
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS"))
        return int(line.split()[1]) / 1024

    time.sleep(1.5)  # past the idle trim after the warm-up
    before = rss()
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", server.port))
        client.sendall(b"GET /fs/large.bin HTTP/1.1\r\nHost: bench\r\n\r\n")
        clients.append(client)
    time.sleep(4)
    grown = rss() - before
    for client in clients:
        client.close()
    return grown / count


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS


def server_cpu(server: Server, work: Callable[..., T], *args: Any) -> tuple[T, float]:
    """Runs ``work(*args)``: (its result, CPU seconds the server spent meanwhile)."""
    assert server.process is not None
    before = process_cpu(server.process.pid)
    result = work(*args)
    time.sleep(0.2)  # let the server finish accounting for the last response
    return result, process_cpu(server.process.pid) - before


def serial_gets(server: Server, paths: list[str]) -> int:
    """GETs every path in turn on one keep-alive connection; the body bytes read."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    total = 0
    for path in paths:
        conn.request("GET", path)
        response = conn.getresponse()
        total += len(response.read())
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
    conn.close()
    return total


def put(server: Server, name: str, data: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    conn.request("PUT", name, body=data, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    response.read()
    if response.status != 201:
        raise RuntimeError(f"PUT {name}: {response.status}")


# -- the floors: the driver alone, in this process ---------------------------------------------


async def driver_read_floor(uri: str, db_name: str, filename: str) -> tuple[float, float]:
    """(MiB/s, CPU ms per MiB) of the async driver reading a file's chunks in order."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[db_name]
    doc = await db["fs.files"].find_one({"filename": filename})
    assert doc is not None

    async def read() -> int:
        total = 0
        cursor = db["fs.chunks"].find(
            {"files_id": doc["_id"]}, {"data": 1, "_id": 0}, sort=[("n", 1)], batch_size=16
        )
        async for chunk in cursor:
            total += len(chunk["data"])
        return total

    await read()
    cpu, wall = time.process_time(), time.perf_counter()
    total = await read()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.close()
    return total / MIB / wall, cpu * 1000 / (total / MIB)


async def driver_small_floor(uri: str, db_name: str) -> float:
    """CPU ms per file of the async driver looking a small file up by name and reading it."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[db_name]

    async def one(i: int) -> None:
        doc = await db["fs.files"].find_one(
            {"filename": f"small/{i % SMALL_COUNT}.bin"}, sort=[("uploadDate", -1)]
        )
        assert doc is not None
        async for _ in db["fs.chunks"].find({"files_id": doc["_id"]}, sort=[("n", 1)]):
            pass

    for i in range(SMALL_COUNT):
        await one(i)
    cpu = time.process_time()
    for i in range(SERIAL_SMALL):
        await one(i)
    cpu = time.process_time() - cpu
    await client.close()
    return cpu * 1000 / SERIAL_SMALL


async def driver_upload_floor(uri: str, db_name: str, data: bytes) -> float:
    """CPU ms per MiB of ``upload_from_stream`` plus the MD5 and SHA-256 of the same bytes."""
    from gridfs import AsyncGridFSBucket
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=CHUNK)
    cpu = time.process_time()
    await bucket.upload_from_stream("floor.bin", data)
    hashlib.md5(data, usedforsecurity=False).hexdigest()
    hashlib.sha256(data).hexdigest()
    cpu = time.process_time() - cpu
    await client.close()
    return cpu * 1000 / (len(data) / MIB)


# -- the run ----------------------------------------------------------------------------------


def measure(
    uri: str, label: str, repeats: int, seconds: float, baseline: Path | None = None
) -> list[str]:
    workdir = Path(tempfile.mkdtemp(prefix="gridserve-bench-cpu-"))
    disk = workdir / "files"
    prefix = "cpu"
    lines = [f"CPU per byte and per request on {label} (medians of {repeats})", ""]
    try:
        seed(uri, prefix, disk, large=FULL)
        floor_mbs, floor_cpu = zip(
            *(
                asyncio.run(driver_read_floor(uri, f"{prefix}_large", "large.bin"))
                for _ in range(repeats)
            ),
            strict=True,
        )
        small_floor = statistics.median(
            asyncio.run(driver_small_floor(uri, f"{prefix}_small")) for _ in range(repeats)
        )
        upload = os.urandom(UPLOAD)
        upload_floor = statistics.median(
            asyncio.run(driver_upload_floor(uri, f"{prefix}_upfloor", upload))
            for _ in range(repeats)
        )
        lines.append(
            f"{'':<26} {'MiB/s':>8} {'ms/MiB':>8} {'flt/MiB':>8} {'stall MiB':>9} "
            f"{'small/s':>8} {'ms/req':>8} {'up ms/MiB':>10}"
        )
        lines.append(
            f"{'driver alone (the floor)':<26} {statistics.median(floor_mbs):>8.0f} "
            f"{statistics.median(floor_cpu):>8.2f} {'':>8} {'':>9} {'':>8} {small_floor:>8.2f} "
            f"{upload_floor:>10.2f}"
        )
        figures: dict[str, dict[str, float]] = {}
        names = [*CONTESTANTS[:1], *([BASELINE] if baseline else []), *CONTESTANTS[1:]]
        for name in names:
            print(f"measuring {name} on {label} ...", flush=True)
            r = figures[name] = {}
            with running(
                contestant(uri, f"{prefix}_large", disk, workdir, name, baseline)
            ) as server:
                assert server.process is not None
                url = server.url("/fs/large.bin")
                count = max(2, round(seconds * 200 * MIB / FULL))  # about `seconds` at 200 MB/s
                curl_downloads(url, 2)  # warm up
                runs = []
                faults = []
                for _ in range(repeats):
                    before = page_faults(server.process.pid)
                    runs.append(server_cpu(server, curl_downloads, url, count))
                    moved = runs[-1][0][0] / MIB
                    faults.append((page_faults(server.process.pid) - before) / moved)
                r["mbs"] = statistics.median(size / MIB / wall for (size, wall), _ in runs)
                r["cpu_mib"] = statistics.median(
                    cpu * 1000 / (size / MIB) for (size, _), cpu in runs
                )
                r["faults"] = statistics.median(faults)
                r["stall"] = stalled_readers_rss(server)
            with running(
                contestant(uri, f"{prefix}_small", disk, workdir, name, baseline)
            ) as server:
                paths = [f"/fs/small/{i % SMALL_COUNT}.bin" for i in range(SERIAL_SMALL)]
                serial_gets(server, paths[:SMALL_COUNT])
                r["cpu_req"] = statistics.median(
                    server_cpu(server, serial_gets, server, paths)[1] * 1000 / len(paths)
                    for _ in range(repeats)
                )
                r["small_rps"] = statistics.median(
                    checked(
                        name, wrk(server.url("/fs/small/0.bin"), 16, seconds, SMALL_FILES_LUA)
                    ).requests_per_s
                    for _ in range(repeats)
                )
            if name.startswith("gridserve"):
                with running(
                    contestant(uri, f"{prefix}_upload", disk, workdir, name, baseline)
                ) as server:
                    r["up_cpu"] = statistics.median(
                        server_cpu(server, put, server, "/fs/up.bin", upload)[1]
                        * 1000
                        / (UPLOAD / MIB)
                        for _ in range(repeats)
                    )
            lines.append(
                f"{name:<26} {r['mbs']:>8.0f} {r['cpu_mib']:>8.2f} {r['faults']:>8.0f} "
                f"{r['stall']:>9.2f} {r['small_rps']:>8.0f} {r['cpu_req']:>8.2f} "
                f"{fmt_opt(r.get('up_cpu')):>10}"
            )
        g = figures["gridserve (GridFS)"]
        peers = [figures[n] for n in PEERS]
        best_cpu_req = min(p["cpu_req"] for p in peers)
        best_rps = max(p["small_rps"] for p in peers)
        lines += [
            "",
            "Ratios (targets of issue 15 in brackets):",
            f"- full download, 1 client: gridserve/driver MB/s "
            f"{g['mbs'] / statistics.median(floor_mbs):.2f} (>= 0.8); CPU per MiB "
            f"gridserve/driver {g['cpu_mib'] / statistics.median(floor_cpu):.2f} (<= 1.5)",
            f"- small files: CPU per request gridserve/best peer {g['cpu_req'] / best_cpu_req:.2f}"
            f" (<= 0.6), gridserve/driver floor {g['cpu_req'] / small_floor:.2f} (<= 2); "
            f"req/s at 16 connections gridserve/best peer {g['small_rps'] / best_rps:.2f} "
            f"(>= 1.5)",
            f"- uploads: CPU per MiB gridserve/(driver + digests) "
            f"{g['up_cpu'] / upload_floor:.2f} (<= 1.2)",
        ]
        if baseline:
            b = figures[BASELINE]
            lines.append(
                "- against the baseline in this run: CPU per MiB "
                f"{g['cpu_mib'] / b['cpu_mib']:.2f}, "
                f"per small request {g['cpu_req'] / b['cpu_req']:.2f}, small req/s "
                f"{g['small_rps'] / b['small_rps']:.2f}, upload CPU per MiB "
                f"{g['up_cpu'] / b['up_cpu']:.2f}; baseline CPU per MiB / driver "
                f"{b['cpu_mib'] / statistics.median(floor_cpu):.2f}"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return lines


def curl_downloads(url: str, count: int) -> tuple[int, float]:
    """(bytes, seconds) of one curl downloading ``url`` whole ``count`` times in a row on one
    keep-alive connection."""
    command = ["curl", "-sS", "--fail", "-w", "%{size_download}\\n"]
    command += [arg for _ in range(count) for arg in ("-o", "/dev/null", url)]
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in out.split()), time.perf_counter() - start


def fmt_opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also measure gridserve from this source tree (e.g. git archive main | tar -x)",
    )
    args = parser.parse_args(argv)
    database = FastDatabase(bench_database_launcher())
    database.start()
    try:
        lines = measure(
            database.uri,
            "mongo-java-server (in memory)",
            args.repeats,
            args.seconds,
            args.baseline.resolve() if args.baseline else None,
        )
    finally:
        database.cleanup()
    if os.environ.get("MONGODB_URI"):
        uri = os.environ["MONGODB_URI"]
        lines += ["", *measure(uri, "MONGODB_URI", args.repeats, args.seconds)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
