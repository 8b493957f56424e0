"""GridFS listings (review finding 5): in name order from the {filename: 1, uploadDate: 1}
index, the newest revision of each name, bounded by the prefix and the cursor; ``explain``
shows an index scan with no in-memory sort where the database is a real MongoDB."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from pymongo import ASCENDING

from gridserve.storage.base import Storage
from gridserve.storage.gridfsdocs import LISTING_SORT, listing_filter
from tests.conftest import PutFile, SyncDB
from tests.dbserver import FerretDB

NAMES = ["a", "a-b", "a.b", "a/b", "a/b/c", "a0", "a(1).txt", "a[x]", "b", "é"]


@pytest.fixture
def revisions(put_file: PutFile, sync_db: SyncDB) -> dict[str, Any]:
    """Every name of NAMES stored three times, the middle one dated last (newest by date,
    not by insertion order); returns the newest id per name."""
    newest: dict[str, Any] = {}
    base = datetime.datetime(2024, 1, 1)
    for name in NAMES:
        ids = [put_file(name, f"{name} {n}".encode()) for n in range(3)]
        for offset, file_id in zip((0, 2, 1), ids, strict=True):
            moment = base + datetime.timedelta(minutes=offset)
            sync_db["fs.files"].update_one({"_id": file_id}, {"$set": {"uploadDate": moment}})
        newest[name] = ids[1]
    return newest


async def listing(storage: Storage, prefix: str = "", limit: int = 100, after: str = "") -> Any:
    try:
        return [(i.filename, i.id) async for i in storage.list(prefix, limit, after)]
    finally:
        await storage.close()


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a(", "a[", "a.", "b", "é", "zz"])
@pytest.mark.parametrize("after", ["", "a", "a-b", "a/b", "b"])
async def test_gridfs_listing_is_in_order_with_the_newest_revisions(
    make_storage: Callable[[], Storage], revisions: dict[str, Any], prefix: str, after: str
) -> None:
    expected = [(n, revisions[n]) for n in sorted(NAMES) if n.startswith(prefix) and n > after]
    for limit in (1, 2, 100):
        assert await listing(make_storage(), prefix, limit, after) == expected[:limit]


def walk_stages(plan: Any) -> list[str]:
    if isinstance(plan, dict):
        found = [plan["stage"]] if isinstance(plan.get("stage"), str) else []
        for value in plan.values():
            found += walk_stages(value)
        return found
    if isinstance(plan, list):
        return [stage for item in plan for stage in walk_stages(item)]
    return []


@pytest.mark.parametrize(("prefix", "after"), [("", ""), ("show/", ""), ("show/", "show/ep1")])
def test_gridfs_listing_uses_the_index_without_a_sort(
    test_database: FerretDB | None, sync_db: SyncDB, prefix: str, after: str
) -> None:
    if test_database is not None:
        pytest.skip("explain plans need a real MongoDB (MONGODB_URI); FerretDB has no planner")
    files = sync_db["fs.files"]
    files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
    files.insert_many(
        [
            {"filename": f"show/ep{n}", "uploadDate": datetime.datetime(2024, 1, 1)}
            for n in range(50)
        ]
    )
    plan = sync_db.command(
        "explain",
        {
            "find": "fs.files",
            "filter": listing_filter(prefix, after),
            "sort": dict(LISTING_SORT),
        },
        verbosity="queryPlanner",
    )
    stages = walk_stages(plan["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in stages and "SORT" not in stages and "COLLSCAN" not in stages, stages
