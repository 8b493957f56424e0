"""What a MongoDB driver error means for the GridFS storage (gridserve.storage.gridfserrors):
real pymongo exception objects, built as the driver builds them from a server's reply."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
)

from gridserve.storage.base import InsufficientStorage, StorageUnavailable
from gridserve.storage.gridfserrors import driver_errors, is_out_of_space, storage_error

ATLAS_QUOTA = "you are over your space quota, using 512 MB of 512 MB"
WIREDTIGER_ENOSPC = "WT_SESSION.create: 28: No space left on device"
FERRETDB_SQLITE = (
    "[msg_insert.go:168 handler.(*Handler).MsgInsert] [db.go:167 fsql.(*DB).InTransaction] "
    "database or disk is full (13)"
)


def reply(message: str, code: int, name: str) -> dict[str, object]:
    """A server's error reply, as the driver keeps it in ``details``."""
    return {"ok": 0.0, "errmsg": message, "code": code, "codeName": name}


def command_error(message: str, code: int, name: str) -> OperationFailure:
    return OperationFailure(message, code, reply(message, code, name))


def bulk_error(code: int, message: str, *, concern: bool = False) -> BulkWriteError:
    """What insert_many raises: the errors of the batch in ``writeErrors`` (or a write concern
    error in ``writeConcernErrors``)."""
    error = {"index": 0, "code": code, "errmsg": message}
    return BulkWriteError(
        {
            "writeErrors": [] if concern else [error],
            "writeConcernErrors": [{"code": code, "errmsg": message}] if concern else [],
            "nInserted": 0,
            "nUpserted": 0,
            "nMatched": 0,
            "nModified": 0,
            "nRemoved": 0,
            "upserted": [],
        }
    )


FULL: list[PyMongoError] = [
    command_error("Out of disk space", 14031, "OutOfDiskSpace"),
    WriteError("Out of disk space", 14031, reply("Out of disk space", 14031, "OutOfDiskSpace")),
    command_error(ATLAS_QUOTA, 8000, "AtlasError"),
    command_error(WIREDTIGER_ENOSPC, 8, "UnknownError"),
    command_error(FERRETDB_SQLITE, 1, "InternalError"),
    bulk_error(14031, "Out of disk space"),
    bulk_error(8000, ATLAS_QUOTA),
    bulk_error(8, WIREDTIGER_ENOSPC),
    bulk_error(14031, "Out of disk space", concern=True),
    WriteConcernError("Out of disk space", 14031, reply("Out of disk space", 14031, "x")),
]

NOT_FULL: list[PyMongoError] = [
    AutoReconnect("connection refused"),
    ServerSelectionTimeoutError("No servers found yet"),
    NotPrimaryError("not primary", reply("not primary", 10107, "NotWritablePrimary")),
    command_error("not authorized on gridserve to execute command", 13, "Unauthorized"),
    # Atlas answers other refusals with 8000 too: only its space quota is "full".
    command_error("user is not allowed to do action [insert]", 8000, "AtlasError"),
    command_error("operation exceeded time limit", 50, "MaxTimeMSExpired"),
    bulk_error(11000, "E11000 duplicate key error collection: fs.chunks"),
    bulk_error(64, "waiting for replication timed out", concern=True),
    # A duplicate key is never "full", whatever its message quotes.
    DuplicateKeyError(
        "E11000 duplicate key: { _id: 'No space left on device' }",
        11000,
        reply("E11000 duplicate key: { _id: 'No space left on device' }", 11000, "DuplicateKey"),
    ),
    OperationFailure("no details", None, None),
]


@pytest.mark.parametrize("exc", FULL, ids=lambda e: f"{type(e).__name__}-{e.code}")
def test_a_database_out_of_space_is_insufficient_storage(exc: PyMongoError) -> None:
    assert is_out_of_space(exc)
    error = storage_error(exc)
    assert type(error) is InsufficientStorage
    assert str(error) == str(exc)


@pytest.mark.parametrize("exc", NOT_FULL, ids=lambda e: type(e).__name__)
def test_every_other_driver_error_stays_unavailable(exc: PyMongoError) -> None:
    assert not is_out_of_space(exc)
    assert type(storage_error(exc)) is StorageUnavailable


def test_the_context_leads_the_text_as_the_call_sites_wrote_it() -> None:
    full = command_error(ATLAS_QUOTA, 8000, "AtlasError")
    assert str(storage_error(full, "upload of a.webm failed")) == (
        f"upload of a.webm failed: {full}"
    )
    gone = AutoReconnect("connection refused")
    assert (
        str(storage_error(gone, "append to x failed")) == "append to x failed: connection refused"
    )


def test_driver_errors_maps_driver_errors_and_passes_everything_else() -> None:
    full = WriteError("Out of disk space", 14031, reply("Out of disk space", 14031, "x"))
    with pytest.raises(InsufficientStorage) as raised, driver_errors("completion of u failed"):
        raise full
    assert raised.value.__cause__ is full
    assert str(raised.value) == f"completion of u failed: {full}"
    with pytest.raises(StorageUnavailable), driver_errors():
        raise AutoReconnect("gone")
    other = ValueError("not the driver's")
    with pytest.raises(ValueError) as passed, driver_errors():
        raise other
    assert passed.value is other
    with driver_errors():
        pass  # nothing raised: nothing to map
