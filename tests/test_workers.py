"""``--processes N``: reloads, worker lifetime and metrics across workers, on a real daemon."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import gridfs
import pytest
import requests

from tests.conftest import SyncDB
from tests.test_daemon import Daemon

DEADLINE = 20.0


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons stopped after the test, their workers too (an orphan would hold the pipes)."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        for pid in children_of(daemon.process.pid) if daemon.process.poll() is None else ():
            os.kill(pid, signal.SIGKILL)
        if daemon.process.poll() is None:
            daemon.process.kill()
        for pid in started_workers.pop(daemon.process.pid, set()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        daemon.process.communicate()


started_workers: dict[int, set[int]] = {}


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def open_files(pid: int) -> set[str]:
    paths = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            paths.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return paths


def workers(daemon: Daemon, count: int) -> set[int]:
    deadline = time.monotonic() + DEADLINE
    while len(pids := children_of(daemon.process.pid)) != count:
        assert time.monotonic() < deadline, f"{pids} are not {count} workers"
        time.sleep(0.05)
    started_workers[daemon.process.pid] = pids
    return pids


@pytest.fixture
def two_workers(tmp_path: Path, daemons: list[Daemon]) -> tuple[Daemon, set[int]]:
    """A daemon serving ``tmp_path`` (holding ``a.txt``) with two workers, and their pids."""
    (tmp_path / "a.txt").write_bytes(b"hello")
    daemon = Daemon("--storage", str(tmp_path), "--processes", "2")
    daemons.append(daemon)
    return daemon, workers(daemon, 2)


def test_sighup_reopens_the_logs_of_every_worker_and_the_master_lives(
    tmp_path: Path,
    daemons: list[Daemon],
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_bytes(b"hello")
    log_path = tmp_path / "access.log"
    daemon = Daemon(
        "--storage",
        str(tmp_path / "data"),
        "--processes",
        "2",
        "--access-log",
        str(log_path),
        "--log-file",
        str(tmp_path / "gridserve.log"),
    )
    daemons.append(daemon)
    pids = workers(daemon, 2)
    for _ in range(4):
        assert requests.get(daemon.url("/fs/a.txt"), timeout=10).content == b"hello"
    log_path.rename(tmp_path / "access.log.1")  # what logrotate does
    (tmp_path / "gridserve.log").rename(tmp_path / "gridserve.log.1")
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + DEADLINE
    for pid in (daemon.process.pid, *pids):
        while str(log_path) not in open_files(pid):
            assert time.monotonic() < deadline, f"process {pid} did not reopen {log_path}"
            time.sleep(0.05)
        assert str(tmp_path / "access.log.1") not in open_files(pid)
        assert str(tmp_path / "gridserve.log") in open_files(pid)
    # Before: the master died of the signal (129) and the workers were orphaned.
    assert daemon.process.poll() is None
    assert children_of(daemon.process.pid) == pids
    for _ in range(6):
        requests.get(daemon.url("/fs/a.txt"), timeout=10)
    deadline = time.monotonic() + DEADLINE
    while log_path.read_text().count("GET /fs/a.txt") < 6:
        assert time.monotonic() < deadline, "requests not logged to the new file"
        time.sleep(0.05)
    code, stderr = daemon.stop()
    assert code == 0, stderr


def test_workers_die_with_their_master(two_workers: tuple[Daemon, set[int]]) -> None:
    daemon, pids = two_workers
    daemon.process.kill()  # nothing the master can forward: the kernel must stop them
    daemon.process.wait(timeout=DEADLINE)
    deadline = time.monotonic() + DEADLINE
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers orphaned: they outlived their master"
        time.sleep(0.05)


def test_sigterm_to_the_master_stops_every_worker(two_workers: tuple[Daemon, set[int]]) -> None:
    daemon, pids = two_workers
    code, stderr = daemon.stop()
    assert code == 0, stderr
    assert stderr.count("stopped") >= 2
    assert not any(alive(pid) for pid in pids)


def test_metrics_add_up_every_worker_and_name_the_one_that_answered(
    two_workers: tuple[Daemon, set[int]],
) -> None:
    daemon, pids = two_workers
    for _ in range(20):
        # A new connection each time, so the kernel spreads them over the workers.
        assert requests.get(daemon.url("/fs/a.txt"), timeout=10).status_code == 200
    answered: set[int] = set()
    deadline = time.monotonic() + DEADLINE
    while answered != pids:
        assert time.monotonic() < deadline, f"only {answered} of {pids} answered /metrics"
        response = requests.get(daemon.url("/metrics"), timeout=10)
        label = response.headers["X-Gridserve-Process"]
        match = re.fullmatch(r"worker=[01] pid=(\d+)", label)
        assert match, label
        answered.add(int(match.group(1)))
        # Before: each scrape showed one worker's count only (1, 3, 1 ...).
        assert 'gridserve_requests_total{method="GET",status="200"} 20.0' in response.text
        assert "gridserve_streams_in_flight 0.0" in response.text
    code, stderr = daemon.stop()
    assert code == 0, stderr


def cache_counts(text: str) -> dict[str, float]:
    """The chunk cache's metrics in a scrape (absent ones missing)."""
    found = re.findall(
        r"^(gridserve_cache_\w+|gridserve_storage_read_bytes_total)\S* (\S+)$", text, re.M
    )
    return {name: float(value) for name, value in found}


def test_cache_metrics_add_up_every_worker(
    mongo_uri: str, db_name: str, sync_db: SyncDB, daemons: list[Daemon]
) -> None:
    chunk = 16 * 1024
    data = os.urandom(5 * chunk)
    gridfs.GridFSBucket(sync_db, chunk_size_bytes=chunk).upload_from_stream("clip.webm", data)
    daemon = Daemon(
        "--storage", mongo_uri + db_name, "--processes", "2", "--chunk-cache", "1M", "--no-ui"
    )
    daemons.append(daemon)
    pids = workers(daemon, 2)
    # Each worker has its own cache: the first read in a worker misses the 5 blocks, every
    # later one hits them. Read (a new connection each time) until both workers have.
    made = 0
    deadline = time.monotonic() + DEADLINE
    while True:
        assert requests.get(daemon.url("/fs/clip.webm"), timeout=10).content == data
        made += 1
        while True:  # a worker publishes when its request ends, just after the client has it
            counts = cache_counts(requests.get(daemon.url("/metrics"), timeout=10).text)
            seen = counts.get("gridserve_cache_hits_total", 0) + counts.get(
                "gridserve_cache_misses_total", 0
            )
            if seen == 5 * made:
                break
            assert time.monotonic() < deadline, f"{made} reads, cache counts {counts}"
            time.sleep(0.05)
        if counts["gridserve_cache_misses_total"] == 10:
            break
        assert time.monotonic() < deadline, f"{made} reads all went to one worker"
    answered: set[int] = set()
    while answered != pids:
        assert time.monotonic() < deadline, f"only {answered} of {pids} answered /metrics"
        response = requests.get(daemon.url("/metrics"), timeout=10)
        answered.add(int(response.headers["X-Gridserve-Process"].rsplit("=", 1)[1]))
        # Before: no gridserve_cache_* line at all under --processes.
        assert cache_counts(response.text) == {
            "gridserve_cache_hits_total": 5.0 * made - 10,
            "gridserve_cache_misses_total": 10.0,
            "gridserve_cache_evictions_total": 0.0,
            "gridserve_cache_bytes": 2.0 * len(data),  # both workers' caches hold the file
            "gridserve_storage_read_bytes_total": 2.0 * len(data),
        }
    code, stderr = daemon.stop()
    assert code == 0, stderr
