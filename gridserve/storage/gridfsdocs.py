"""GridFS documents as gridserve reads them: a ``<bucket>.files`` document as a
:class:`FileInfo`, the queries and orders of listings and revisions, ids in keys. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING

from gridserve.storage.base import FileInfo, UploadDigests, stored_content_type, utc

DEFAULT_CHUNK_SIZE = 255 * 1024
FILE_FIELDS = {
    "_id": 1,
    "filename": 1,
    "length": 1,
    "chunkSize": 1,
    "uploadDate": 1,
    "contentType": 1,
    "md5": 1,
    "metadata": 1,
}


def new_file_document(
    file_id: Any,
    name: str,
    length: int,
    chunk_size: int,
    digests: UploadDigests,
    metadata: Mapping[str, Any] | None,
    content_type: str | None,
) -> dict[str, Any]:
    """The ``<bucket>.files`` document of a new file whose chunks are stored: uploaded now,
    with the ``md5`` of its content and its ``sha256`` in ``metadata`` (what ``save`` and
    ``complete_upload`` insert); ``contentType`` only when one is given."""
    doc: dict[str, Any] = {
        "_id": file_id,
        "filename": name,
        "length": length,
        "chunkSize": chunk_size,
        "uploadDate": datetime.now(timezone.utc),
        "md5": digests.md5,
        "metadata": {**(metadata or {}), "sha256": digests.sha256},
    }
    if content_type:
        doc["contentType"] = content_type
    return doc


def object_id(key: str) -> ObjectId | None:
    """The ObjectId ``key`` spells (24 hex digits), else None."""
    if len(key) != 24:
        return None
    try:
        return ObjectId(key)
    except (InvalidId, TypeError):
        return None


def file_info_from_document(doc: Mapping[str, Any]) -> FileInfo:
    """Builds a :class:`FileInfo` from a ``<bucket>.files`` document."""
    metadata = doc.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    md5 = doc.get("md5")
    upload_date = doc.get("uploadDate")
    return FileInfo(
        id=doc["_id"],
        filename=str(doc.get("filename") or ""),
        length=int(doc.get("length") or 0),
        chunk_size=int(doc.get("chunkSize") or DEFAULT_CHUNK_SIZE),
        upload_date=utc(upload_date)
        if isinstance(upload_date, datetime)
        else datetime(1970, 1, 1, tzinfo=timezone.utc),
        content_type=stored_content_type(doc.get("contentType"), metadata),
        md5=md5 if isinstance(md5, str) else None,
        metadata=metadata,
    )


LISTING_SORT = [("filename", ASCENDING), ("uploadDate", ASCENDING)]


def listing_filter(prefix: str, after: str) -> dict[str, Any]:
    """The files query of a listing: names starting with ``prefix`` (an anchored, escaped
    regular expression, which MongoDB turns into index bounds) and sorting after ``after``.
    Two clauses under ``$and`` rather than one ``filename`` document: some servers
    (mongo-java-server) ignore a ``$gt`` beside a ``$regex``."""
    clauses: list[dict[str, Any]] = []
    if prefix:
        clauses.append({"filename": {"$regex": "^" + re.escape(prefix)}})
    if after:
        clauses.append({"filename": {"$gt": after}})
    if len(clauses) > 1:
        return {"$and": clauses}
    return clauses[0] if clauses else {}


def revision_order(doc: Mapping[str, Any]) -> tuple[datetime, str]:
    """How revisions of one name order (newest last): by upload date, then id."""
    uploaded = doc.get("uploadDate")
    moment = (
        utc(uploaded)
        if isinstance(uploaded, datetime)
        else datetime.min.replace(tzinfo=timezone.utc)
    )
    return moment, str(doc.get("_id", ""))
