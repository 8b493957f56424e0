"""What a newcomer meets first: startup lines, errors that say what to do, --help, redirects."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import requests

from tests.dbserver import free_port
from tests.s3server import S3Proxy
from tests.test_cli import gridserve
from tests.test_daemon import Daemon, daemons  # noqa: F401 - the fixture


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSERVE_")}
    return subprocess.run(
        gridserve(*args),
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_unreachable_database_is_one_short_line(tmp_path: Path) -> None:
    uri = f"mongodb://u:Pw-1@127.0.0.1:{free_port()}/media?serverSelectionTimeoutMS=500"
    for command in (["ls"], ["serve", "--port", str(free_port())]):
        result = run(*command, "--storage", uri, cwd=tmp_path)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        # Before: one line holding the driver's whole topology description.
        assert len(lines) == 1 and len(lines[0]) < 300, result.stderr
        assert "Topology" not in result.stderr and "Pw-1" not in result.stderr
        assert "[Errno 111]" in result.stderr


def test_a_missing_s3_bucket_is_named_as_such_and_the_s3_library_is_quiet(
    tmp_path: Path, s3_server: S3Proxy
) -> None:
    options = s3_server.client_options()
    env = {
        "AWS_ACCESS_KEY_ID": options["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": options["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    storage = ["--storage", "s3://no-such-bucket-zz/media", "--s3-endpoint", s3_server.endpoint]
    (tmp_path / "ep1.webm").write_bytes(b"\x1aE\xdf\xa3" + b"x" * 100)
    for command in (["put", "ep1.webm"], ["ls"]):
        result = run(*command, *storage, cwd=tmp_path, env=env)
        assert result.returncode == 1
        # Before: "no file ep1.webm" for put, "no file " for ls, after an INFO line.
        assert "bucket does not exist" in result.stderr, result.stderr
        assert "s3://no-such-bucket-zz/media" in result.stderr
        assert "INFO" not in result.stderr and "no file" not in result.stderr


def test_help_shows_every_flag_the_readme_documents(tmp_path: Path) -> None:
    result = run("serve", "--help", cwd=tmp_path)
    for flag in ("--no-ui", "--ui", "--xheaders", "--print-config", "--no-xheaders"):
        assert flag in result.stdout
    readme = (Path(__file__).parent.parent / "README.rst").read_text()
    for flag in ("--no-ui", "--xheaders", "--processes", "--file-cache-seconds", "--send-buffer"):
        assert flag in readme, flag


def test_the_startup_line_points_at_the_page_and_the_prefix_redirects(
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    daemon = Daemon(cwd=tmp_path)
    daemons.append(daemon)
    # Before: /fs was Tornado's HTML 404 and /healthz text/html.
    response = requests.get(daemon.url("/fs?limit=5"), allow_redirects=False, timeout=10)
    assert response.status_code in (301, 302)
    assert response.headers["Location"] == "/fs/?limit=5"
    assert requests.get(daemon.url("/fs"), timeout=10).json()["files"] == []
    health = requests.get(daemon.url("/healthz"), timeout=10)
    assert health.headers["Content-Type"].startswith("text/plain")
    code, stderr = daemon.stop()
    assert code == 0, stderr
    assert f"media page at http://127.0.0.1:{daemon.port}/ " in stderr, stderr


def test_xheaders_log_the_client_behind_a_proxy(
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    (tmp_path / "a.txt").write_bytes(b"hi")
    logs = {flag: tmp_path / f"{flag.strip('-')}.log" for flag in ("--xheaders", "--no-xheaders")}
    for flag, log in logs.items():
        daemon = Daemon("--storage", str(tmp_path), flag, "--access-log", str(log))
        daemons.append(daemon)
        headers = {"X-Real-Ip": "203.0.113.9", "X-Forwarded-For": "203.0.113.9"}
        assert requests.get(daemon.url("/fs/a.txt"), headers=headers, timeout=10).ok
        assert daemon.stop()[0] == 0
    assert "203.0.113.9 - - [" in logs["--xheaders"].read_text()
    assert "127.0.0.1 - - [" in logs["--no-xheaders"].read_text()
    assert "203.0.113.9" not in logs["--no-xheaders"].read_text()
