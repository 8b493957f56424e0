"""Property: for any stored file and any valid range, the body is exactly the file's bytes.

Files cover several chunk sizes and lengths around chunk boundaries (0 bytes included); ranges
are random ``first-last``, ``first-`` and ``-suffix`` forms, checked against Python slicing.
"""

from __future__ import annotations

import random

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BACKENDS, PutFile
from tests.livehttp import LiveServer

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

CHUNK_SIZES = [1000, 4096, 16384]


@pytest.fixture
def stored(put_file: PutFile) -> list[tuple[str, bytes]]:
    rng = random.Random(1234)
    files = []
    for size in CHUNK_SIZES:
        for length in (0, 1, size - 1, size, size + 1, 3 * size, 3 * size + 7):
            data = rng.randbytes(length)
            name = f"p/{size}/{length}.bin"
            put_file(name, data, chunk_size=size)
            files.append((name, data))
    return files


def expected_slice(data: bytes, first: int | None, last: int | None) -> tuple[int, bytes] | None:
    """(status, body) by the RFC, modelled independently of gridserve.ranges."""
    length = len(data)
    if length == 0:
        return 200, data
    if first is None:  # suffix
        assert last is not None
        if last == 0:
            return None
        return 206, data[max(0, length - last) :]
    if first >= length:
        return None
    end = length if last is None else min(last + 1, length)
    return 206, data[first:end]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    pick=st.integers(0, 10_000),
    form=st.sampled_from(["first-last", "first-", "-suffix"]),
    a=st.integers(0, 60_000),
    b=st.integers(0, 60_000),
)
def test_any_valid_range_returns_exact_bytes(
    server: LiveServer, stored: list[tuple[str, bytes]], pick: int, form: str, a: int, b: int
) -> None:
    name, data = stored[pick % len(stored)]
    if form == "first-last":
        first, last = min(a, b), max(a, b)
        header = f"bytes={first}-{last}"
    elif form == "first-":
        first, last = a % (len(data) + 2), None
        header = f"bytes={first}-"
    else:
        first, last = None, a
        header = f"bytes=-{a}"
    response = requests.get(server.url(f"/fs/{name}"), headers={"Range": header}, timeout=10)
    expected = expected_slice(data, first, last)
    if expected is None:
        assert response.status_code == 416
        assert response.headers["Content-Range"] == f"bytes */{len(data)}"
        return
    status, body = expected
    assert response.status_code == status
    assert response.content == body
    assert response.headers["Content-Length"] == str(len(body))
    if status == 206:
        start = len(data) - len(body) if first is None else first
        assert response.headers["Content-Range"] == (
            f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        )
