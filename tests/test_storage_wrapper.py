"""StorageWrapper: every method of the interface reaches the wrapped storage (a real local one)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gridserve.storage.base import FileNotFound, Storage
from gridserve.storage.local import LocalStorage
from gridserve.storage.resumable import UploadNotFound
from gridserve.storage.wrapper import StorageWrapper

# What a wrapper leaves at the interface's default, on purpose (see wrapper.py's docstring).
NOT_FORWARDED = {"cache_key", "cache_block_size", "read_buffers"}


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_every_method_of_the_interface_is_forwarded() -> None:
    """A method added to Storage must be forwarded too, or a wrapper would answer with the
    interface's default (keeping nothing, or NotImplementedError) instead of its storage's."""
    methods = {
        name
        for name, member in vars(Storage).items()
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }
    assert methods - NOT_FORWARDED - set(vars(StorageWrapper)) == set()


async def test_a_bare_wrapper_is_its_storage(tmp_path: Path) -> None:
    inner = LocalStorage(tmp_path)
    wrapper = StorageWrapper(inner)
    assert wrapper.description == inner.description
    assert wrapper.keeps_revisions is inner.keeps_revisions
    info = await wrapper.save("a.txt", body(b"hello"), content_type="text/plain")
    assert (await inner.resolve("a.txt")).etag == info.etag
    assert b"".join([p async for p in wrapper.read(info, 1, 4)]) == b"ell"
    assert [i.filename async for i in wrapper.list()] == ["a.txt"]
    assert [i.etag for i in await wrapper.revisions("a.txt")] == [info.etag]
    await wrapper.update_metadata(info, {"media": {"duration": 1.0}})
    assert await wrapper.media_of(await wrapper.resolve("a.txt")) == {"duration": 1.0}
    await wrapper.ping()

    expires = datetime.now(timezone.utc) + timedelta(hours=1)
    state = await wrapper.begin_upload("b.txt", length=2, owner="", metadata={}, expires_at=expires)
    assert (await inner.upload_state(state.id)).name == "b.txt"
    await wrapper.append_upload(state.id, 0, body(b"hi"))
    done = await wrapper.complete_upload(state.id, content_type="text/plain")
    assert done.filename == "b.txt"
    with pytest.raises(UploadNotFound):
        await wrapper.upload_state(state.id)

    await wrapper.delete(info)
    with pytest.raises(FileNotFound):
        await inner.resolve("a.txt")
    await wrapper.close()
