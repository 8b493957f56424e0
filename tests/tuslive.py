"""What the tus tests over HTTP share: the storages that take resumable uploads, an ACL with
two users, and small clients for creation, PATCH and HEAD."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from gridserve.storage.base import FileInfo, Storage
from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.local import LocalStorage
from gridserve.storage.s3 import S3Storage
from tests.livehttp import LiveServer

BACKENDS: dict[str, type[Storage]] = {
    "gridfs": GridFSStorage,
    "local": LocalStorage,
    "s3": S3Storage,
}
ALICE = {"Authorization": "Bearer alice"}
BOB = {"Authorization": "Bearer bob"}
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}
# An MP4 header libmagic recognises, then bytes: what a phone uploads.
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(range(256)) * 400


def takes_uploads(backend: str) -> bool:
    """Whether the backend (or, wrapped: cached-*, fallback, the one it writes to) takes
    resumable uploads."""
    inner = {"fallback": "local"}.get(backend, backend.removeprefix("cached-"))
    return BACKENDS[inner].begin_upload is not Storage.begin_upload


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    if not takes_uploads(request.param):
        pytest.skip(f"{request.param} takes no resumable uploads yet")
    return str(request.param)


class Users:
    """The test's ACL: everyone reads; alice and bob write (alice not under ``private/``);
    a user in ``revoked`` may no longer write."""

    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    def __call__(self, request: Any, action: str, target: Any) -> bool:
        if action in ("read", "list"):
            return True
        user = {"Bearer alice": "alice", "Bearer bob": "bob"}.get(
            request.headers.get("Authorization", "")
        )
        if action == "write" and isinstance(target, str):
            self.asked.append((user or "-", target))
        if user is None or user in self.revoked:
            return False
        return not (user == "alice" and str(target).startswith("private/"))


@pytest.fixture
def users() -> Users:
    return Users()


@pytest.fixture
def start(serve: Callable[..., LiveServer], users: Users) -> Callable[..., LiveServer]:
    def run(**options: Any) -> LiveServer:
        options.setdefault("acl", users)
        return serve(**options)

    return run


@pytest.fixture
def server(start: Callable[..., LiveServer]) -> LiveServer:
    return start()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(filename: str, filetype: str | None = None) -> str:
    pairs = f"filename {b64(filename)}"
    return pairs + (f",filetype {b64(filetype)}" if filetype else "")


def create(
    server: LiveServer,
    name: str = "videos/clip.mp4",
    length: int | None = len(MP4),
    user: dict[str, str] = ALICE,
    body: bytes | None = None,
    **headers: str,
) -> requests.Response:
    sent = {**TUS, **user, "Upload-Metadata": metadata(name, "video/mp4")}
    if length is None:
        sent["Upload-Defer-Length"] = "1"
    else:
        sent["Upload-Length"] = str(length)
    if body is not None:
        sent.update(OCTETS)
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return requests.post(server.url("/fs/.uploads/"), headers=sent, data=body, timeout=30)


def created(server: LiveServer, **kwargs: Any) -> str:
    answer = create(server, **kwargs)
    assert answer.status_code == 201, answer.text
    return server.url(answer.headers["Location"])


def patch(
    url: str,
    offset: int,
    data: bytes,
    user: dict[str, str] = ALICE,
    extra: dict[str, str] | None = None,
    **headers: str,
) -> requests.Response:
    sent = {**TUS, **user, **OCTETS, "Upload-Offset": str(offset), **(extra or {})}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return requests.patch(url, headers=sent, data=data, timeout=60)


def head(url: str, user: dict[str, str] = ALICE) -> requests.Response:
    return requests.head(url, headers={**TUS, **user}, timeout=30)


def stored(server: LiveServer, name: str) -> FileInfo:
    """The stored file ``name``, as the storage describes it."""
    info: FileInfo = server.run_coroutine(server.storage.resolve(name))
    return info


def listed(server: LiveServer) -> list[str]:
    answer = requests.get(server.url("/fs/?prefix="), timeout=30)
    assert answer.status_code == 200
    return [f["filename"] for f in answer.json()["files"]]


def uploads_left(backend: str, request: pytest.FixtureRequest, local_root: Path) -> int:
    """Uploads the storage still keeps (records, state files, multipart uploads)."""
    if backend == "gridfs":
        db = request.getfixturevalue("sync_db")
        return int(db["fs.uploads"].count_documents({})) + int(db["fs.chunks"].count_documents({}))
    if backend == "local":
        private = local_root / ".gridserve"
        return len([p for p in private.rglob("*") if p.is_file()]) if private.exists() else 0
    from tests.test_storage_s3 import leftovers

    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    objects, multiparts = asyncio.run(leftovers(server, bucket))
    return len(objects) + len(multiparts)


@pytest.fixture
def left(backend: str, request: pytest.FixtureRequest, local_root: Path) -> Callable[[], int]:
    return lambda: uploads_left(backend, request, local_root)
