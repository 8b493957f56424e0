"""The shipped deploy files, checked with the tools that use them: Debian's nginx in front of a
running gridserve, ``nginx -t`` of the sample as shipped, the unit and logrotate samples."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import requests

from tests.dbserver import free_port
from tests.nginxserver import DEPLOY_CONFIG, Nginx, site_from_deploy
from tests.test_daemon import Daemon, daemons  # noqa: F401 - the fixture

DEPLOY = DEPLOY_CONFIG.parent
TOKEN = "deploy-token"


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "media.crt", directory / "media.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=media.example.com",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return cert, key


def test_the_shipped_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    site = DEPLOY_CONFIG.read_text()
    # Only the certificate paths change: they must exist for nginx -t.
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", site)
    result = Nginx.check(site)
    # Before: 'unknown directive "http2"' on Debian 12's nginx 1.22.
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_with_the_sample_config_serves_the_page_files_and_uploads(
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "clip.webm").write_bytes(b"\x1aE\xdf\xa3" + bytes(range(256)) * 40)
    access = tmp_path / "access.log"
    daemon = Daemon(
        "--storage",
        str(tmp_path / "media"),
        "--ui",
        "--xheaders",
        "--access-log",
        str(access),
        env={"GRIDSERVE_UPLOAD_TOKEN": TOKEN},
    )
    daemons.append(daemon)
    with Nginx(site_from_deploy(gridserve_port=daemon.port, listen_port=free_port())) as nginx:
        # Before: only /fs/ was proxied; the page and its assets were nginx 404s.
        page = requests.get(nginx.url("/"), timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        for asset in re.findall(r'(?:src|href)="(/_ui/[^"]+)"', page.text):
            assert requests.get(nginx.url(asset), timeout=10).status_code == 200, asset
        assert requests.get(nginx.url("/_ui/config.json"), timeout=10).json()["uploads"]
        ranged = requests.get(
            nginx.url("/fs/clip.webm"), headers={"Range": "bytes=4-9"}, timeout=10
        )
        assert ranged.status_code == 206 and ranged.content == bytes(range(6))
        assert requests.get(nginx.url("/fs"), timeout=10).json()["files"]
        put = requests.put(
            nginx.url("/fs/up/new.webm"),
            data=b"\x1aE\xdf\xa3" + b"\0" * 70_000,
            headers={"Authorization": f"Bearer {TOKEN}", "X-Real-IP": "198.51.100.7"},
            timeout=30,
        )
        assert put.status_code == 201, put.text
        assert requests.get(nginx.url("/healthz"), timeout=10).text == "ok\n"
    code, stderr = daemon.stop()
    assert code == 0, stderr
    # nginx replaces the client's X-Real-IP with the address it saw: a client cannot pose as
    # another, and with --xheaders gridserve logs nginx's view of the client.
    assert "198.51.100.7" not in access.read_text()
    assert re.search(r'^127\.0\.0\.1 .*"PUT /fs/up/new\.webm', access.read_text(), re.M)


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("gridserve.service", ["libmagic1", "mkdir -p /etc/gridserve", "ReadWritePaths", "HUP"]),
        ("gridserve.env", ["GRIDSERVE_XHEADERS=true"]),
        ("gridserve.logrotate", ["systemctl reload gridserve", "/var/log/gridserve/*.log"]),
    ],
)
def test_the_deploy_files_say_what_they_need(name: str, needles: list[str]) -> None:
    text = (DEPLOY / name).read_text()
    for needle in needles:
        assert needle in text, needle


def test_the_install_steps_run_as_written(tmp_path: Path) -> None:
    """The unit's install comment, run against a scratch root: every step that touches /etc
    works once its directories exist (mkdir -p is part of the steps)."""
    steps = [
        line.removeprefix("#").strip()
        for line in (DEPLOY / "gridserve.service").read_text().splitlines()
        if line.startswith("#   ") and ("install " in line or "mkdir " in line)
    ]
    assert steps, "no install steps"
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "etc" / "logrotate.d").mkdir(parents=True)
    for step in steps:
        command = step.split("#")[0].replace(" /etc/", f" {root}/etc/")
        if "pip install" in command or "python3 -m venv" in command:
            continue
        result = subprocess.run(
            command, shell=True, cwd=DEPLOY.parent, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (command, result.stderr)
    installed = root / "etc" / "gridserve" / "gridserve.env"
    assert installed.stat().st_mode & 0o777 == 0o600
