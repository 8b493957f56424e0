"""One-reply finds (gridserve.storage.onereply): the command they send, what they return
against ``Collection.find`` on the test database, and what a small file's read asks."""

from __future__ import annotations

import os
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import (
    AutoReconnect,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
)
from pymongo.read_concern import ReadConcern

from gridserve.storage.gridfs import GridFSStorage
from gridserve.storage.onereply import find_command, find_one_reply, retryable
from tests.test_storage_contract import pieces, read_all
from tests.test_storage_gridfs import CommandLog, watched  # noqa: F401 (fixture)


def test_the_command_is_a_single_batch_find_with_what_was_asked() -> None:
    command = find_command("fs.files", {"filename": "a"}, {"_id": 1}, {"uploadDate": -1}, 1)
    assert command == {
        "find": "fs.files",
        "filter": {"filename": "a"},
        "projection": {"_id": 1},
        "limit": 1,
        "singleBatch": True,
        "sort": {"uploadDate": -1},
    }
    assert "sort" not in find_command("fs.files", {"_id": 1}, {}, {}, 1)
    assert next(iter(command)) == "find"  # the command's name comes first
    with_all = find_command("c", {}, {}, {}, 2, skip=3, read_concern={"level": "majority"})
    assert with_all["skip"] == 3 and with_all["readConcern"] == {"level": "majority"}


def test_connection_errors_are_retried_but_not_a_server_selection_timeout() -> None:
    assert retryable(AutoReconnect("connection reset"))
    assert retryable(NotPrimaryError("not primary", {}))
    assert not retryable(ServerSelectionTimeoutError("no server"))
    assert not retryable(OperationFailure("bad query", 2))


async def test_finds_what_a_cursor_finds(async_db: Any) -> None:
    files = async_db["fs.files"]
    await files.insert_many(
        [{"_id": i, "filename": "a" if i % 2 else "b", "at": i % 5, "x": i} for i in range(12)]
    )
    for skip in (0, 1, 4, 9):
        expected = (
            await files.find(
                {"filename": "a"}, {"x": 1}, sort=[("at", DESCENDING), ("_id", DESCENDING)]
            )
            .skip(skip)
            .limit(2)
            .to_list(None)
        )
        found = await find_one_reply(
            files, {"filename": "a"}, {"x": 1}, {"at": -1, "_id": -1}, 2, skip
        )
        assert found == expected
    assert await find_one_reply(files, {"filename": "none"}, {"x": 1}, {}, 1) == []
    majority = files.with_options(read_concern=ReadConcern("majority"))
    assert [d["_id"] for d in await find_one_reply(majority, {"_id": 3}, {}, {}, 1)] == [3]


async def test_a_small_file_costs_two_finds_and_nothing_else(
    watched: tuple[Any, CommandLog],  # noqa: F811
) -> None:
    """Lookup by name and the one chunk: one ``find`` each, answered in one reply (no
    ``getMore``, no ``killCursors``); a read spanning more replies still uses a cursor."""
    db, log = watched
    storage = GridFSStorage(db, chunk_size=1000, read_ahead=4000)
    data = os.urandom(2500)
    await storage.save("small.bin", pieces(data))
    log.commands.clear()
    info = await storage.resolve("small.bin")
    assert await read_all(storage, info) == data
    assert [next(iter(c)) for c in log.commands] == ["find", "find"]
    assert all(c.get("singleBatch") for c in log.commands)
    large = os.urandom(9500)
    info = await storage.save("large.bin", pieces(large))
    log.commands.clear()
    assert await read_all(storage, info) == large
    assert [next(iter(c)) for c in log.commands][:2] == ["find", "getMore"]
