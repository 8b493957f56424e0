"""The ``gridserve`` command as a real process: serve, stop on SIGTERM, exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import requests

from gridserve.storage.s3 import S3Storage
from tests.conftest import PutFile
from tests.dbserver import free_port
from tests.s3server import S3Proxy


def gridserve(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridserve.cli", *args]


def wait_for_http(url: str, process: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gridserve exited early: {process.communicate()[1]}")
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still busy
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture
def running(mongo_uri: str, db_name: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    uri = mongo_uri.rstrip("/") + f"/{db_name}"
    process = subprocess.Popen(
        gridserve("serve", "--storage", uri, "--port", str(port), "--prefix", "/media"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_http(f"http://127.0.0.1:{port}/", process)
    yield process, port
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_serve_streams_and_stops_cleanly_on_sigterm(
    running: tuple[subprocess.Popen[str], int], put_file: PutFile
) -> None:
    process, port = running
    put_file("a/b.mp3", b"0123456789")
    response = requests.get(
        f"http://127.0.0.1:{port}/media/a/b.mp3", headers={"Range": "bytes=2-4"}, timeout=5
    )
    assert response.status_code == 206
    assert response.content == b"234"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "serving GridFS" in stderr


def test_unreachable_database_exits_1_naming_the_masked_uri() -> None:
    port = free_port()
    result = subprocess.run(
        gridserve(
            "serve",
            "--storage",
            f"mongodb://user:s3cret@127.0.0.1:{port}/media?serverSelectionTimeoutMS=500",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "user:***@127.0.0.1" in result.stderr
    assert "s3cret" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "ERROR" in line]) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--storage", "mongodb://[bad"],
        ["serve", "--storage", "ftp://example/x"],
        ["serve", "--port", "notanumber", "--storage", "mongodb://localhost/x"],
        ["serve", "--no-such-flag"],
        ["frobnicate"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = subprocess.run(
        gridserve(*args), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_help_lists_the_flags() -> None:
    result = subprocess.run(
        gridserve("serve", "--help"), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    for flag in ("--storage", "--bucket", "--address", "--port", "--prefix", "--cache-time"):
        assert flag in result.stdout


@pytest.mark.parametrize("module", ["gridserve", "gridserve.cli"])
def test_every_entry_point_runs_the_same_command(module: str) -> None:
    """``python -m gridserve``, ``python -m gridserve.cli`` and the console script agree."""
    env = {**os.environ, "COLUMNS": "100"}
    script = Path(sys.executable).with_name("gridserve")
    ran = [
        subprocess.run(command, capture_output=True, text=True, env=env, timeout=30, check=False)
        for command in ([sys.executable, "-m", module, "--help"], [str(script), "--help"])
    ]
    assert ran[0].returncode == ran[1].returncode == 0
    assert ran[0].stdout == ran[1].stdout
    assert "usage: gridserve" in ran[0].stdout


def test_old_command_module_names_are_the_new_modules() -> None:
    import gridserve.cli.fsck
    import gridserve.cli.migrate
    import gridserve.cli.probe
    import gridserve.cli_fsck
    import gridserve.cli_migrate
    import gridserve.cli_probe

    assert gridserve.cli_fsck is gridserve.cli.fsck
    assert gridserve.cli_migrate is gridserve.cli.migrate
    assert gridserve.cli_probe is gridserve.cli.probe
    assert gridserve.cli_probe.media_service is gridserve.cli.probe.media_service


def test_serve_without_storage_uses_the_local_default(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        gridserve("serve", "--port", str(port)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", process)
        (tmp_path / "gridserve-data" / "hello.txt").write_text("hello from disk")
        response = requests.get(f"http://127.0.0.1:{port}/fs/hello.txt", timeout=5)
        assert response.status_code == 200
        assert response.text == "hello from disk"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    first = stderr.splitlines()[0]
    assert "embedded default" in first and str(tmp_path / "gridserve-data") in first


def test_serve_s3_with_credentials_from_the_environment(s3_server: S3Proxy, s3_bucket: str) -> None:
    options = s3_server.client_options()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": options["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": options["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    storage = S3Storage(s3_bucket, "media", **options)
    asyncio.run(_save_and_close(storage, "a.mp3", b"0123456789"))
    port = free_port()
    process = subprocess.Popen(
        gridserve(
            "serve",
            "--storage",
            f"s3://{s3_bucket}/media",
            "--s3-endpoint",
            s3_server.endpoint,
            "--port",
            str(port),
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", process)
        response = requests.get(
            f"http://127.0.0.1:{port}/fs/a.mp3", headers={"Range": "bytes=-3"}, timeout=5
        )
        assert response.status_code == 206
        assert response.content == b"789"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert process.returncode == 0


async def _save_and_close(storage: S3Storage, name: str, data: bytes) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield data

    try:
        await storage.save(name, body())
    finally:
        await storage.close()
