"""The servers ``scripts/bench --cpu`` compares, built on :func:`scripts.benchdata.servers`.

gridserve runs on its default event loop (uvloop when installed) and again on asyncio's; the
peers are motor's two GridFS handlers. :data:`TORNADO_FLOOR` is no GridFS server: Tornado
sending bytes it holds in memory, as gridserve sends them (``scripts/bench_peers.py
tornado-memory``), what answering and sending costs any Tornado server before it reads a
database. Optional: gridserve from another source tree (the
baseline, e.g. ``git archive main | tar -x -C DIR``), and gridserve with ``--processes N``.
"""

from __future__ import annotations

from pathlib import Path

from scripts.benchdata import SMALL, peer_server, servers
from scripts.benchtools import Server
from scripts.cpubench.full import FULL

GRIDSERVE = "gridserve (GridFS)"
ASYNCIO = "gridserve, --loop asyncio"
PEERS = ("motor GridFSHandler", "motor AIOHTTPGridFS")
TORNADO_FLOOR = "Tornado, bytes in memory"
CONTESTANTS = (GRIDSERVE, ASYNCIO, *PEERS, TORNADO_FLOOR)
BASELINE = "gridserve (baseline)"


def processes_name(count: int) -> str:
    return f"gridserve, --processes {count}"


def names(baseline: bool, processes: int) -> list[str]:
    """The contestants of a run, in the order of its first round."""
    found = [GRIDSERVE, *([BASELINE] if baseline else []), *CONTESTANTS[1:]]
    return found + ([processes_name(processes)] if processes > 1 else [])


def is_gridserve(name: str) -> bool:
    """Whether ``name`` is a gridserve build (they alone take uploads)."""
    return name.startswith("gridserve")


def contestant(
    uri: str, db_name: str, disk: Path, workdir: Path, name: str, baseline: Path | None = None
) -> Server:
    """The server ``name`` (of :func:`names`) on database ``db_name``; :data:`BASELINE` runs
    from the source tree ``baseline``, from that directory, so its package is the one
    imported."""
    if name == TORNADO_FLOOR:
        return peer_server(name, "tornado-memory", str(FULL), str(SMALL))
    built = servers(uri, db_name, disk, workdir)
    if name in built:
        return built[name]
    server = built[GRIDSERVE]
    server.name = name
    if name == BASELINE:
        assert baseline is not None
        server.command = ["sh", "-c", 'cd "$0" && exec "$@"', str(baseline), *server.command]
    elif name == ASYNCIO:
        server.command = [*server.command, "--loop", "asyncio"]
    elif name.startswith("gridserve, --processes "):
        server.command = [*server.command, "--processes", name.rsplit(" ", 1)[1]]
    else:
        raise ValueError(f"unknown contestant {name!r}")
    return server
