"""Full download, one client: curl downloading the 32 MiB file whole, again and again on one
keep-alive connection, for about ``seconds`` at 200 MB/s; the floor is the driver reading the
same chunks. Figures: ``mbs`` (MiB/s), ``cpu_mib`` (server CPU ms per MiB), ``faults`` (minor
page faults per MiB: an allocator that maps every reply's pages anew shows here)."""

from __future__ import annotations

import asyncio

from scripts.benchtools import MIB, Server
from scripts.cpubench.floors import read_floor
from scripts.cpubench.probes import curl_downloads, page_faults, server_cpu
from scripts.cpubench.scenario import Figures, Scenario, Setup

FULL = 32 * MIB


def _downloads(setup: Setup) -> int:
    return max(2, round(setup.seconds * 200 * MIB / FULL))


def measure(setup: Setup, server: Server) -> Figures:
    assert server.process is not None
    before = page_faults(server.process.pid)
    (size, wall), cpu = server_cpu(
        server, curl_downloads, server.url("/fs/large.bin"), _downloads(setup)
    )
    moved = size / MIB
    return {
        "mbs": moved / wall,
        "cpu_mib": cpu * 1000 / moved,
        "faults": (page_faults(server.process.pid) - before) / moved,
    }


def floor(setup: Setup) -> Figures:
    mbs, cpu_mib = asyncio.run(read_floor(setup.uri, setup.db("large"), "large.bin"))
    return {"mbs": mbs, "cpu_mib": cpu_mib}


def warm_up(setup: Setup, server: Server) -> None:
    curl_downloads(server.url("/fs/large.bin"), 2)


FULL_DOWNLOAD = Scenario("full download", "large", measure, floor, warm_up)
