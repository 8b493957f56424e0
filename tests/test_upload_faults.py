"""Uploads under faults: every early end leaves nothing behind, ends its request, and the
client reads the refusal (issue "Uploads under faults")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from gridserve.acl import default_acl
from gridserve.uploads import UploadPolicy
from tests.livehttp import LiveServer
from tests.test_uploads_http import AUTH, TOKEN, eventually

MIB = 1024 * 1024


@pytest.fixture
def nothing_left(
    backend: str, request: pytest.FixtureRequest, local_root: Path
) -> Callable[[], None]:
    from tests.test_uploads_http import nothing_left as check

    fixture = check.__wrapped__  # type: ignore[attr-defined]
    result: Callable[[], None] = fixture(backend, request, local_root)
    return result


def test_streamed_413_leaves_no_orphan_chunk_on_gridfs(
    serve: Callable[..., LiveServer], nothing_left: Callable[[], None]
) -> None:
    """Issue 14, case 1: chunked PUT of 9 MiB in 1 MiB pieces over an 8 MiB limit."""
    server = serve(
        acl=default_acl(upload_token=TOKEN), upload_policy=UploadPolicy(max_size=8 * MIB)
    )
    piece = b"\x1aE\xdf\xa3" + bytes(MIB - 4)

    def pieces() -> Iterator[bytes]:
        for _ in range(9):
            yield piece

    answer = requests.put(server.url("/fs/toolarge2.bin"), data=pieces(), headers=AUTH, timeout=30)
    assert answer.status_code == 413
    eventually(nothing_left)
