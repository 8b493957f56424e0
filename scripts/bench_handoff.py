"""Hand-off to nginx: what ``--accel-redirect`` buys on local disk.

``scripts/bench --handoff`` (or ``.venv/bin/python scripts/bench_handoff.py``). Three servers
on the same files in a local directory, one after the other:

- gridserve direct (one process; Python sends every byte),
- nginx (``deploy/nginx.conf`` as a loopback site) in front of gridserve ``--accel-redirect
  /_files/``: gridserve resolves and runs the ACL, nginx sends the bytes with sendfile,
- nginx alone serving the directory (the ceiling; no ACL at all),
- for small files, the floor of any hand-off decided in Tornado: nginx in front of a bare
  ``tornado.web.RequestHandler`` that answers every request with ``X-Accel-Redirect`` and
  does nothing else (no lookup, no ACL, no validators, no metrics).

Load from wrk: MiB/s of whole downloads of a large file (``--connections-large`` connections),
and requests/s of a small file (``--connections-small``). Every server runs at once and each
of ``--repeats`` rounds measures each in turn, so the ratios compare servers under the load of
the same moment (the machine may be shared); the figures are medians over the rounds. Targets
of issue 20: large >= 0.8x nginx alone, small >= 2x gridserve direct.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchtools import MIB, PY, Server, checked, gridserve_server, running, wrk  # noqa: E402
from tests.dbserver import free_port  # noqa: E402
from tests.nginxserver import Nginx, site_from_deploy  # noqa: E402

SMALL = 4 * 1024
HEALTH_PROXIED = "location = /healthz { proxy_pass http://gridserve; }"
HEALTH_LOCAL = 'location = /healthz { return 200 "ok"; }'


def gridserve(disk: Path, *options: str) -> Server:
    """gridserve on ``disk``, its UI off, with ``options``."""
    return gridserve_server(disk, "--no-ui", *options)


def behind_nginx(port: int, disk: Path) -> str:
    """``deploy/nginx.conf`` in front of the server on ``port``, its hand-off at ``disk``."""
    site = site_from_deploy(gridserve_port=port, listen_port=free_port(), storage_root=disk)
    return site.replace(HEALTH_PROXIED, HEALTH_LOCAL)  # the floor server has no /healthz


def bare_tornado() -> Server:
    """The floor server (``--bare-tornado PORT``, below)."""
    port = free_port()
    return Server("bare Tornado", [PY, __file__, "--bare-tornado", str(port)], port)


def bare_application() -> Any:
    """The floor: a bare ``tornado.web.RequestHandler`` that answers every request with
    ``X-Accel-Redirect`` and does nothing else."""
    import tornado.web

    class HandOff(tornado.web.RequestHandler):
        def get(self, path: str) -> None:
            self.set_header("X-Accel-Redirect", "/_files/" + path)

        head = get

    return tornado.web.Application([(r"/fs/(.*)", HandOff)], log_function=lambda _: None)


def serve_bare_tornado(port: int) -> None:
    import asyncio

    async def serve() -> None:
        bare_application().listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    from gridserve import loops

    loops.run(serve(), loops.default_loop())  # the loop gridserve serve runs on


def nginx_alone(disk: Path) -> Nginx:
    port = free_port()
    return Nginx(
        f"""server {{
    listen 127.0.0.1:{port};
    sendfile on; tcp_nopush on;
    location /fs/ {{ alias {disk}/; }}
    location = /healthz {{ return 200 "ok"; }}
}}""",
        port,
    )


def rounds(
    urls: dict[str, str], path: str, connections: int, args: argparse.Namespace, small: bool
) -> dict[str, list[float]]:
    """``args.repeats`` rounds, each measuring every server once in turn, so a round's servers
    share the machine's load of that moment (it is shared): MiB/s, or req/s when ``small``."""
    for base in urls.values():
        wrk(base + path, connections, 2)  # warm up
    results: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(args.repeats):
        for name, base in urls.items():
            result = wrk(base + path, connections, args.seconds)
            checked(name, result)
            results[name].append(result.requests_per_s if small else result.mib_per_s)
    return results


def ratio(results: dict[str, list[float]], over: str, under: str) -> float:
    """The median over rounds of one server's figure over another's in the same round."""
    return statistics.median(a / b for a, b in zip(results[over], results[under], strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=64, help="large file, MiB (default 64)")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--connections-large", type=int, default=4)
    parser.add_argument("--connections-small", type=int, default=32)
    parser.add_argument("--bare-tornado", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_tornado:
        serve_bare_tornado(args.bare_tornado)
        return 0
    disk = Path(tempfile.mkdtemp(prefix="gridserve-bench-handoff-"))
    disk.chmod(0o755)  # nginx's workers run as nobody
    try:
        with open(disk / "large.bin", "wb") as out:
            for _ in range(args.size):
                out.write(bytes(range(256)) * (MIB // 256))
        (disk / "small.bin").write_bytes(b"s" * SMALL)
        for path in disk.iterdir():
            path.chmod(0o644)
        with contextlib.ExitStack() as stack:
            direct = stack.enter_context(running(gridserve(disk)))
            handing = stack.enter_context(running(gridserve(disk, "--accel-redirect", "/_files/")))
            bare = stack.enter_context(running(bare_tornado()))
            via = stack.enter_context(Nginx(behind_nginx(handing.port, disk)))
            floor = stack.enter_context(Nginx(behind_nginx(bare.port, disk)))
            alone = stack.enter_context(nginx_alone(disk))
            servers = {
                "gridserve direct": direct.url(""),
                "nginx + hand-off": via.url(""),
                "nginx alone": alone.url(""),
            }
            large = rounds(servers, "/fs/large.bin", args.connections_large, args, small=False)
            servers["nginx + bare Tornado (floor)"] = floor.url("")
            small = rounds(servers, "/fs/small.bin", args.connections_small, args, small=True)
    finally:
        shutil.rmtree(disk, ignore_errors=True)
    print(f"medians of {args.repeats} round(s), each server once per round")
    print(f"{'server':<30} {'large MiB/s':>12} {'small req/s':>12}")
    for name in small:
        mib = f"{statistics.median(large[name]):.0f}" if name in large else ""
        print(f"{name:<30} {mib:>12} {statistics.median(small[name]):>12.0f}")
    print(
        f"hand-off large / nginx alone: {ratio(large, 'nginx + hand-off', 'nginx alone'):.2f}x"
        " (target >= 0.8x)"
    )
    print(
        "hand-off small / gridserve direct: "
        f"{ratio(small, 'nginx + hand-off', 'gridserve direct'):.2f}x (target >= 2x)"
    )
    print(
        "bare Tornado floor / gridserve direct: "
        f"{ratio(small, 'nginx + bare Tornado (floor)', 'gridserve direct'):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
