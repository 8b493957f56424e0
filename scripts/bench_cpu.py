"""CPU per byte and per request, on a database fast enough to measure a server by.

``scripts/bench --cpu`` runs this on mongo-java-server (``scripts/build-bench-db``), and also on
``MONGODB_URI`` when it is set. On the test database (FerretDB/SQLite) every GridFS server
idles while the database works, so MB/s there is the database's figure; the CPU a server spends
per MiB and per request is its own on any database, and is what this reports, beside MB/s and
req/s, each with its floor measured in the same round:

- full download: the driver's own chunk read (a cursor over ``fs.chunks``) per MiB;
- small files: the driver's own lookup of the file document plus its one-chunk read, per file;
- uploads: PyMongo's ``upload_from_stream`` plus the MD5 and SHA-256 gridserve stores, per MiB.

Interleaved: every contestant's servers run at once for the whole run; ``--repeats`` rounds
each run every scenario (:mod:`scripts.cpubench`) for every contestant and for the driver
alone, one after the other, in an order that rotates from round to round. Absolute figures
are medians over the rounds; ratios are medians of the per-round ratios, so load that moves
on a shared machine moves both sides of a ratio. A server's CPU is the user + system time of
its process group (``/proc``) around its share of the round; the driver's floor is
``time.process_time`` in this process. Memory per stalled reader is measured once per
server, after the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchdata import seed  # noqa: E402
from scripts.benchtools import Server, running  # noqa: E402
from scripts.cpubench import contestants, summary  # noqa: E402
from scripts.cpubench.full import FULL, FULL_DOWNLOAD  # noqa: E402
from scripts.cpubench.probes import stalled_readers_rss  # noqa: E402
from scripts.cpubench.scenario import Scenario, Setup  # noqa: E402
from scripts.cpubench.small import SMALL_CONCURRENT, SMALL_SERIAL  # noqa: E402
from scripts.cpubench.upload import UPLOAD, UPLOADS  # noqa: E402
from tests.dbserver import FastDatabase, bench_database_launcher  # noqa: E402

SCENARIOS: tuple[Scenario, ...] = (FULL_DOWNLOAD, SMALL_SERIAL, SMALL_CONCURRENT, UPLOADS)


def measure(
    uri: str,
    label: str,
    rounds: int,
    seconds: float,
    baseline: Path | None = None,
    processes: int = 0,
) -> list[str]:
    """Runs the rounds on the database at ``uri``; the report's lines."""
    workdir = Path(tempfile.mkdtemp(prefix="gridserve-bench-cpu-"))
    disk = workdir / "files"
    setup = Setup(uri, "cpu", seconds, os.urandom(UPLOAD))
    names = contestants.names(baseline is not None, processes)
    scenarios = [s for s in SCENARIOS if any(s.applies(n) for n in names)]
    try:
        seed(uri, setup.prefix, disk, large=FULL)
        with ExitStack() as stack:
            started: dict[tuple[str, str], Server] = {}
            for name in names:
                for dataset in sorted({s.dataset for s in scenarios if s.applies(name)}):
                    server = contestants.contestant(
                        uri, setup.db(dataset), disk, workdir, name, baseline
                    )
                    started[name, dataset] = stack.enter_context(running(server))
            for scenario in scenarios:
                for name in names:
                    if scenario.warm_up is not None and scenario.applies(name):
                        scenario.warm_up(setup, started[name, scenario.dataset])
            measured = run_rounds(setup, scenarios, names, started, rounds)
            stall = {}
            for name in names:
                print(f"stalled readers: {name} ...", flush=True)
                stall[name] = stalled_readers_rss(started[name, "large"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return [
        f"CPU per byte and per request on {label}: {rounds} interleaved rounds, medians",
        "",
        *summary.table(measured, names, stall),
        "",
        *summary.ratio_lines(measured, names),
    ]


def run_rounds(
    setup: Setup,
    scenarios: list[Scenario],
    names: list[str],
    started: dict[tuple[str, str], Server],
    rounds: int,
) -> list[summary.Round]:
    """``rounds`` rounds: each scenario for each contestant and the driver, the order
    rotated by one each round; the figures of each round."""
    measured: list[summary.Round] = []
    for number in range(rounds):
        order = summary.rotated([summary.DRIVER, *names], number)
        load = os.getloadavg()[0]
        print(f"round {number + 1}/{rounds} (load {load:.1f}): {', '.join(order)}", flush=True)
        this: summary.Round = {}
        for scenario in scenarios:
            for name in order:
                if name == summary.DRIVER:
                    if scenario.floor is not None:
                        this.setdefault(name, {}).update(scenario.floor(setup))
                elif scenario.applies(name):
                    server = started[name, scenario.dataset]
                    this.setdefault(name, {}).update(scenario.measure(setup, server))
        measured.append(this)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=3,
        help="about how long each contestant's share of a scenario lasts in a round (default 3)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also measure gridserve from this source tree (e.g. git archive main | tar -x)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        metavar="N",
        help="also measure gridserve with --processes N (N >= 2)",
    )
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    database = FastDatabase(bench_database_launcher())
    database.start()
    try:
        lines = measure(
            database.uri,
            "mongo-java-server (in memory)",
            args.repeats,
            args.seconds,
            args.baseline.resolve() if args.baseline else None,
            args.processes,
        )
    finally:
        database.cleanup()
    if os.environ.get("MONGODB_URI"):
        uri = os.environ["MONGODB_URI"]
        lines += ["", *measure(uri, "MONGODB_URI", args.repeats, args.seconds)]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += ["", f"started {started}; load average at the end {load}"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
