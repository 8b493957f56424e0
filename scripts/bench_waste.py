"""What abandoned responses cost the storage: bytes read from it per byte a client consumed.

A scenario of ``scripts/bench`` (``scripts/bench --waste``; or run this module with the
virtualenv's Python and ``GRIDSERVE_FERRETDB`` set). gridserve serves a 15 MiB MP4 whose
``moov`` is at the end, from GridFS on the test database, over an emulated WAN link (``--rtt``
100 ms, ``--rate`` 4 MB/s) made by a throttling TCP proxy on a dedicated loopback port (no
``tc netem``: loopback is shared with others, and this machine's kernel has no netem): the
proxy takes bytes from the server no faster than the rate and delivers each one half an RTT
later, holding at most rate x delay on the "wire". Players that seek:

``ffprobe``      reads the header, jumps to the moov at the end, probes (3 requests, 2 abandoned)
``ffmpeg -ss``   opens the file, seeks to 20 s and 45 s, decodes 1 s at each

For each, ``gridserve_storage_read_bytes_total`` (what the server took from the storage) is
divided by the bytes delivered to the client; with the send buffer at the kernel's default and
at ``--sizes``. Throughput: a full download (curl) at each size over the link ("link MB/s");
since the proxy terminates TCP, its figure cannot show what a small buffer costs on a real
100 ms path, so "TCP cap" gives that: a connection carries at most what its send queue holds
per round trip, and :func:`send_queue_capacity` measures what this kernel queues for each
``SO_SNDBUF`` at a WAN's MSS. The default is the smallest size whose cap is >= 95% of the link.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridserve.handlers.stream import DEFAULT_SEND_BUFFER  # noqa: E402
from gridserve.metrics import Metrics  # noqa: E402
from gridserve.storage.base import Storage  # noqa: E402
from gridserve.storage.cache import CachedStorage  # noqa: E402
from gridserve.storage.gridfs import GridFSStorage  # noqa: E402
from tests.dbserver import FerretDB, ferretdb_binary  # noqa: E402
from tests.livehttp import LiveServer  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
SEGMENT = 16 * KIB
PROXY_SOCKET_BUFFER = 32 * KIB  # the proxy's own sockets: small, so it adds little buffering


class ThrottlingProxy:
    """A TCP proxy on a loopback port of its own emulating a link of ``rate`` bytes/s and
    ``rtt`` seconds; ``delivered`` counts bytes the client's socket accepted."""

    def __init__(self, upstream_port: int, rtt: float, rate: float) -> None:
        self.upstream_port = upstream_port
        self.delay = rtt / 2
        self.rate = rate
        self.delivered = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> ThrottlingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        await asyncio.gather(
            *(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True
        )

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        upstream = socket.socket()
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PROXY_SOCKET_BUFFER)
        upstream.setblocking(False)
        await asyncio.get_running_loop().sock_connect(upstream, ("127.0.0.1", self.upstream_port))
        server_r, server_w = await asyncio.open_connection(sock=upstream, limit=SEGMENT)
        sock = client_w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PROXY_SOCKET_BUFFER)
        client_w.transport.set_write_buffer_limits(high=SEGMENT)
        await asyncio.gather(
            self._link(client_r, server_w, count=False),
            self._link(server_r, client_w, count=True),
            return_exceptions=True,
        )

    async def _link(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool
    ) -> None:
        """Takes bytes at ``rate``, delivers each ``delay`` later; at most rate x delay (plus a
        segment) on the wire, so a client that stops reading stops the sender."""
        loop = asyncio.get_running_loop()
        wire: collections.deque[tuple[float, bytes]] = collections.deque()
        on_wire = 0
        capacity = self.rate * self.delay + SEGMENT
        room = asyncio.Event()
        room.set()
        arrived = asyncio.Event()
        done = False

        async def deliver() -> None:
            nonlocal on_wire
            try:
                while wire or not done:
                    if not wire:
                        arrived.clear()
                        await arrived.wait()
                        continue
                    due, data = wire[0]
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    writer.write(data)
                    await writer.drain()
                    wire.popleft()
                    on_wire -= len(data)
                    room.set()
                    if count:
                        self.delivered += len(data)
            except (ConnectionError, OSError):
                pass
            finally:
                room.set()  # the sender must not wait for a wire nobody empties
                writer.close()

        delivery = asyncio.ensure_future(deliver())
        free_at = loop.time()
        try:
            while not delivery.done():
                while on_wire >= capacity and not delivery.done():
                    room.clear()
                    await room.wait()
                data = await reader.read(SEGMENT)
                if not data:
                    break
                start = max(loop.time(), free_at)
                free_at = start + len(data) / self.rate
                await asyncio.sleep(max(0.0, free_at - loop.time()))
                wire.append((free_at + self.delay, data))
                on_wire += len(data)
                arrived.set()
        except (ConnectionError, OSError):
            pass
        finally:
            done = True
            arrived.set()
            if not delivery.done():
                if reader.at_eof():
                    await delivery
                else:
                    delivery.cancel()
            writer.close()


