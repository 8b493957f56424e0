"""How ``scripts/benchmarks.py`` (gridserve against its peers) measures: wrk and curl runs
(medians of repeats, a load test with the server's memory sampled), and measurements made in
this process: times to the first byte, memory under slow readers, the raw driver's reads,
seeks and uploads (the ceilings), an HTTP upload.
"""

from __future__ import annotations

import asyncio
import http.client
import statistics
import subprocess
import time
from typing import Any

from scripts.benchdata import LARGE, SEEK_LOAD_LUA
from scripts.benchtools import CHUNK, MIB, TOKEN, Server, WrkResult, curl_command, running, wrk

# -- wrk and curl ------------------------------------------------------------------------------


def median_wrk(
    url: str, connections: int, seconds: float, repeats: int, script: str | None = None
) -> WrkResult:
    """Of ``repeats`` wrk runs after a warm-up, the one of median requests/s (its latencies
    come from that same run)."""
    wrk(url, connections, 2, script)  # warm up
    runs = [wrk(url, connections, seconds, script) for _ in range(repeats)]
    runs.sort(key=lambda r: r.requests_per_s)
    return runs[len(runs) // 2]


def downloads(url: str, clients: int, seconds: float) -> float:
    """MiB/s of ``clients`` curl processes each downloading ``url`` whole, over and over (one
    keep-alive connection each) for about ``seconds``: total bytes / wall time until the last
    one is done. Complete downloads only, as the raw driver's ceiling is measured; wrk would
    count a window of a run in which 8 clients of a slow server finish no download at all."""

    def run(repeats: int) -> tuple[int, float]:
        command = curl_command(url, repeats)
        start = time.perf_counter()
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(clients)
        ]
        total = 0
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"curl {url} exited with {proc.returncode}")
            total += sum(int(n) for n in out.split())
        return total, time.perf_counter() - start

    _, one = run(1)  # warm up, and how long one download takes alone
    repeats = max(1, round(seconds / max(one * clients, 1e-3)))
    total, elapsed = run(repeats)
    return total / MIB / elapsed


def median_downloads(url: str, clients: int, seconds: float, repeats: int) -> float:
    return statistics.median(downloads(url, clients, seconds) for _ in range(repeats))


def load_test(server: Server, connections: int, seconds: float) -> tuple[WrkResult, float]:
    """wrk with ``connections`` seeking clients while the server's RSS is sampled."""
    baseline = server.rss()
    peak = baseline
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, server.rss())
            await asyncio.sleep(0.25)

    async def run() -> WrkResult:
        nonlocal done
        sampler = asyncio.create_task(sample())
        url = server.url("/fs/media/0.bin")
        result = await asyncio.to_thread(wrk, url, connections, seconds, SEEK_LOAD_LUA)
        done = True
        await sampler
        return result

    result = asyncio.run(run())
    return result, (peak - baseline) / MIB


# -- in-process measurements ------------------------------------------------------------------


def ttfb(server: Server, path: str, offset: int, repeats: int = 15, warmups: int = 2) -> float:
    """Median time to the first body byte of a 1 MiB range at ``offset``, in ms (keep-alive),
    after ``warmups`` requests for the same range."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    times = []
    for i in range(repeats + warmups):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Range": f"bytes={offset}-{offset + MIB - 1}"})
        response = conn.getresponse()
        response.read(1)
        elapsed = time.perf_counter() - start
        response.read()
        if i >= warmups:
            times.append(elapsed * 1000)
    conn.close()
    return statistics.median(times)


def warm_up(server: Server, paths: list[str]) -> None:
    """Requests each path once, as a server in service has been asked for its files before."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    for path in paths:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{server.name}: {path} answered {response.status}")
    conn.close()


def cold_ttfb(server: Server, path: str, offset: int, repeats: int = 3) -> float:
    """Median TTFB of the first request a freshly started server gets: nothing is cached."""
    times = []
    for _ in range(repeats):
        with running(server):
            times.append(ttfb(server, path, offset, repeats=1, warmups=0))
    return statistics.median(times)


