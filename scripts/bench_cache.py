"""The chunk cache: what sixteen viewers of one file cost the database, and how fast they get it.

``scripts/bench --cache`` runs this scenario on the fast benchmark database (mongo-java-server,
``scripts/build-bench-db``), or on the test database with ``--database test`` (smaller files).
Three servers, one after the other, each fresh (a cold cache):

- gridserve on GridFS with ``--chunk-cache 256M`` (cache on),
- gridserve on GridFS with ``--chunk-cache 0`` (cache off: today's path),
- gridserve on local disk, the same file (the cache's ideal: memory, whatever the database).

Scenarios: 16 clients (curl) download the same file at once, twice (the cache cold, then
warm); 16 clients each read ``--seeks`` ranges of 1 MiB at random offsets of it (keep-alive,
Python threads), twice. Reported: aggregate MB/s, and bytes read from the storage over both
runs, the server's ``gridserve_storage_read_bytes_total`` (behind the cache, what the cache read
from the database; on local disk, what was read from the files); with the cache off, seeks
count the whole chunks their ranges span, which is what the database sent.

Then a scan: with ``--chunk-cache`` of 1.6 times the hot file, one client downloads a file
larger than the cache while 4 clients keep reading random ranges of the (warm) hot file. The hot
file's hit rate is the cache's hits over hits plus misses, less the scan's own misses (a single
reader of each of its chunks: all misses, no hits).
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchtools import CHUNK, MIB, Server, gridserve_server, running  # noqa: E402
from tests.dbserver import (  # noqa: E402
    FastDatabase,
    FerretDB,
    bench_database_launcher,
    ferretdb_binary,
)

CLIENTS = 16
SEEK = MIB
DB_NAME = "bench_cache"


def seed(uri: str, disk: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    """Stores each file in GridFS (255 KiB chunks) and under ``disk``; returns their bytes."""
    import gridfs
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(uri)
    bucket = gridfs.GridFSBucket(client[DB_NAME], chunk_size_bytes=CHUNK)
    files = {}
    for name, size in sizes.items():
        data = random.Random(name).randbytes(size)
        bucket.upload_from_stream(name, data)
        (disk / name).write_bytes(data)
        files[name] = data
    client.close()
    return files


def metric(server: Server, name: str) -> float:
    """Metric ``name`` summed over its labels (gridserve_storage_read_bytes_total{storage=...})."""
    samples = server.metrics().items()
    return sum(value for key, value in samples if key == name or key.startswith(name + "{"))


def downloads(server: Server, path: str, size: int) -> float:
    """16 concurrent complete downloads with curl; aggregate MB/s."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", server.url(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(CLIENTS)
    ]
    got = [int(p.communicate()[0] or 0) for p in procs]
    wall = time.perf_counter() - started
    assert got == [size] * CLIENTS, got
    return CLIENTS * size / MIB / wall


def seeks(
    server: Server, path: str, data: bytes, per_client: int, clients: int = CLIENTS
) -> tuple[float, int]:
    """``clients`` threads, each ``per_client`` 1 MiB ranges at random offsets over one
    keep-alive connection; returns aggregate MB/s and the bytes of the whole chunks those
    ranges span (what the database reads for them without a cache)."""
    size = len(data)
    spans = [0] * clients
    errors: list[str] = []

    def client(i: int) -> None:
        rng = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for _ in range(per_client):
            start = rng.randrange(0, size - SEEK)
            end = start + SEEK - 1
            conn.request("GET", path, headers={"Range": f"bytes={start}-{end}"})
            body = conn.getresponse().read()
            if body != data[start : end + 1]:
                errors.append(f"wrong bytes at {start}")
            first, last = start // CHUNK, end // CHUNK
            spans[i] += min(size, (last + 1) * CHUNK) - first * CHUNK
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    assert not errors, errors[:3]
    return clients * per_client * SEEK / MIB / wall, sum(spans)


