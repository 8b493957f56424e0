"""Small-file hand-off below the handler: what a hand-off decided in Python costs at best.

``scripts/bench --handoff-floor`` (``--seconds``, ``--repeats``, ``--only raw,bare``). One
4 KiB file in a local directory; every server runs at once and each round measures each in
turn with wrk (32 connections), so a round's servers share the (shared) machine's load of
that moment. For each: requests/s, and the CPU time (``/proc`` user + system) per request
answered of its Python process, of nginx's worker and of wrk. Medians over the rounds;
ratios to ``direct`` are the median of each round's ratio (CPU: direct's over this one's).

- ``direct``: gridserve serve (Python sends the bytes),
- ``handoff``: nginx (``deploy/nginx.conf``) in front of gridserve ``--accel-redirect``,
- ``bare``: nginx in front of a bare ``tornado.web.RequestHandler`` answering
  ``X-Accel-Redirect`` and nothing else (the floor of ``scripts/bench --handoff``),
- ``raw``: nginx in front of a ``tornado.httputil.HTTPServerConnectionDelegate`` on
  ``tornado.httpserver.HTTPServer`` answering ``X-Accel-Redirect`` (no Application, no
  RequestHandler) with the bare handler's headers,
- ``raw+decide``: ``raw`` plus gridserve's decision made with its own pieces (the local
  storage's lookup, the ACL, the validators, the headers, the metrics and the in-flight
  tracking) for the one request it is sent: a lower bound of any hand-off path that skips
  the handler (it has no access log, no CORS, nothing for the requests it would decline),
- ``raw+decide-nolookup``: ``raw+decide`` on a lookup made once at start, which prices the
  lookup.

The servers (but ``direct`` and ``handoff``) run this file with ``--serve KIND PORT DIR``; they
end on SIGTERM by returning, so ``python -m cProfile -o OUT scripts/bench_handoff_floor.py
--serve raw PORT DIR`` writes its figures. See BENCHMARKS.rst, "Below the handler".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_handoff import SMALL, bare_application, behind_nginx, gridserve  # noqa: E402
from scripts.benchtools import (  # noqa: E402
    PPID,
    PY,
    TICKS,
    Server,
    checked,
    live_processes,
    running,
    stat_fields,
    wrk,
)
from tests.dbserver import free_port  # noqa: E402
from tests.nginxserver import Nginx  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = stat_fields(Path(f"/proc/{pid}/stat"))
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu_seconds(parent: int) -> float:
    """User + system CPU seconds so far of the children of ``parent`` (nginx's workers)."""
    children = live_processes(PPID, parent).values()
    return sum(((int(f[11]) + int(f[12])) / TICKS for f in children), 0.0)


def wrk_cpu_seconds() -> float:
    """User + system CPU seconds of the ended children of this process (wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def floor_server(kind: str, disk: Path) -> Server:
    port = free_port()
    return Server(kind, [PY, __file__, "--serve", kind, str(port), str(disk)], port)


# -- the floor servers (run in their own process) -------------------------------------------


def raw_delegate(decide: bool, disk: Path, lookup: bool = True) -> Any:
    """The raw server's connection delegate (with the decision when ``decide``; without the
    storage's lookup, on a file looked up once at start, unless ``lookup``)."""
    from urllib.parse import unquote

    from tornado import httputil

    from gridserve import handoff, ranges, validators
    from gridserve.acl import AllowReads, has_credentials, is_allowed
    from gridserve.handlers.stream import _http_date
    from gridserve.mediatypes import choose_content_type, content_disposition, is_passive
    from gridserve.metrics import Metrics
    from gridserve.storage.local import LocalStorage
    from gridserve.tracking import RequestTracker

    server_header = "TornadoServer/" + __import__("tornado").version
    ok = httputil.ResponseStartLine("HTTP/1.1", 200, "OK")
    missing = httputil.ResponseStartLine("HTTP/1.1", 404, "Not Found")
    storage = LocalStorage(disk)
    acl = AllowReads()
    metrics = Metrics()
    tracker = RequestTracker()
    known = {"small.bin": storage._resolve_sync("small.bin")}

    class Message(httputil.HTTPMessageDelegate):
        def __init__(self, connection: Any) -> None:
            self.connection = connection
            self.headers: Any = None
            self.out: httputil.HTTPHeaders | None = None

        def headers_received(self, start_line: Any, headers: Any) -> Any:
            self.start_line = start_line
            self.headers = headers
            if decide:
                return self.decide()
            return None

        async def decide(self) -> None:
            self.out = None
            try:
                await self.decide_or_fail()
            except Exception:
                self.out = None

        async def decide_or_fail(self) -> None:
            request = httputil.HTTPServerRequest(
                connection=self.connection, start_line=self.start_line, headers=self.headers
            )
            self.request = request
            tracker.started(self)
            metrics.requests_in_flight.inc()
            key = unquote(request.path[len("/fs/") :])
            with metrics.timed("resolve"):
                info = await storage.resolve(key, None) if lookup else known[key]
            assert await is_allowed(acl, request, "read", info)
            etag = info.etag
            modified = info.last_modified
            out = httputil.HTTPHeaders()
            out["Accept-Ranges"] = "bytes"
            out["ETag"] = str(etag)
            out["Last-Modified"] = _http_date(modified)
            content_type = choose_content_type(info.content_type, info.filename)
            if has_credentials(request) or "exp" in request.query_arguments:
                out["Cache-Control"] = "private"
            decision = validators.evaluate_preconditions(
                request.method or "GET", request.headers, etag, modified
            )
            assert decision is validators.Precondition.PROCEED
            out["Content-Type"] = content_type
            out["X-Content-Type-Options"] = "nosniff"
            out["Content-Disposition"] = content_disposition(info.filename)
            if not is_passive(content_type):
                out["Content-Security-Policy"] = "sandbox"
            specs = ranges.parse_range_header(request.headers.get("Range"))
            plan = ranges.resolve_ranges(specs, info.length, max_ranges=16)
            assert not handoff.wants_direct(request.headers, 16)
            assert len(plan.ranges) <= 1
            target = handoff.accel_path(storage, info, "/_files/")
            assert target is not None
            out["X-Accel-Redirect"] = target
            self.out = out

        def finish(self) -> None:
            status = ok
            if decide:
                out = self.out
                if out is None:
                    status = missing
                    out = httputil.HTTPHeaders()
            else:
                out = httputil.HTTPHeaders()
                out["X-Accel-Redirect"] = "/_files/" + self.start_line.path[len("/fs/") :]
                out["Content-Type"] = "text/html; charset=UTF-8"
            out["Server"] = server_header
            out["Date"] = httputil.format_timestamp(time.time())
            out["Content-Length"] = "0"
            self.connection.write_headers(status, out)
            self.connection.finish()
            if decide:
                metrics.requests_in_flight.dec()
                metrics.count_request(self.start_line.method, 200)
                tracker.finished(self)

    class Delegate(httputil.HTTPServerConnectionDelegate):
        def start_request(self, server_conn: object, request_conn: Any) -> Any:
            return Message(request_conn)

    return Delegate()


def serve(kind: str, port: int, disk: Path) -> None:
    import asyncio

    import tornado.httpserver

    from gridserve import loops

    async def main() -> None:
        factories: dict[str, Callable[[], Any]] = {
            "bare": bare_application,
            "raw": lambda: raw_delegate(False, disk),
            "raw+decide": lambda: raw_delegate(True, disk),
            "raw+decide-nolookup": lambda: raw_delegate(True, disk, lookup=False),
        }
        server = tornado.httpserver.HTTPServer(factories[kind]())
        server.listen(port, "127.0.0.1")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()  # returns, so that ``python -m cProfile`` can write its figures

    loops.run(main(), loops.default_loop())  # the loop gridserve serve runs on


# -- the measurement --------------------------------------------------------------------------


@dataclass
class Contestant:
    url: str
    python_pid: int  # the server's Python process
    nginx_pid: int | None  # nginx's master in front of it, if any (its workers are measured)


def measure(
    contestants: dict[str, Contestant], args: argparse.Namespace
) -> dict[str, list[tuple[float, ...]]]:
    """Rounds of wrk on each contestant in turn; per round and contestant: req/s, then CPU
    microseconds per request of the Python process, of nginx's worker, of wrk, and their sum."""
    results: dict[str, list[tuple[float, ...]]] = {name: [] for name in contestants}
    for contestant in contestants.values():
        wrk(contestant.url + "/fs/small.bin", args.connections, 2)  # warm up
    for number in range(args.repeats):
        for name, contestant in contestants.items():
            nginx = contestant.nginx_pid
            before = (
                cpu_seconds(contestant.python_pid),
                children_cpu_seconds(nginx) if nginx else 0.0,
                wrk_cpu_seconds(),
            )
            url = contestant.url + "/fs/small.bin"
            result = checked(name, wrk(url, args.connections, args.seconds))
            after = (
                cpu_seconds(contestant.python_pid),
                children_cpu_seconds(nginx) if nginx else 0.0,
                wrk_cpu_seconds(),
            )
            used = [(a - b) / result.requests * 1e6 for a, b in zip(after, before, strict=True)]
            results[name].append((result.requests_per_s, *used, sum(used)))
        print(
            f"round {number + 1}: "
            + ", ".join(f"{n} {r[-1][0]:.0f}/s {r[-1][1]:.0f}us" for n, r in results.items()),
            f"(load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", help="comma-separated contestants besides direct (default: all)")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), Path(args.serve[2]))
        return 0
    disk = Path(tempfile.mkdtemp(prefix="gridserve-bench-floor-"))
    disk.chmod(0o755)  # nginx's workers run as nobody
    (disk / "small.bin").write_bytes(b"s" * SMALL)
    (disk / "small.bin").chmod(0o644)
    try:
        with contextlib.ExitStack() as stack:
            direct = stack.enter_context(running(gridserve(disk)))
            assert direct.process is not None
            contestants = {"direct": Contestant(direct.url(""), direct.process.pid, None)}
            behind: dict[str, Server] = {  # the Python servers nginx is put in front of
                "handoff": gridserve(disk, "--accel-redirect", "/_files/"),
                "bare": floor_server("bare", disk),
                "raw": floor_server("raw", disk),
                "raw+decide": floor_server("raw+decide", disk),
                "raw+decide-nolookup": floor_server("raw+decide-nolookup", disk),
            }
            for name, server in behind.items():
                if args.only and name not in args.only.split(","):
                    continue
                stack.enter_context(running(server))
                via = stack.enter_context(Nginx(behind_nginx(server.port, disk)))
                assert server.process is not None and via.process is not None
                contestants[name] = Contestant(via.url(""), server.process.pid, via.process.pid)
            results = measure(contestants, args)
    finally:
        shutil.rmtree(disk, ignore_errors=True)
    print(f"medians of {args.repeats} round(s); load average {os.getloadavg()}")
    print("CPU microseconds per request of each process (us/req); ratios to direct per round")
    print(
        f"{'server':<20} {'req/s':>7} {'python':>7} {'nginx':>6} {'wrk':>5} {'total':>6}"
        f" {'req/s ratio':>11} {'python ratio':>12} {'total ratio':>11}"
    )
    base = results["direct"]
    for name, rows in results.items():

        def med(column: int, rows: list[tuple[float, ...]] = rows) -> float:
            return statistics.median(row[column] for row in rows)

        def over(column: int, rows: list[tuple[float, ...]] = rows) -> float:
            # req/s: this over direct; CPU: direct over this (how many times cheaper)
            pairs = zip(rows, base, strict=True)
            if column == 0:
                return statistics.median(a[0] / b[0] for a, b in pairs)
            return statistics.median(b[column] / a[column] for a, b in pairs)

        print(
            f"{name:<20} {med(0):>7.0f} {med(1):>7.0f} {med(2):>6.0f} {med(3):>5.0f} {med(4):>6.0f}"
            f" {over(0):>11.2f} {over(1):>12.2f} {over(4):>11.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
