"""Debian's nginx on a free loopback port, in front of a gridserve under test.

Generic on purpose (the cache and hand-off tests reuse it): :class:`Nginx` takes the text of an
``http {}`` context (upstreams and servers) and runs it in a private prefix directory with its
own pid, logs and temp paths; :func:`site_from_deploy` derives that text from the shipped
``deploy/nginx.conf`` (TLS off, the upstream pointed at the gridserve under test, listening on
loopback), so tests exercise the sample operators install::

    with Nginx(site_from_deploy(gridserve_port=daemon.port, listen_port=free_port())) as nginx:
        requests.get(nginx.url("/fs/clip.webm"))

``deploy/nginx-cache.conf`` (the caching variant) works the same way with
``site_from_deploy(..., source=CACHE_CONFIG)``: its cache directory moves into nginx's prefix.

``Nginx.check(text)`` runs ``nginx -t`` on a complete configuration without starting anything.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from tests.dbserver import free_port, stop_process

DEPLOY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
CACHE_CONFIG = DEPLOY_CONFIG.parent / "nginx-cache.conf"
PREFIX = "@PREFIX@"
"""Stands for the private prefix directory of the :class:`Nginx` that runs the text."""
START_TIMEOUT = 20.0


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if not found:
        raise RuntimeError("nginx is not installed: scripts/test installs Debian's nginx")
    return found


def main_config(http: str, prefix: Path) -> str:
    """A complete nginx.conf around ``http`` (the body of ``http {}``), everything in
    ``prefix``: runs unprivileged, in the foreground, with no file outside it."""
    http = http.replace(PREFIX, str(prefix))
    return f"""\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
{http}
}}
"""


def site_from_deploy(
    *,
    gridserve_port: int,
    listen_port: int,
    source: Path = DEPLOY_CONFIG,
    storage_root: Path | None = None,
) -> str:
    """``deploy/nginx.conf`` as a loopback test site: plain HTTP on ``listen_port`` (TLS lines
    dropped), its upstream at ``127.0.0.1:gridserve_port``, a cache directory in nginx's prefix,
    the hand-off location's ``alias`` at ``storage_root`` (when given); every other line as
    shipped."""
    text = source.read_text()
    if storage_root is not None:
        text = re.sub(r"alias\s+/srv/media/;", f"alias {storage_root}/;", text)
    text = re.sub(r"proxy_cache_path\s+/\S+", f"proxy_cache_path {PREFIX}/cache", text)
    text = re.sub(r"(?m)^\s*listen\s+443[^;]*;", f"    listen 127.0.0.1:{listen_port};", text)
    text = re.sub(r"(?m)^\s*(ssl_\w+|http2)\s[^;]*;\n", "", text)
    text = re.sub(r"server 127\.0\.0\.1:8888;", f"server 127.0.0.1:{gridserve_port};", text)
    return text.replace("server_name media.example.com;", "server_name localhost;")


class Nginx:
    """nginx serving ``http`` (the body of an ``http {}`` block) until :meth:`stop`.

    ``port`` is where the site listens (given by the caller inside ``http``, or taken from its
    first ``listen 127.0.0.1:PORT``). ``error_log()`` reads nginx's error log.
    """

    def __init__(self, http: str, port: int | None = None) -> None:
        self.prefix = Path(tempfile.mkdtemp(prefix="gridserve-nginx-"))
        self.prefix.chmod(0o755)  # run as root, nginx's workers are nobody: they write the cache
        if port is None:
            match = re.search(r"listen\s+127\.0\.0\.1:(\d+)", http)
            port = int(match.group(1)) if match else free_port()
        self.port = port
        self.config = self.prefix / "nginx.conf"
        self.config.write_text(main_config(http, self.prefix))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Nginx:
        self.process = subprocess.Popen(
            [nginx_binary(), "-p", str(self.prefix), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                requests.get(self.url("/healthz"), timeout=2)
                return self
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not answer: {self.error_log()}") from None
                time.sleep(0.1)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def check(http: str) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` of a configuration whose ``http {}`` holds ``http``."""
        prefix = Path(tempfile.mkdtemp(prefix="gridserve-nginx-t-"))
        try:
            config = prefix / "nginx.conf"
            config.write_text(main_config(http, prefix))
            return subprocess.run(
                [nginx_binary(), "-t", "-p", str(prefix), "-c", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            shutil.rmtree(prefix, ignore_errors=True)
