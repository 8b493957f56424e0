"""A ``find`` that one database reply answers whole, sent as the ``find`` command itself.

A small file's request makes two queries (its file document, its one chunk). Through PyMongo's
cursor (``Collection.find``: a cursor object, its options validated, the reply handled as the
first of a series that may need ``getMore`` and ``killCursors``) each costs about as much CPU as
the round trip itself on a fast database: measured on mongo-java-server, the two queries of a
100 KiB file took 0.70 ms of CPU per file through cursors and 0.50 ms as commands (medians of 7
rounds of 500, one process). :func:`find_one_reply` sends ``{find, filter, projection, sort,
skip, limit, singleBatch: true}`` with the collection's read preference, read concern and codec
options (what ``find`` would use), and returns the documents of the first batch; the server
closes the cursor with that reply. Only for results that one reply carries
(:data:`ONE_REPLY_BYTES`): a first batch holds at most 16 MiB, and ``singleBatch`` would cut a
larger result short.

``Database.command`` is not a retryable read for PyMongo (a cursor's ``find`` is): a connection
error or a primary that stepped down (``ConnectionFailure`` but a server-selection timeout) is
retried once here, as the driver retries a read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError

ONE_REPLY_BYTES = 8 * 1024 * 1024
"""The most a result fetched this way may weigh (a reply's batch holds up to 16 MiB)."""


def find_command(
    collection_name: str,
    filter: Mapping[str, Any],
    projection: Mapping[str, Any],
    sort: Mapping[str, int],
    limit: int,
    skip: int = 0,
    read_concern: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``find`` command of one reply (pure: tested without a database); an empty ``sort``
    is left out."""
    command: dict[str, Any] = {
        "find": collection_name,
        "filter": filter,
        "projection": projection,
        "limit": limit,
        "singleBatch": True,
    }
    if sort:
        command["sort"] = sort
    if skip:
        command["skip"] = skip
    if read_concern:
        command["readConcern"] = read_concern
    return command


def retryable(exc: BaseException) -> bool:
    """Whether a read that failed with ``exc`` is worth one more try (as PyMongo's retryable
    reads: the connection broke, or the server is no longer the primary)."""
    return isinstance(exc, ConnectionFailure) and not isinstance(exc, ServerSelectionTimeoutError)


async def find_one_reply(
    collection: AsyncCollection[Any],
    filter: Mapping[str, Any],
    projection: Mapping[str, Any],
    sort: Mapping[str, int],
    limit: int,
    skip: int = 0,
) -> list[Mapping[str, Any]]:
    """The documents ``collection.find(filter, projection, sort=..., skip=skip,
    limit=limit)`` returns, by one ``find`` command (see the module docstring). Raises what the
    driver raises (``PyMongoError``)."""
    command = find_command(
        collection.name,
        filter,
        projection,
        sort,
        limit,
        skip,
        collection.read_concern.document,
    )
    for attempt in range(2):
        try:
            reply = await collection.database.command(
                command,
                read_preference=collection.read_preference,
                codec_options=collection.codec_options,
            )
        except ConnectionFailure as exc:
            if attempt or not retryable(exc):
                raise
            continue
        batch: list[Mapping[str, Any]] = reply["cursor"]["firstBatch"]
        return batch
    raise AssertionError("unreachable")  # pragma: no cover
