"""The daemon as operators run it: a real ``gridserve serve`` process (and the file tools)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gridfs
import pymongo
import pytest
import requests

from tests.dbserver import FerretDB, ferretdb_binary, free_port
from tests.test_cli import gridserve, wait_for_http

MIB = 1024 * 1024


class Daemon:
    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.port = free_port()
        self.process = subprocess.Popen(
            gridserve("serve", "--port", str(self.port), *args),
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_http(self.url("/healthz"), self.process)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, sig: int | None = signal.SIGTERM) -> tuple[int, str]:
        """Sends ``sig`` (None: none, the process was already told to stop) and waits."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.communicate()


def test_print_config_shows_precedence_and_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "gridserve.toml"
    config.write_text('[gridserve]\nport = 7000\ncache_time = 60\nupload_token = "file-Secret"\n')
    result = subprocess.run(
        gridserve("serve", "--config", str(config), "--port", "7200", "--print-config"),
        env={**os.environ, "GRIDSERVE_CACHE_TIME": "90", "GRIDSERVE_SIGNING_KEY": "env-Secret"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "port = 7200" in result.stdout
    assert "cache_time = 90" in result.stdout
    assert 'upload_token = "***"' in result.stdout and 'signing_key = "***"' in result.stdout
    assert "Secret" not in result.stdout


def test_sigterm_lets_a_large_download_finish(tmp_path: Path, daemons: list[Daemon]) -> None:
    data = os.urandom(24 * MIB)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(data)
    daemon = Daemon("--storage", str(tmp_path / "data"))
    daemons.append(daemon)
    response = requests.get(daemon.url("/fs/big.bin"), stream=True, timeout=30)
    digest, received = hashlib.sha256(), 0
    signalled = False
    for block in response.iter_content(256 * 1024):
        digest.update(block)
        received += len(block)
        if not signalled and received > 2 * MIB:
            daemon.process.send_signal(signal.SIGTERM)
            signalled = True
        time.sleep(0.01)  # a slow client: the download outlives the signal
    assert received == len(data)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    code, stderr = daemon.stop(None)  # signalled once already: a second is a fast stop
    assert code == 0, stderr
    assert "1 request(s) in flight" in stderr


def test_readiness_follows_the_database(tmp_path: Path, daemons: list[Daemon]) -> None:
    database = FerretDB(ferretdb_binary())
    database.start()
    try:
        daemon = Daemon("--storage", database.uri + "media")
        daemons.append(daemon)
        assert requests.get(daemon.url("/readyz"), timeout=10).status_code == 200
        database.stop()
        down = requests.get(daemon.url("/readyz"), timeout=15)
        assert down.status_code == 503
        assert down.headers["Retry-After"].isdigit()
        missing = requests.get(daemon.url("/fs/x.webm"), timeout=15)
        assert missing.status_code == 503
        assert requests.get(daemon.url("/healthz"), timeout=10).status_code == 200
        database.start()
        deadline = time.monotonic() + 30
        while requests.get(daemon.url("/readyz"), timeout=15).status_code != 200:
            assert time.monotonic() < deadline, "did not recover"
            time.sleep(0.2)
        assert requests.get(daemon.url("/fs/x.webm"), timeout=10).status_code == 404
        code, stderr = daemon.stop()
        assert code == 0, stderr
    finally:
        database.cleanup()


def test_metrics_count_requests_and_ranges(tmp_path: Path, daemons: list[Daemon]) -> None:
    (tmp_path / "a.webm").write_bytes(os.urandom(100_000))
    daemon = Daemon("--storage", str(tmp_path))
    daemons.append(daemon)
    assert requests.get(daemon.url("/fs/a.webm"), headers={"Range": "bytes=0-99"}, timeout=10)
    assert requests.get(daemon.url("/fs/nope"), timeout=10).status_code == 404
    text = requests.get(daemon.url("/metrics"), timeout=10).text
    assert 'gridserve_range_requests_total{kind="single"} 1.0' in text
    assert 'gridserve_requests_total{method="GET",status="206"} 1.0' in text
    assert 'gridserve_requests_total{method="GET",status="404"} 1.0' in text
    assert "gridserve_sent_bytes_total 100.0" in text
    assert re.search(r'gridserve_storage_seconds_count\{operation="resolve"\} [12]\.0', text)
    assert "gridserve_streams_in_flight 0.0" in text


def test_cors_for_players_on_other_origins(tmp_path: Path, daemons: list[Daemon]) -> None:
    (tmp_path / "a.webm").write_bytes(b"x" * 1000)
    daemon = Daemon("--storage", str(tmp_path), "--cors-origin", "https://player.example")
    daemons.append(daemon)
    response = requests.get(
        daemon.url("/fs/a.webm"),
        headers={"Origin": "https://player.example", "Range": "bytes=0-9"},
        timeout=10,
    )
    assert response.headers["Access-Control-Allow-Origin"] == "https://player.example"
    exposed = response.headers["Access-Control-Expose-Headers"]
    for name in ("Content-Range", "Accept-Ranges", "Content-Length", "ETag"):
        assert name in exposed
    other = requests.get(daemon.url("/fs/a.webm"), headers={"Origin": "https://evil"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = requests.options(
        daemon.url("/fs/a.webm"),
        headers={
            "Origin": "https://player.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
        timeout=10,
    )
    assert preflight.status_code == 204
    assert "Range" in preflight.headers["Access-Control-Allow-Headers"]


def test_access_log_and_sighup_reopen(tmp_path: Path, daemons: list[Daemon]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.mp3").write_bytes(b"x" * 500)
    log_path = tmp_path / "access.log"
    daemon = Daemon("--storage", str(tmp_path / "data"), "--access-log", str(log_path))
    daemons.append(daemon)
    requests.get(
        daemon.url("/fs/a.mp3"), headers={"Range": "bytes=0-9", "User-Agent": "ua/1"}, timeout=10
    )
    deadline = time.monotonic() + 10  # the line is written just after the response is sent

    def lines_for_file() -> list[str]:
        # The readiness probe's /healthz line may land before or after ours: pick ours.
        text = log_path.read_text() if log_path.exists() else ""
        return [line for line in text.splitlines(keepends=True) if "/fs/a.mp3" in line]

    while not (found := lines_for_file()) or not found[-1].endswith("\n"):
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.05)
    line = found[-1].rstrip("\n")
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[[^]]+\] "GET /fs/a\.mp3 HTTP/1\.1" 206 10 "-" "ua/1"', line
    ), line
    log_path.rename(tmp_path / "access.log.1")  # what logrotate does
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not log_path.exists() or not log_path.read_text():
        requests.get(daemon.url("/fs/a.mp3"), timeout=10)
        assert time.monotonic() < deadline, "SIGHUP did not reopen the access log"
        time.sleep(0.1)
    assert daemon.stop()[0] == 0


def test_prefork_processes(tmp_path: Path, daemons: list[Daemon]) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    daemon = Daemon("--storage", str(tmp_path), "--processes", "2")
    daemons.append(daemon)
    for _ in range(10):
        assert requests.get(daemon.url("/fs/a.txt"), timeout=10).content == b"hello"
    code, stderr = daemon.stop()
    assert code == 0, stderr
    assert stderr.count("stopped") == 2


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_serves_gridfs_on_either_event_loop(
    loop: str, tmp_path: Path, mongo_uri: str, db_name: str, daemons: list[Daemon]
) -> None:
    """``--loop``: the same answers (a whole file, a range, an upload, a 404) on each loop."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    storage = mongo_uri.rstrip("/") + f"/{db_name}"
    daemon = Daemon("--storage", storage, "--loop", loop, "--upload-token", "t")
    daemons.append(daemon)
    data = random.Random(600).randbytes(600_000)  # 3 chunks; seeded: never sniffed as refused
    put = requests.put(
        daemon.url("/fs/l.bin"), data=data, headers={"Authorization": "Bearer t"}, timeout=30
    )
    assert put.status_code == 201, put.text
    assert requests.get(daemon.url("/fs/l.bin"), timeout=30).content == data
    part = requests.get(daemon.url("/fs/l.bin"), headers={"Range": "bytes=1000-299999"}, timeout=30)
    assert part.status_code == 206 and part.content == data[1000:300000]
    assert requests.get(daemon.url("/fs/none.bin"), timeout=30).status_code == 404
    code, stderr = daemon.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_file_tools_round_trip(tmp_path: Path, mongo_uri: str, db_name: str) -> None:
    storage = ["--storage", mongo_uri.rstrip("/") + f"/{db_name}", "--bucket", "media"]
    source = tmp_path / "clip.webm"
    data = b"\x1aE\xdf\xa3" + os.urandom(700_000)
    source.write_bytes(data)

    def run(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            gridserve(*args), cwd=cwd, capture_output=True, text=True, timeout=60, check=False
        )

    put = run(
        "put", "clip.webm", "--name", "show/clip.webm", "--metadata", '{"owner": "ann"}', *storage
    )
    assert put.returncode == 0, put.stderr
    stored = json.loads(put.stdout)
    assert stored["filename"] == "show/clip.webm" and stored["length"] == len(data)
    assert stored["contentType"] == "video/webm"
    listing = run("ls", "show/", *storage)
    assert listing.returncode == 0 and "show/clip.webm" in listing.stdout
    got = run("get", "show/clip.webm", "-o", str(tmp_path / "back.webm"), *storage)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.webm").read_bytes() == data
    info = run("info", stored["id"], *storage)
    assert '"owner": "ann"' in info.stdout
    assert run("rm", "show/clip.webm", *storage).returncode == 0
    missing = run("get", "show/clip.webm", *storage)
    assert missing.returncode == 1 and "no file" in missing.stderr
    assert run("rm", "show/clip.webm", *storage).returncode == 1


def test_sign_prints_a_url_the_server_accepts(tmp_path: Path, daemons: list[Daemon]) -> None:
    (tmp_path / "a.txt").write_bytes(b"signed")
    key = {"GRIDSERVE_SIGNING_KEY": "k-123"}
    daemon = Daemon("--storage", str(tmp_path), "--require-signed-reads", env=key)
    daemons.append(daemon)
    signed = subprocess.run(
        gridserve("sign", "/fs/a.txt", "--ttl", "60"),
        env={**os.environ, **key},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert signed.returncode == 0, signed.stderr
    assert requests.get(daemon.url("/fs/a.txt"), timeout=10).status_code == 401
    assert requests.get(daemon.url(signed.stdout.strip()), timeout=10).content == b"signed"


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--require-signed-reads"],  # no signing key
        ["serve", "--max-upload-size", "big"],
        ["serve", "--loop", "trio"],
        ["sign", "/fs/a", "--ttl", "60"],  # no key
        ["put", "a", "b", "--name", "x"],
        ["put", "x", "--metadata", "[1]"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSERVE_")}
    result = subprocess.run(
        [sys.executable, "-m", "gridserve.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_a_client_gone_before_the_first_byte_is_logged_499_at_shutdown(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    database = FerretDB(ferretdb_binary())
    database.start()
    try:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(database.uri)
        file_id = gridfs.GridFSBucket(client["media"]).upload_from_stream("clip.webm", b"x" * 1000)
        client.close()
        # The chunk cache off: with it, the chunks read below would come from memory. On
        # asyncio's loop the read then waits for the stopped database (server selection); on
        # uvloop the driver's reconnect is refused at once and the request is a prompt 503, so
        # there is no waiting request to stage: this test pins asyncio.
        daemon = Daemon(
            "--storage", database.uri + "media", "--chunk-cache", "0", "--loop", "asyncio"
        )
        daemons.append(daemon)
        assert requests.get(daemon.url(f"/fs/{file_id}"), timeout=10).status_code == 200
        database.stop()
        # The file document comes from the cache; the chunks now wait for the database ...
        with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
            sock.sendall(f"GET /fs/{file_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.5)
        time.sleep(0.3)  # ... and the client is gone when the shutdown comes.
        code, stderr = daemon.stop()
        assert code == 0, stderr
        # Before: Tornado answered the handler the shutdown cancelled with a logged 500.
        assert re.search(rf" 499 GET /fs/{file_id} ", stderr), stderr
        assert " 500 " not in stderr and "Traceback" not in stderr, stderr
    finally:
        database.cleanup()
