"""The test database: a FerretDB (SQLite) process on a free loopback port, or MONGODB_URI."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pymongo
from pymongo.errors import PyMongoError

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


class TestDatabaseError(RuntimeError):
    """The test database could not be provisioned; the message says why."""


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing is bound to, for a server this test starts (nginx, a daemon).

    Taken below the kernel's ephemeral range: the local ports of outgoing connections (the
    test's own polling of the port included) come from that range, and one of them could take
    a port found free there before the server binds it. Never the same port twice a run."""
    low = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(max(1024, low - 12000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free loopback port below {low}")


def provisioned(env_var: str, script: str) -> str:
    """The path a ``scripts/build-test-*`` script prints (building or fetching what is not
    cached yet), or ``$env_var`` when set. Raises TestDatabaseError with the script's output."""
    configured = os.environ.get(env_var)
    if configured:
        if not os.path.exists(configured):
            raise TestDatabaseError(f"{env_var}={configured} does not exist")
        return configured
    result = subprocess.run(
        [str(ROOT / "scripts" / script)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise TestDatabaseError(f"scripts/{script} failed:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def ferretdb_binary() -> str:
    """The cached FerretDB binary (scripts/build-test-db)."""
    return provisioned("GRIDSERVE_FERRETDB", "build-test-db")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class DatabaseProcess:
    """A database server process on a free loopback port, its output in ``log_path``: a
    subclass says how to run it (:meth:`command`) and what :meth:`cleanup` removes."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = log_path

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        wait_until_up(self.uri, self.process, self.log_path)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def cleanup(self) -> None:
        self.stop()


class FerretDB(DatabaseProcess):
    """One FerretDB process with its own temporary data directory."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.data_dir = tempfile.mkdtemp(prefix="gridserve-ferretdb-")
        super().__init__(Path(self.data_dir) / "ferretdb.log")

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--listen-addr=127.0.0.1:{self.port}",
            f"--data-dir={self.data_dir}/db",
            "--log-level=error",
        ]

    def cleanup(self) -> None:
        super().cleanup()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def wait_until_up(
    uri: str, process: subprocess.Popen[bytes] | None = None, log_path: Path | None = None
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last_error = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = log_path.read_text(errors="replace") if log_path else ""
            raise TestDatabaseError(f"FerretDB exited with {process.returncode}:\n{output}")
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=500
        )
        try:
            client.admin.command("ping")
            return
        except PyMongoError as exc:
            last_error = str(exc)
        finally:
            client.close()
        time.sleep(0.1)
    raise TestDatabaseError(f"the test database at {uri} did not answer: {last_error}")


def bench_database_launcher() -> str:
    """The cached launcher of the fast benchmark database (scripts/build-bench-db)."""
    return provisioned("GRIDSERVE_BENCHDB", "build-bench-db")


class FastDatabase(DatabaseProcess):
    """mongo-java-server in memory (scripts/build-bench-db): a MongoDB stand-in fast enough that
    a server in front of it, not the database, is what a benchmark measures. For speed figures
    only; its known quirks: it answers a query without a batch size in one reply, uses only
    exact matches on a unique index, and ignores ``$gt`` beside ``$regex`` on one field."""

    def __init__(self, launcher: str) -> None:
        self.launcher = launcher
        super().__init__(Path(tempfile.mkstemp(prefix="gridserve-benchdb-", suffix=".log")[1]))

    def command(self) -> list[str]:
        return [self.launcher, str(self.port)]

    def cleanup(self) -> None:
        super().cleanup()
        self.log_path.unlink(missing_ok=True)
