"""gridserve against its peers, on one machine, one database and the same files, in one run.

Run through ``scripts/bench`` (which installs wrk, nginx and the test database). Prints a table
of absolute figures and ratios; ``--write`` also rewrites BENCHMARKS.rst.

Contestants: gridserve on GridFS and on local disk; motor's GridFSHandler (Tornado) and
AIOHTTPGridFS (aiohttp) on the same database; a raw PyMongo async read of the same chunks
(the ceiling for any GridFS server on this database); Tornado's StaticFileHandler and nginx
serving the same bytes from disk. Load comes from wrk (C, not the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchdata import (  # noqa: E402
    LARGE,
    MEDIA,
    MEDIA_COUNT,
    MEDIUM,
    SMALL,
    SMALL_COUNT,
    SMALL_FILES_LUA,
    seed,
    servers,
)
from scripts.benchmeasures import (  # noqa: E402
    cold_ttfb,
    http_upload,
    load_test,
    median_downloads,
    median_wrk,
    raw_read,
    raw_seek,
    raw_upload,
    slow_readers,
    ttfb,
    warm_up,
)
from scripts.benchtools import MIB, Server, checked, running  # noqa: E402
from tests.dbserver import FerretDB, ferretdb_binary  # noqa: E402

# -- the run ----------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.1f}{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5, help="length of each wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="wrk runs per figure (median)")
    parser.add_argument("--load-connections", type=int, default=1000)
    parser.add_argument("--gridfs-load-connections", type=int, default=100)
    parser.add_argument("--load-seconds", type=float, default=20)
    parser.add_argument("--write", action="store_true", help="rewrite BENCHMARKS.rst")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="measure only these contestants (quoted names)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gridserve-bench-"))
    workdir.chmod(0o755)  # nginx's workers run unprivileged: they must read the files
    database = FerretDB(ferretdb_binary())
    database.start()
    prefix = "bench"
    disk = workdir / "files"
    lines: list[str] = []

    def report(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    def contestant(name: str, dataset: str) -> Server:
        return servers(database.uri, f"{prefix}_{dataset}", disk, workdir)[name]

    gridfs_servers = ["gridserve (GridFS)", "motor GridFSHandler", "motor AIOHTTPGridFS"]
    disk_servers = ["gridserve (local)", "Tornado StaticFileHandler", "nginx"]
    results: dict[str, dict[str, Any]] = {name: {} for name in [*gridfs_servers, *disk_servers]}
    try:
        print("seeding the database and the disk ...", flush=True)
        seed(database.uri, prefix, disk)
        raw = {
            (clients, overlapped): statistics.median(
                asyncio.run(raw_read(database.uri, f"{prefix}_large", clients, overlapped))
                for _ in range(args.repeats)
            )
            for clients in (1, 8)
            for overlapped in (False, True)
        }
        ceiling_1 = max(raw[1, False], raw[1, True])
        ceiling_8 = max(raw[8, False], raw[8, True])
        raw_seeks = asyncio.run(raw_seek(database.uri, f"{prefix}_large"))

        for name in [n for n in results if not args.only or n in args.only]:
            print(f"measuring {name} ...", flush=True)
            r = results[name]
            if name == "gridserve (GridFS)":
                server = contestant(name, "large")
                r["cold0"] = cold_ttfb(server, "/fs/large.bin", 0)
                r["cold90"] = cold_ttfb(server, "/fs/large.bin", int(LARGE * 0.9))
            with running(contestant(name, "large")) as server:
                if server.supports_ranges:
                    r["ttfb0"] = ttfb(server, "/fs/large.bin", 0)
                    r["ttfb90"] = ttfb(server, "/fs/large.bin", int(LARGE * 0.9))
                for conc in (1, 8):
                    r[f"full{conc}"] = median_downloads(
                        server.url("/fs/large.bin"), conc, args.seconds, args.repeats
                    )
            with running(contestant(name, "medium")) as server:
                r["rss200"] = asyncio.run(slow_readers(server, 200, 8)) / MIB
            with running(contestant(name, "small")) as server:
                warm_up(server, [f"/fs/small/{i}.bin" for i in range(SMALL_COUNT)])
                small = checked(
                    name,
                    median_wrk(
                        server.url("/fs/small/0.bin"),
                        32,
                        args.seconds,
                        args.repeats,
                        SMALL_FILES_LUA,
                    ),
                )
                r["small_rps"], r["small_p50"], r["small_p99"] = (
                    small.requests_per_s,
                    small.p50_ms,
                    small.p99_ms,
                )

        gridserve_upload = raw_up = None
        loads = []
        if not args.only:
            upload = os.urandom(LARGE)
            with running(contestant("gridserve (GridFS)", "upload")) as server:
                gridserve_upload = statistics.median(http_upload(server, upload) for _ in range(3))
            raw_up = statistics.median(
                asyncio.run(raw_upload(database.uri, f"{prefix}_upload_raw", upload))
                for _ in range(3)
            )
            print("load tests ...", flush=True)
            for name, connections in (
                ("gridserve (local)", args.load_connections),
                ("gridserve (GridFS)", args.gridfs_load_connections),
            ):
                with running(contestant(name, "media")) as server:
                    loads.append(
                        (name, connections, load_test(server, connections, args.load_seconds))
                    )
    finally:
        database.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    measured = {name: r for name, r in results.items() if r}
    report("Figures (medians); ratios are against baselines measured in the same run.")
    report()
    header = (
        f"{'server':<26} {'1 client':>10} {'8 clients':>10} {'small req/s':>12} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'TTFB@0':>8} {'TTFB@90%':>9} {'RSS@200':>8}"
    )
    report(header)
    units = ["", "MiB/s", "MiB/s", "(32 conc.)", "", "", "ms", "ms", "MiB"]
    widths = [26, 10, 10, 12, 8, 8, 8, 9, 8]
    report(
        " ".join(
            u.rjust(w) if i else u.ljust(w)
            for i, (u, w) in enumerate(zip(units, widths, strict=True))
        )
    )
    report(f"{'raw driver, plain loop':<26} {raw[1, False]:>10.1f} {raw[8, False]:>10.1f}")
    report(f"{'raw driver, overlapped':<26} {raw[1, True]:>10.1f} {raw[8, True]:>10.1f}")
    for name, r in measured.items():
        report(
            f"{name:<26} {r['full1']:>10.1f} {r['full8']:>10.1f} {r['small_rps']:>12.0f} "
            f"{r['small_p50']:>8.1f} {r['small_p99']:>8.1f} "
            f"{fmt(r.get('ttfb0')):>8} {fmt(r.get('ttfb90')):>9} {r['rss200']:>8.1f}"
        )
    report()
    report("Ratios:")

    def ratio(a: str, key_a: str, b: str, key_b: str | None = None) -> str:
        try:
            return f"{measured[a][key_a] / measured[b][key_b or key_a]:.2f}"
        except (KeyError, ZeroDivisionError):
            return "n/a"

    g = measured.get("gridserve (GridFS)", {})
    peers = [measured[n] for n in ("motor GridFSHandler", "motor AIOHTTPGridFS") if n in measured]
    if g:
        best_full = max((p["full1"] for p in peers), default=0.0)
        best_small = max((p["small_rps"] for p in peers), default=0.0)
        report(
            f"- full download, 1 client: gridserve/ceiling {g['full1'] / ceiling_1:.2f}, "
            f"gridserve/best GridFS peer {g['full1'] / best_full if best_full else 0:.2f}"
        )
        best_full8 = max((p["full8"] for p in peers), default=0.0)
        report(
            f"- full download, 8 clients: gridserve/ceiling {g['full8'] / ceiling_8:.2f}, "
            f"gridserve/best GridFS peer {g['full8'] / best_full8 if best_full8 else 0:.2f}"
        )
        report(
            f"- small files: gridserve/motor GridFSHandler "
            f"{ratio('gridserve (GridFS)', 'small_rps', 'motor GridFSHandler')}, "
            f"gridserve/best GridFS peer {g['small_rps'] / best_small if best_small else 0:.2f}"
        )
        if "cold0" in g:
            report(
                f"- seek, first request to a fresh server (chunk ids unknown: one files_id/n "
                f"range query): TTFB at 0 {g['cold0']:.0f} ms, at 90% {g['cold90']:.0f} ms, "
                f"ratio {g['cold90'] / g['cold0']:.2f}; the database's own first batch of "
                f"that query: {raw_seeks['range0']:.0f} and {raw_seeks['range90']:.0f} ms, "
                f"ratio {raw_seeks['range90'] / raw_seeks['range0']:.2f}"
            )
        report(
            f"- seek, a range read again (chunks fetched by _id): TTFB at 0 "
            f"{fmt(g.get('ttfb0'))} ms, at 90% {fmt(g.get('ttfb90'))} ms, ratio "
            f"{ratio('gridserve (GridFS)', 'ttfb90', 'gridserve (GridFS)', 'ttfb0')}; the "
            f"database's own find by _id of that chunk: {raw_seeks['id0']:.1f} and "
            f"{raw_seeks['id90']:.1f} ms, ratio {raw_seeks['id90'] / raw_seeks['id0']:.2f}"
        )
    if "gridserve (local)" in measured:
        report(
            f"- seek on local disk: TTFB at 90% / TTFB at 0: "
            f"{ratio('gridserve (local)', 'ttfb90', 'gridserve (local)', 'ttfb0')}"
        )
        report(
            f"- local disk, 1 client: gridserve/Tornado static "
            f"{ratio('gridserve (local)', 'full1', 'Tornado StaticFileHandler')}, "
            f"gridserve/nginx {ratio('gridserve (local)', 'full1', 'nginx')}; small files: "
            f"gridserve/Tornado static "
            f"{ratio('gridserve (local)', 'small_rps', 'Tornado StaticFileHandler')}"
        )
    if gridserve_upload and raw_up:
        report(
            f"- upload {LARGE // MIB} MiB: gridserve PUT {gridserve_upload:.1f} MiB/s, raw driver "
            f"{raw_up:.1f} MiB/s, ratio {gridserve_upload / raw_up:.2f}"
        )
    report()
    for name, connections, (result, growth) in loads:
        report(
            f"Load, {name}: {connections} keep-alive connections, {args.load_seconds:.0f} s of "
            f"random 16-256 KiB ranges over {MEDIA_COUNT} files of {MEDIA // MIB} MiB: "
            f"{result.requests} requests, {result.errors} socket errors, "
            f"{result.non_2xx} non-2xx, {result.requests_per_s:.0f} req/s, "
            f"p99 {result.p99_ms:.0f} ms, peak RSS growth {growth:.1f} MiB"
        )

    if args.write:
        write_benchmarks(lines, args)
    return 0


def write_benchmarks(lines: list[str], args: argparse.Namespace) -> None:
    command = f"scripts/bench --seconds {args.seconds:g} --repeats {args.repeats} --write"
    intro = f"""
        Produced by ``{command}`` on {time.strftime("%Y-%m-%d")}, on one shared 2-core
        machine: every server, the load generators and the database compete for the same two
        cores. The database is the test database (FerretDB v1 on SQLite): its absolute speed is
        not MongoDB's, and only the ratios between contestants measured in the same run mean
        anything.

        Contestants: gridserve on GridFS and on local disk; motor's ``GridFSHandler``
        (Tornado) and ``AIOHTTPGridFS`` (aiohttp) on the same database (no Range support, so
        no TTFB figures); a raw PyMongo async read of the same chunks, no HTTP, as a plain
        cursor loop and overlapped (a task iterating the cursor one chunk ahead); the faster
        of the two is the ceiling for any GridFS server on this database; Tornado's
        ``StaticFileHandler`` and nginx serving the same bytes from disk.

        Files: one {LARGE // MIB} MiB file (255 KiB chunks), {SMALL_COUNT} files of
        {SMALL // 1024} KiB, one of {MEDIUM // MIB} MiB; one database per data set. Full
        downloads: 1 or 8 curl processes downloading the whole file again and again for about
        {args.seconds:g} s, total bytes over wall time. Small files: every file requested once,
        then wrk with 32 connections on random files. TTFB: a 1 MiB range, median of 15
        requests after 2 of the same range; "first request": the first request a freshly
        started server gets, median of 3 starts. Each figure is the median of {args.repeats}
        runs after a warm-up. RSS@200: growth of the server's resident memory while 200
        clients read the {MEDIUM // MIB} MiB file at about 160 KB/s each.
        """
    paragraphs = [" ".join(p.split()) for p in textwrap.dedent(intro).strip().split("\n\n")]
    text = "==========\nBenchmarks\n==========\n\n"
    text += "\n\n".join(textwrap.fill(p, 96) for p in paragraphs) + "\n\n::\n\n"
    body = "\n".join("    " + line if line else "" for line in lines)
    target = ROOT / "BENCHMARKS.rst"
    # The hand-written reading of the figures stays (update it by hand when they change).
    previous = target.read_text() if target.exists() else ""
    kept = previous[previous.find(READING_HEADING) :] if READING_HEADING in previous else ""
    target.write_text(text + body + "\n" + ("\n\n" + kept if kept else ""))


READING_HEADING = "Reading the figures\n==================="


if __name__ == "__main__":
    sys.exit(main())