async def raw_seek(uri: str, db_name: str) -> dict[str, float]:
    """The database's own latency for the first chunk of a 1 MiB range at 0 and at 90% of the
    large file, ms: by a ``files_id``/``n`` range cursor (as any GridFS reader must when it
    knows no chunk ids) and by a chunk's ``_id`` (as a reader that saw the chunk before can)."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[db_name]
    doc = await db["fs.files"].find_one({"filename": "large.bin"})
    assert doc is not None
    figures = {}
    for label, offset in (("0", 0), ("90", int(LARGE * 0.9))):
        first = offset // CHUNK
        times = []
        for _ in range(3):
            start = time.perf_counter()
            cursor = db["fs.chunks"].find(
                {"files_id": doc["_id"], "n": {"$gte": first, "$lte": first + 4}},
                sort=[("n", 1)],
                batch_size=2,
            )
            await cursor.next()
            times.append((time.perf_counter() - start) * 1000)
            await cursor.close()
        figures[f"range{label}"] = statistics.median(times)
        chunk = await db["fs.chunks"].find_one({"files_id": doc["_id"], "n": first}, {"_id": 1})
        assert chunk is not None
        times = []
        for _ in range(15):
            start = time.perf_counter()
            await db["fs.chunks"].find_one({"_id": chunk["_id"]})
            times.append((time.perf_counter() - start) * 1000)
        figures[f"id{label}"] = statistics.median(times)
    await client.close()
    return figures


async def slow_readers(server: Server, clients: int, seconds: float) -> int:
    """Peak RSS growth (bytes) while ``clients`` read the large file at ~160 KB/s each."""
    baseline = server.rss()
    peak = baseline
    stop = time.monotonic() + seconds

    async def reader() -> None:
        reader_, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /fs/medium.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            while time.monotonic() < stop:
                if not await reader_.read(16 * 1024):
                    break
                await asyncio.sleep(0.1)
        finally:
            writer.close()

    async def sampler() -> None:
        nonlocal peak
        while time.monotonic() < stop:
            peak = max(peak, server.rss())
            await asyncio.sleep(0.25)

    await asyncio.gather(sampler(), *(reader() for _ in range(clients)), return_exceptions=True)
    return peak - baseline


async def raw_read(uri: str, db_name: str, concurrency: int, overlapped: bool = False) -> float:
    """MiB/s reading the large file's chunks with the async driver, no HTTP: a plain cursor
    loop, or (``overlapped``) one task iterating the cursor into a one-item queue while another
    takes from it, so the next reply is awaited while the last one is consumed. The faster of
    the two is the ceiling for any GridFS server on this database."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    db = client[db_name]
    doc = await db["fs.files"].find_one({"filename": "large.bin"})
    assert doc is not None

    async def one() -> int:
        total = 0
        cursor = db["fs.chunks"].find(
            {"files_id": doc["_id"]}, {"data": 1, "_id": 0}, sort=[("n", 1)], batch_size=4
        )
        if not overlapped:
            async for chunk in cursor:
                total += len(chunk["data"])
            return total
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(1)

        async def produce() -> None:
            async for chunk in cursor:
                await queue.put(chunk["data"])
            await queue.put(None)

        producer = asyncio.ensure_future(produce())
        while (data := await queue.get()) is not None:
            total += len(data)
        await producer
        return total

    await one()  # warm up
    start = time.perf_counter()
    totals = await asyncio.gather(*(one() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return sum(totals) / MIB / elapsed


async def raw_upload(uri: str, db_name: str, data: bytes) -> float:
    from gridfs import AsyncGridFSBucket
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    bucket = AsyncGridFSBucket(client[db_name], chunk_size_bytes=CHUNK)
    start = time.perf_counter()
    await bucket.upload_from_stream("raw-upload.bin", data)
    elapsed = time.perf_counter() - start
    await client.close()
    return len(data) / MIB / elapsed


def http_upload(server: Server, data: bytes) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    start = time.perf_counter()
    conn.request("PUT", "/fs/upload.bin", body=data, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    assert response.status == 201, response.status
    return len(data) / MIB / elapsed
