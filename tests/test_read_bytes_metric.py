"""``gridserve_storage_read_bytes_total{storage}``: what the handlers read from each storage."""

from __future__ import annotations

import os
import re

import pytest
import requests

from tests.conftest import BACKENDS, PutFile
from tests.livehttp import LiveServer

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

DATA = os.urandom(70_000)


def read_bytes(server: LiveServer, backend: str) -> float:
    text = requests.get(server.url("/metrics"), timeout=10).text
    found = re.search(
        rf'^gridserve_storage_read_bytes_total\{{storage="{backend}"\}} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


def test_counts_bytes_read_per_storage(server: LiveServer, put_file: PutFile, backend: str) -> None:
    put_file("clip.webm", DATA)
    assert read_bytes(server, backend) == 0
    assert requests.get(server.url("/fs/clip.webm"), timeout=10).content == DATA
    assert read_bytes(server, backend) == len(DATA)
    ranged = requests.get(server.url("/fs/clip.webm"), headers={"Range": "bytes=10-19,-5"})
    assert ranged.status_code == 206
    assert read_bytes(server, backend) == len(DATA) + 15
    # HEAD, 304 and errors read nothing.
    requests.head(server.url("/fs/clip.webm"), timeout=10)
    requests.get(server.url("/fs/clip.webm"), headers={"If-Match": '"nope"'}, timeout=10)
    assert read_bytes(server, backend) == len(DATA) + 15
