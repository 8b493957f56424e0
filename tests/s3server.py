"""The S3 test server: s3proxy (filesystem backend) on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.dbserver import TestDatabaseError, free_port, provisioned, stop_process

START_TIMEOUT = 60.0
ACCESS_KEY = "gridserve-test"
SECRET_KEY = "gridserve-test-secret"


def s3proxy_jar() -> str:
    """The cached s3proxy jar (scripts/build-test-s3)."""
    return provisioned("GRIDSERVE_S3PROXY", "build-test-s3")


class S3Proxy:
    def __init__(self, jar: str) -> None:
        self.jar = jar
        self.dir = Path(tempfile.mkdtemp(prefix="gridserve-s3proxy-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_options(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
        }

    def start(self) -> None:
        (self.dir / "data").mkdir()
        config = self.dir / "s3proxy.conf"
        config.write_text(
            f"s3proxy.endpoint={self.endpoint}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={ACCESS_KEY}\n"
            f"s3proxy.credential={SECRET_KEY}\n"
            "jclouds.provider=filesystem\n"
            f"jclouds.filesystem.basedir={self.dir / 'data'}\n"
        )
        log_path = self.dir / "s3proxy.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["java", "-jar", self.jar, "--properties", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TestDatabaseError(
                    f"s3proxy exited with {self.process.returncode}:\n{log_path.read_text()}"
                )
            try:
                requests.get(self.endpoint, timeout=5)
                return
            except (requests.ConnectionError, requests.Timeout):
                # A JVM starting on a busy machine may accept before it can answer.
                time.sleep(0.2)
        raise TestDatabaseError(f"s3proxy did not answer at {self.endpoint}")

    def cleanup(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)
