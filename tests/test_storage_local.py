"""Local-disk storage specifics: keys never leave the root, hand-placed files, sidecars,
atomic writes; and storage URIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gridserve.storage import (
    CorruptFile,
    FileNotFound,
    InvalidKey,
    LocalStorage,
    Storage,
    StorageURIError,
    from_uri,
)
from tests.test_storage_contract import pieces, read_all


@pytest.fixture
def storage(local_root: Path) -> Storage:
    return LocalStorage(local_root)


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("../outside.txt", InvalidKey),
        ("a/../../outside.txt", InvalidKey),
        ("/etc/passwd", InvalidKey),
        ("a//b", InvalidKey),
        ("./a", InvalidKey),
        (".gridserve/meta/x.json", FileNotFound),
        ("dir/.env", FileNotFound),
        ("escape/outside.txt", FileNotFound),  # through a symlink out of the root
        ("sub", FileNotFound),  # a directory, not a file
    ],
)
async def test_local_keys_never_leave_the_root(
    storage: Storage, local_root: Path, tmp_path: Path, key: str, error: type[Exception]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "outside.txt").write_text("secret")
    (local_root / "escape").symlink_to(outside)
    (local_root / "sub").mkdir()
    with pytest.raises(error):
        await storage.resolve(key)
    with pytest.raises((InvalidKey, FileNotFound)):
        await storage.save(key, pieces(b"x"))
    assert (outside / "outside.txt").read_text() == "secret"


async def test_local_serves_files_dropped_in_by_hand(storage: Storage, local_root: Path) -> None:
    (local_root / "by-hand").mkdir()
    (local_root / "by-hand" / "clip.mp4").write_bytes(b"abc")
    info = await storage.resolve("by-hand/clip.mp4")
    assert (info.length, info.md5, info.content_type) == (3, None, None)
    assert await read_all(storage, info) == b"abc"


async def test_local_sidecar_of_replaced_content_is_ignored(
    storage: Storage, local_root: Path
) -> None:
    saved = await storage.save("x.bin", pieces(b"first"), content_type="video/webm")
    (local_root / "x.bin").write_bytes(b"replaced by hand")
    info = await storage.resolve("x.bin")
    assert info.md5 is None and info.etag != saved.etag
    with pytest.raises(CorruptFile):
        await read_all(storage, saved)  # the looked-up file changed under the reader


async def test_local_aborted_save_leaves_no_temporary_file(
    storage: Storage, local_root: Path
) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x"
        raise ValueError

    with pytest.raises(ValueError):
        await storage.save("p.bin", failing())
    assert list((local_root / ".gridserve" / "tmp").iterdir()) == []


def test_from_uri(tmp_path: Path) -> None:
    local = from_uri(str(tmp_path / "a"))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "a"
    assert isinstance(from_uri(f"file:{tmp_path}/b"), LocalStorage)
    assert isinstance(from_uri(f"file://{tmp_path}/c"), LocalStorage)
    for bad in ("ftp://x/y", "s4://nope", "mongodb://[bad", "file:"):
        with pytest.raises(StorageURIError):
            from_uri(bad)
