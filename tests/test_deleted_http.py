"""A file deleted between its lookup and its read, over HTTP, on every storage: a 404 in the
plain error rendering, never a 500. The ACL hook runs after the lookup and before the read, so
a hook that deletes the file (through another storage instance) reproduces the race exactly."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import requests

from gridserve.storage.base import Storage
from tests.conftest import BACKENDS, PutFile

pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

DATA = os.urandom(50_000)


def test_deleted_after_lookup_is_404(
    serve: Callable[..., Any], put_file: PutFile, make_storage: Callable[[], Storage]
) -> None:
    deleted: list[str] = []

    async def delete_then_allow(request: Any, action: str, target: Any) -> bool:
        if action == "read" and not isinstance(target, str):  # a str: asked about a miss
            other = make_storage()
            try:
                await other.delete(await other.resolve(target.filename))
            finally:
                await other.close()
            deleted.append(target.filename)
        return True

    server = serve(acl=delete_then_allow)
    for headers in ({}, {"Range": "bytes=100-199"}, {"Range": "bytes=0-9,-10"}):
        put_file("going.webm", DATA)
        response = requests.get(server.url("/fs/going.webm"), headers=headers, timeout=30)
        assert response.status_code == 404, response.content[:200]
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.content == b"404 Not Found\n"
    assert deleted == ["going.webm"] * 3
    assert requests.get(server.url("/fs/going.webm"), timeout=30).status_code == 404