def scan_while_hot(storage: str, hot: bytes, scan_size: int, seeks_per_client: int) -> str:
    cache = int(len(hot) * 1.6)
    with running(gridserve_server(storage, "--chunk-cache", str(cache))) as server:
        seeks(server, "/fs/hot.bin", hot, 8, clients=4)  # warm: read more than once
        downloads(server, "/fs/hot.bin", len(hot))
        hits0 = metric(server, "gridserve_cache_hits_total")
        misses0 = metric(server, "gridserve_cache_misses_total")
        scan = threading.Thread(
            target=subprocess.run,
            args=(["curl", "-sf", "-o", "/dev/null", server.url("/fs/scan.bin")],),
            kwargs={"check": True},
        )
        scan.start()
        seeks(server, "/fs/hot.bin", hot, seeks_per_client, clients=4)
        scan.join()
        hits = metric(server, "gridserve_cache_hits_total") - hits0
        misses = metric(server, "gridserve_cache_misses_total") - misses0
        cached = metric(server, "gridserve_cache_bytes")
    scan_chunks = -(-scan_size // CHUNK)
    hot_misses = max(0.0, misses - scan_chunks)
    rate = hits / (hits + hot_misses) if hits + hot_misses else 0.0
    return (
        f"scan of {scan_size / MIB:.0f} MiB through a {cache / MIB:.0f} MiB cache while 4 clients "
        f"read {4 * seeks_per_client} ranges of the {len(hot) / MIB:.0f} MiB hot file: hot hit "
        f"rate {rate:.1%} ({hits:.0f} hits, {hot_misses:.0f} misses; target > 90%); "
        f"cache held {cached / MIB:.0f} MiB at the end"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=("fast", "test"), default="fast")
    parser.add_argument("--seeks", type=int, default=24, help="1 MiB ranges per seek client")
    args = parser.parse_args()
    fast = args.database == "fast"
    size = 60 * MIB if fast else 12 * MIB
    scan_size = int(size * 1.6 * 1.5)
    database = FastDatabase(bench_database_launcher()) if fast else FerretDB(ferretdb_binary())
    workdir = Path(tempfile.mkdtemp(prefix="gridserve-bench-cache-"))
    try:
        database.start()
        files = seed(database.uri, workdir, {"hot.bin": size, "scan.bin": scan_size})
        hot = files["hot.bin"]
        storage = database.uri + DB_NAME
        print(f"{CLIENTS} clients, {size / MIB:.0f} MiB file, {args.database} database")
        print(
            f"{'':<16} {'download MB/s':>14} {'again':>6} {'DB MiB':>7} "
            f"{'seek MB/s':>10} {'again':>6} {'DB MiB':>7}"
        )
        results = {}
        for label, target, options in (
            ("cache on (256M)", storage, ["--chunk-cache", "256M"]),
            ("cache off", storage, ["--chunk-cache", "0"]),
            ("local disk", str(workdir), []),
        ):
            with running(gridserve_server(target, *options)) as server:  # a cold cache
                down = downloads(server, "/fs/hot.bin", size)
                down_again = downloads(server, "/fs/hot.bin", size)
                read_down = metric(server, "gridserve_storage_read_bytes_total")
            with running(gridserve_server(target, *options)) as server:
                seek, spans = seeks(server, "/fs/hot.bin", hot, args.seeks)
                seek_again, _ = seeks(server, "/fs/hot.bin", hot, args.seeks)
                read_seek = metric(server, "gridserve_storage_read_bytes_total")
            if label == "cache off":  # the handlers count the bytes of the ranges
                read_seek = max(read_seek, 2 * spans)  # the database sent their whole chunks
            results[label] = (down, down_again, seek, seek_again)
            print(
                f"{label:<16} {down:>14.0f} {down_again:>6.0f} {read_down / MIB:>7.0f} "
                f"{seek:>10.0f} {seek_again:>6.0f} {read_seek / MIB:>7.0f}",
                flush=True,
            )
        on, off, local = results["cache on (256M)"], results["cache off"], results["local disk"]
        print(
            "cache on / local disk, cold and again: downloads "
            f"{on[0] / local[0]:.2f} and {on[1] / local[1]:.2f}, seeks {on[2] / local[2]:.2f} "
            f"and {on[3] / local[3]:.2f} (target >= 0.5); cache on / off: downloads "
            f"{on[0] / off[0]:.2f} and {on[1] / off[1]:.2f}, seeks {on[2] / off[2]:.2f} and "
            f"{on[3] / off[3]:.2f}",
            flush=True,
        )
        print(scan_while_hot(storage, hot, scan_size, args.seeks * 2), flush=True)
    finally:
        database.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    sys.exit(main())
