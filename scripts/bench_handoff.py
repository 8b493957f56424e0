"""Hand-off to nginx: what ``--accel-redirect`` buys on local disk.

``scripts/bench --handoff`` (or ``.venv/bin/python scripts/bench_handoff.py``). Three servers
on the same files in a local directory, one after the other:

- gridserve direct (one process; Python sends every byte),
- nginx (``deploy/nginx.conf`` as a loopback site) in front of gridserve ``--accel-redirect
  /_files/``: gridserve resolves and runs the ACL, nginx sends the bytes with sendfile,
- nginx alone serving the directory (the ceiling; no ACL at all).

Load from wrk: MiB/s of whole downloads of a large file (``--connections-large`` connections),
and requests/s of a small file (``--connections-small``). Targets of issue 20: large >= 0.8x
nginx alone, small >= 2x gridserve direct.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchmarks import MIB, PY, Server, checked, median_wrk, running  # noqa: E402
from tests.dbserver import free_port  # noqa: E402
from tests.nginxserver import Nginx, site_from_deploy  # noqa: E402

SMALL = 4 * 1024


def gridserve(disk: Path, *options: str) -> Server:
    port = free_port()
    command = [PY, "-m", "gridserve.cli", "serve", "--log-level", "warning", "--no-ui"]
    command += ["--storage", str(disk), "--port", str(port), *options]
    return Server("gridserve", command, port)


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


def measure(base: str, args: argparse.Namespace) -> tuple[float, float]:
    large = median_wrk(base + "/fs/large.bin", args.connections_large, args.seconds, args.repeats)
    small = median_wrk(
        base + "/fs/small.bin", args.connections_small, args.seconds, args.repeats, script=" "
    )
    checked("large", large)
    checked("small", small)
    return large.mib_per_s, small.requests_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=64, help="large file, MiB (default 64)")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--connections-large", type=int, default=4)
    parser.add_argument("--connections-small", type=int, default=32)
    args = parser.parse_args()
    disk = Path(tempfile.mkdtemp(prefix="gridserve-bench-handoff-"))
    disk.chmod(0o755)  # nginx's workers run as nobody
    try:
        with open(disk / "large.bin", "wb") as out:
            for _ in range(args.size):
                out.write(bytes(range(256)) * (MIB // 256))
        (disk / "small.bin").write_bytes(b"s" * SMALL)
        for path in disk.iterdir():
            path.chmod(0o644)
        rows: list[tuple[str, float, float]] = []
        with running(gridserve(disk)) as direct:
            rows.append(("gridserve direct", *measure(direct.url(""), args)))
        with running(gridserve(disk, "--accel-redirect", "/_files/")) as handing:
            site = site_from_deploy(
                gridserve_port=handing.port, listen_port=free_port(), storage_root=disk
            )
            with Nginx(site) as nginx:
                rows.append(("nginx + hand-off", *measure(nginx.url(""), args)))
        with nginx_alone(disk) as alone:
            rows.append(("nginx alone", *measure(alone.url(""), args)))
    finally:
        shutil.rmtree(disk, ignore_errors=True)
    print(f"{'server':<20} {'large MiB/s':>12} {'small req/s':>12}")
    for name, mib, rps in rows:
        print(f"{name:<20} {mib:>12.0f} {rps:>12.0f}")
    direct_rps, handoff_mib, handoff_rps, alone_mib = rows[0][2], rows[1][1], rows[1][2], rows[2][1]
    print(f"hand-off large / nginx alone: {handoff_mib / alone_mib:.2f}x (target >= 0.8x)")
    print(f"hand-off small / gridserve direct: {handoff_rps / direct_rps:.2f}x (target >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