def send_queue_capacity(send_buffer: int | None, mss: int = 1448) -> int:
    """Payload bytes a TCP socket with ``SO_SNDBUF`` = ``send_buffer`` (None: the kernel's
    maximum, what autotuning may reach) queues before it blocks, at a WAN's MSS, as measured
    on this kernel (``TIOCOUTQ`` against a receiver that does not read). Unacknowledged bytes
    live in that queue, so a connection carries at most this much per round trip."""
    import fcntl
    import struct
    import termios

    listener = socket.socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    receiver = socket.socket()
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    receiver.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    receiver.connect(listener.getsockname())
    sender, _ = listener.accept()
    try:
        if send_buffer is None:
            tcp_wmem = Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()
            return int(tcp_wmem[2]) * 3 // 4  # autotuned: the maximum, less overhead
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sender.setblocking(False)
        block = bytes(64 * KIB)
        for _ in range(3):
            with contextlib.suppress(BlockingIOError):
                while True:
                    sender.send(block)
            time.sleep(0.05)
        queued: int = struct.unpack("i", fcntl.ioctl(sender, termios.TIOCOUTQ, bytes(4)))[0]
        return queued
    finally:
        for sock in (sender, receiver, listener):
            sock.close()


def make_mp4(path: Path, seconds: int = 60) -> None:
    """A ~15 MiB H.264 MP4 with its moov at the end (ffmpeg's default without faststart)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size=640x360:rate=25:duration={seconds}", "-c:v", "libx264", "-preset",
         "ultrafast", "-b:v", "2M", "-maxrate", "2M", "-bufsize", "1M", "-pix_fmt", "yuv420p",
         str(path)],
        check=True,
    )  # fmt: skip


def players(url: str) -> dict[str, list[list[str]]]:
    return {
        "ffprobe": [["ffprobe", "-v", "error", "-show_format", "-show_streams", url]],
        "ffmpeg -ss": [
            ["ffmpeg", "-v", "error", "-ss", str(at), "-i", url, "-t", "1", "-f", "null", "-"]
            for at in (20, 45)
        ],
    }


def counters(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.storage_read_bytes.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def streaming(metrics: Metrics) -> float:
    return sum(s.value for f in metrics.streams_in_flight.collect() for s in f.samples)


def settle(metrics: Metrics, timeout: float = 30) -> None:
    """Waits until no response is streaming (abandoned ones included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if streaming(metrics) == 0:
            time.sleep(0.3)
            if streaming(metrics) == 0:
                return
        time.sleep(0.05)


def measure(
    uri: str,
    db: str,
    send_buffer: int | None,
    rtt: float,
    rate: float,
    repeats: int,
    chunk_cache: int = 0,
) -> dict[str, Any]:
    """The players' ratios and the download throughput at ``send_buffer``; with
    ``chunk_cache`` bytes of chunk cache in front of the storage (what the daemon does by
    default), each figure from a fresh server, so that it is the first viewer's."""
    if chunk_cache and repeats > 1:
        rows = [measure(uri, db, send_buffer, rtt, rate, 1, chunk_cache) for _ in range(repeats)]
        return {key: median_of(row[key] for row in rows) for key in rows[0]}

    def storage() -> Storage:
        gridfs = GridFSStorage.from_uri(uri, default_database=db)
        return CachedStorage(gridfs, chunk_cache) if chunk_cache else gridfs

    metrics = Metrics()
    server = LiveServer(storage, send_buffer=send_buffer, metrics=metrics).start()
    try:
        with ThrottlingProxy(server.port, rtt, rate) as proxy:
            url = f"http://127.0.0.1:{proxy.port}/fs/movie.mp4"
            return run_players(url, metrics, repeats, proxy)
    finally:
        server.stop()


def median_of(values: Iterable[Any]) -> Any:
    """The median of figures: floats, or (ratio, read, delivered) tuples by their ratio."""
    ordered = sorted(values, key=lambda v: v[0] if isinstance(v, tuple) else v)
    return ordered[len(ordered) // 2]


def run_players(url: str, metrics: Metrics, repeats: int, link: ThrottlingProxy) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, commands in players(url).items():
        ratios = []
        for _ in range(repeats):
            read0, delivered0 = counters(metrics), link.delivered
            for command in commands:
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=120)
            settle(metrics)
            read, delivered = counters(metrics) - read0, link.delivered - delivered0
            ratios.append((read / max(delivered, 1), read, delivered))
        result[name] = sorted(ratios)[len(ratios) // 2]
    speeds = []
    for _ in range(repeats):
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", url],
            check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        speeds.append(float(out.stdout))
    result["throughput"] = statistics.median(speeds)
    return result


def seed(uri: str, db: str, movie: Path) -> int:
    import gridfs
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
    client.drop_database(db)
    data = movie.read_bytes()
    gridfs.GridFSBucket(client[db], chunk_size_bytes=255 * KIB).upload_from_stream(
        "movie.mp4", data, metadata={"contentType": "video/mp4"}
    )
    client.close()
    return len(data)


def label(size: int | None) -> str:
    return "kernel default" if size is None else f"{size // KIB} KiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rtt", type=float, default=0.1, help="round-trip time, seconds")
    parser.add_argument("--rate", type=float, default=4e6, help="link rate, bytes/s")
    parser.add_argument("--sizes", default="64,128,256,512", help="send buffers to try, KiB")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--uri", help="a MongoDB URI (default: start the test database)")
    parser.add_argument(
        "--chunk-cache",
        type=int,
        default=256,
        help="also measure the default send buffer with this many MiB of chunk cache, as the "
        "daemon runs by default (first viewer: a fresh cache per run; 0: skip)",
    )
    args = parser.parse_args()
    sizes: list[int | None] = [None, *(int(s) * KIB for s in args.sizes.split(","))]

    database = None
    uri = args.uri
    if uri is None:
        database = FerretDB(ferretdb_binary())
        database.start()
        uri = database.uri
    work = Path(tempfile.mkdtemp(prefix="gridserve-waste-"))
    try:
        movie = work / "movie.mp4"
        make_mp4(movie)
        length = seed(uri, "bench_waste", movie)
        print(
            f"{length / MIB:.1f} MiB MP4 (moov at the end), link {args.rtt * 1000:.0f} ms RTT "
            f"at {args.rate / 1e6:g} MB/s; storage bytes read / bytes delivered to the client",
            flush=True,
        )
        rows: dict[int | str | None, dict[str, Any]] = {
            size: measure(uri, "bench_waste", size, args.rtt, args.rate, args.repeats)
            for size in sizes
        }
        if args.chunk_cache:
            rows["cached"] = measure(
                uri,
                "bench_waste",
                DEFAULT_SEND_BUFFER,
                args.rtt,
                args.rate,
                args.repeats,
                chunk_cache=args.chunk_cache * MIB,
            )
        base = rows[None]["throughput"]
        bdp = args.rate * args.rtt
        print(
            f"{'send buffer':<16}{'ffprobe':>22}{'ffmpeg -ss':>22}{'link MB/s':>12}{'TCP cap':>18}"
        )
        for size, row in rows.items():
            cells = [
                f"{row[name][0]:.2f} ({row[name][1] / MIB:.1f}/{row[name][2] / MIB:.1f} MiB)"
                for name in ("ffprobe", "ffmpeg -ss")
            ]
            share = row["throughput"] / base
            buffer = DEFAULT_SEND_BUFFER if size == "cached" else size
            assert not isinstance(buffer, str)
            cap = min(1.0, send_queue_capacity(buffer) / bdp)
            name = f"{label(buffer)}+cache" if size == "cached" else label(buffer)
            print(
                f"{name:<16}{cells[0]:>22}{cells[1]:>22}"
                f"{row['throughput'] / 1e6:>6.2f} ({share:.0%})"
                f"{cap * args.rate / 1e6:>11.2f} ({cap:.0%})",
                flush=True,
            )
    finally:
        if database is not None:
            database.cleanup()
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
