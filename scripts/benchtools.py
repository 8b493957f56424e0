"""What every benchmark script shares: where things are; a server run as a process group of its
own (:class:`Server`, :func:`running`, gridserve's command :func:`gridserve_server`) with its
memory and ``/metrics``; the processes in ``/proc`` (:func:`live_processes`); wrk with its report
read (:func:`wrk`, :func:`read_wrk`, :func:`checked`) and curl's whole downloads
(:func:`curl_command`).

It measures nothing itself: ``scripts/benchmarks.py`` (gridserve against its peers),
``scripts/bench_cpu.py`` and the other ``scripts/bench_*.py`` build on it.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.dbserver import free_port

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
CHUNK = 255 * 1024
PY = sys.executable
TOKEN = "bench-token"

# -- /proc --------------------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")
PPID, PGRP = 1, 2  # indexes into stat_fields: the parent's pid, the process group id


def stat_fields(stat: Path) -> list[str]:
    """The fields of a ``/proc/<pid>/stat`` after the command name (field 3 onwards: state,
    ppid, pgrp, ...; utime, stime, cutime, cstime at 11 to 14, in :data:`TICKS`)."""
    return stat.read_text().rsplit(")", 1)[1].split()


def live_processes(index: int, value: int) -> dict[Path, list[str]]:
    """``/proc/<pid>`` and :func:`stat_fields` of every live process whose field ``index``
    (:data:`PPID`, :data:`PGRP`) is ``value``: a process group's members, a parent's
    children."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_fields(stat)
            if int(fields[index]) == value:
                found[stat.parent] = fields
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
    return found


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Server:
    """``command`` run in a session of its own (its figures are its process group's: workers
    and nginx's children included), serving HTTP on ``port`` of 127.0.0.1; :meth:`start`
    returns once it answers there, :meth:`stop` ends the group."""

    name: str
    command: list[str]
    port: int
    supports_ranges: bool = True
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("HEAD", "/fs/small/0.bin")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def metrics(self) -> dict[str, float]:
        """The samples of its ``/metrics`` (gridserve's), each by its name and labels as written
        there (``gridserve_requests_total{method="PUT",status="499"}``)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        return read_metrics(text)

    def rss(self) -> int:
        """Resident memory of the server's process group (nginx has workers), bytes."""
        assert self.process is not None
        total = 0
        for proc in live_processes(PGRP, self.process.pid):
            try:
                statm = (proc / "statm").read_text().split()
                total += int(statm[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue  # a process that ended meanwhile
        return total


def gridserve_server(storage: str | Path, *options: str, name: str = "gridserve") -> Server:
    """``gridserve serve`` of ``storage`` (a directory or a database URI) on a free port,
    logging warnings only, with ``options`` besides."""
    port = free_port()
    command = [PY, "-m", "gridserve.cli", "serve", "--log-level", "warning"]
    command += ["--storage", str(storage), "--port", str(port), *options]
    return Server(name, command, port)


def curl_command(url: str, count: int) -> list[str]:
    """One curl downloading ``url`` whole ``count`` times in a row on one keep-alive connection,
    failing on an HTTP error; it prints each download's size in bytes on a line."""
    command = ["curl", "-sS", "--fail", "-w", "%{size_download}\\n"]
    return command + [arg for _ in range(count) for arg in ("-o", "/dev/null", url)]


def read_metrics(text: str) -> dict[str, float]:
    """The samples of a Prometheus text exposition, each by its name and labels as written;
    comments, and lines whose name or value is not plain (``NaN``, ``+Inf``), left out."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- wrk --------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests_per_s: float
    mib_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    non_2xx: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def _mib(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(B|KB|MB|GB)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"B": 1 / MIB, "KB": 1 / 1024, "MB": 1, "GB": 1024}[unit]


def wrk(url: str, connections: int, seconds: float, script: str | None = None) -> WrkResult:
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", duration]
    command += ["--latency", "--timeout", "30s"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:  # removed, wrk failing or not
        if script:
            lua.write(script)
            lua.flush()
            command += ["-s", lua.name]
        output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return read_wrk(output)


def read_wrk(output: str) -> WrkResult:
    """The figures of wrk's report (run with ``--latency``); socket errors summed, a figure
    wrk did not print is 0."""

    def find(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, output)
        return match.group(1) if match else default

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return WrkResult(
        requests_per_s=float(find(r"Requests/sec:\s+([\d.]+)")),
        mib_per_s=_mib(find(r"Transfer/sec:\s+([\d.]+\w+)", "0B")),
        p50_ms=_ms(find(r"\s50%\s+([\d.]+\w+)", "0ms")),
        p99_ms=_ms(find(r"\s99%\s+([\d.]+\w+)", "0ms")),
        requests=int(find(r"(\d+) requests in")),
        errors=errors,
        non_2xx=int(find(r"Non-2xx or 3xx responses: (\d+)")),
    )


def checked(name: str, result: WrkResult) -> WrkResult:
    """A figure only counts when every response was a success."""
    if result.non_2xx or result.errors:
        raise RuntimeError(
            f"{name}: {result.non_2xx} non-2xx responses and {result.errors} socket errors"
        )
    return result
