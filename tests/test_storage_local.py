"""Local-disk storage specifics: keys never leave the root, hand-placed files, sidecars,
atomic writes; and storage URIs."""

from __future__ import annotations

import json
import logging
import os
import stat
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


async def test_local_lookups_kept_while_stat_shows_nothing_changed(local_root: Path) -> None:
    """Resolve keeps a name's FileInfo (no sidecar read, the same ETag object) while stat shows
    the file and its sidecars unchanged; any change seen by another instance (another worker)
    is seen at the next lookup."""
    storage, other = LocalStorage(local_root), LocalStorage(local_root)
    saved = await storage.save("a.webm", pieces(b"first"), content_type="video/webm")
    first = await storage.resolve("a.webm")
    assert await storage.resolve("a.webm") is first and first.etag == saved.etag
    # metadata patched by another worker: a new sidecar
    await other.update_metadata(first, {"duration": 2.0})
    patched = await storage.resolve("a.webm")
    assert patched.metadata["duration"] == 2.0 and patched.etag == first.etag
    # a sidecar edited in place (same size, same inode; file times are coarse, so its clock
    # is moved on as a later edit would)
    meta = storage._meta_path("a.webm")
    before = meta.stat()
    meta.write_text(meta.read_text().replace("video/webm", "video/mp4d"))
    os.utime(meta, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert meta.stat().st_ino == before.st_ino and meta.stat().st_size == before.st_size
    assert (await storage.resolve("a.webm")).content_type == "video/mp4d"
    # content replaced by hand with as many bytes: the sidecar no longer applies
    (local_root / "a.webm").write_bytes(b"other")
    replaced = await storage.resolve("a.webm")
    assert replaced.md5 is None and replaced.content_type is None
    # a sidecar of the old layout appearing
    (local_root / "b.bin").write_bytes(b"b")
    assert (await storage.resolve("b.bin")).content_type is None
    st = (local_root / "b.bin").stat()
    old = local_root / ".gridserve" / "meta" / "b.bin.json"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps({"size": 1, "mtime_ns": st.st_mtime_ns, "contentType": "audio/ogg"}))
    assert (await storage.resolve("b.bin")).content_type == "audio/ogg"
    (local_root / "a.webm").unlink()
    with pytest.raises(FileNotFound):
        await storage.resolve("a.webm")


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


# -- requests that cannot name a file are 4xx, never an outage (review findings 7 and 10) --


async def test_local_path_errors_are_not_outages(
    storage: Storage, local_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (local_root / "loop").symlink_to(local_root / "loop")
    with pytest.raises(InvalidKey):
        await storage.resolve("x" * 300 + "/a.txt")  # ENAMETOOLONG on the old code
    with pytest.raises(FileNotFound):
        await storage.resolve("loop/a.txt")  # ELOOP
    with pytest.raises(FileNotFound):
        await storage.resolve("loop")
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in shown if str(local_root) in m]


async def test_local_write_through_a_link_leading_out_is_refused(
    storage: Storage, local_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (local_root / "out").symlink_to(outside)
    for name in ("out/new.txt", "out/deeper/new.txt"):
        with pytest.raises(InvalidKey):
            await storage.save(name, pieces(b"x"))
    assert list(outside.iterdir()) == []


async def test_local_sidecars_cannot_collide_with_content(
    storage: Storage, local_root: Path
) -> None:
    # The old layout kept meta/m.json for "m" and meta/m.json/ for "m.json/b.txt".
    first = await storage.save("m.json/b.txt", pieces(b"one"), content_type="text/plain")
    second = await storage.save("m", pieces(b"two"), content_type="video/webm")
    long_name = "n" * 250 + ".txt"  # its old sidecar name, + ".json.tmp", passed NAME_MAX
    third = await storage.save(long_name, pieces(b"three"), content_type="text/plain")
    for saved in (first, second, third):
        info = await storage.resolve(saved.filename)
        assert (info.md5, info.content_type) == (saved.md5, saved.content_type)
    assert list((local_root / ".gridserve" / "tmp").iterdir()) == []


def old_store(root: Path) -> Path:
    """A store as the layout before 0.3 left it; returns the sidecar's path."""
    (root / "show").mkdir(parents=True)
    clip = root / "show" / "ep1.webm"
    clip.write_bytes(b"old store")
    st = clip.stat()
    old = root / ".gridserve" / "meta" / "show" / "ep1.webm.json"
    old.parent.mkdir(parents=True)
    sidecar = {"contentType": "video/webm", "md5": "0" * 32, "metadata": {"sha256": "1" * 64}}
    old.write_text(json.dumps({**sidecar, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    return old


async def test_local_reads_sidecars_of_the_old_layout(local_root: Path) -> None:
    old = old_store(local_root)
    storage = LocalStorage(local_root)
    info = await storage.resolve("show/ep1.webm")
    assert (info.content_type, info.md5, info.metadata) == (
        "video/webm",
        "0" * 32,
        {"sha256": "1" * 64},
    )
    listed = [i async for i in storage.list()]
    assert [(i.filename, i.md5) for i in listed] == [("show/ep1.webm", "0" * 32)]
    saved = await storage.save("show/ep1.webm", pieces(b"new"), content_type="video/webm")
    assert not old.exists()  # replaced by the new layout's sidecar
    assert (await storage.resolve("show/ep1.webm")).md5 == saved.md5


# -- the user's tree (operability issue, item 5) --------------------------------------------


async def test_local_reads_create_nothing(tmp_path: Path) -> None:
    tree = tmp_path / "media"
    (tree / "show").mkdir(parents=True)
    (tree / "show" / "ep1.webm").write_bytes(b"abc")
    storage = LocalStorage(tree, create=False)
    info = await storage.resolve("show/ep1.webm")
    assert await read_all(storage, info) == b"abc"
    assert [i.filename async for i in storage.list()] == ["show/ep1.webm"]
    with pytest.raises(FileNotFound):
        await storage.resolve("missing.txt")
    await storage.ping()
    await storage.close()
    assert sorted(p.name for p in tree.iterdir()) == ["show"]  # no .gridserve
    await storage.save("new.txt", pieces(b"x"))
    assert (tree / ".gridserve").is_dir()  # the first write makes the private area


def test_local_missing_root_is_an_error_unless_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalStorage(tmp_path / "typo", create=False)
    with pytest.raises(StorageURIError, match="--create"):
        from_uri(str(tmp_path / "typo"), create=False)
    assert not (tmp_path / "typo").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageURIError):
        from_uri(str(tmp_path / "file"))


async def test_local_written_files_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        storage = LocalStorage(tmp_path / "store")
    finally:
        os.umask(previous)
    info = await storage.save("a/b.txt", pieces(b"x"))
    assert stat.S_IMODE((tmp_path / "store" / info.filename).stat().st_mode) == 0o644


async def test_local_follows_links_inside_the_root(
    storage: Storage, local_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (local_root / "media" / "show").mkdir(parents=True)
    (local_root / "media" / "show" / "ep1.webm").write_bytes(b"ep1")
    (local_root / "latest").symlink_to(local_root / "media" / "show")  # a folder link
    (local_root / "best.webm").symlink_to(local_root / "media" / "show" / "ep1.webm")
    (local_root / "media" / "show" / "up").symlink_to(local_root)  # a loop
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (local_root / "out").symlink_to(outside)
    (local_root / "out.txt").symlink_to(outside / "secret.txt")
    for key in ("latest/ep1.webm", "best.webm"):
        assert await read_all(storage, await storage.resolve(key)) == b"ep1"
    names = [i.filename async for i in storage.list()]
    assert names == ["best.webm", "latest/ep1.webm", "media/show/ep1.webm"]
    assert [i.filename async for i in storage.list("latest/")] == ["latest/ep1.webm"]
    caplog.set_level(logging.DEBUG, "gridserve.storage.local")
    for key in ("out/secret.txt", "out.txt"):
        with pytest.raises(FileNotFound):
            await storage.resolve(key)
    assert [i.filename async for i in storage.list("out")] == []
    assert any("outside the root" in r.getMessage() for r in caplog.records)


# -- listings in order, from the prefix, stopping early (review finding 5) ----------------

TREE_NAMES = [
    "a",
    "a-b",
    "a.txt",
    "a0",
    "ab/c",
    "b/a-b",
    "b/a/b",
    "b/a/b-c",
    "b/a/b/c",
    "b/a0",
    "b/é.txt",
    "b/z",
    "bz",
    "café/x",
    "z/y/x/w",
]


@pytest.fixture
def tree(local_root: Path) -> Path:
    for name in TREE_NAMES:
        if name == "b/a/b":
            continue  # a folder below (b/a/b/c); a name is a file or a folder, never both
        path = local_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return local_root


async def test_local_listing_order_is_the_name_order(storage: Storage, tree: Path) -> None:
    names = sorted(n for n in TREE_NAMES if n != "b/a/b")
    prefixes = ["", "a", "a-", "a/", "b", "b/", "b/a", "b/a/", "b/a/b", "c", "café", "z/y/"]
    cursors = ["", "a", "a-b", "a/", "ab/c", "b/a", "b/a/b", "b/a/b-c", "b/a0", "bz", "zz"]
    for prefix in prefixes:
        for after in cursors:
            expected = [n for n in names if n.startswith(prefix) and n > after]
            for limit in (1, 2, 100):
                listed = [i.filename async for i in storage.list(prefix, limit, after)]
                assert listed == expected[:limit], (prefix, after, limit)


async def test_local_listing_pages_through_everything(storage: Storage, tree: Path) -> None:
    pages: list[str] = []
    after = ""
    while page := [i.filename async for i in storage.list("", 2, after)]:
        assert len(pages) < 100, "the cursor does not advance"
        pages += page
        after = page[-1]
    assert pages == sorted(n for n in TREE_NAMES if n != "b/a/b")


async def test_local_listing_refuses_odd_prefixes_quietly(storage: Storage, tree: Path) -> None:
    odd = ("../", "/etc/", "a//", ".gridserve/", "b/../", "x" * 300 + "/", "a/\0/", "a\0b/c")
    for prefix in odd:
        assert [i async for i in storage.list(prefix)] == []


def wide_tree(root: Path) -> list[str]:
    """A folder of 300 entries (more than a small page sorts wholly), files and folders whose
    names interleave around "/"."""
    names = []
    for number in range(100):
        names += [f"w/n{number}", f"w/n{number}-x", f"w/n{number}x/a"]
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return sorted(names)


@pytest.mark.parametrize("limit", [1, 3, 50])
async def test_local_listing_of_a_wide_folder_pages_in_order(
    storage: Storage, local_root: Path, limit: int
) -> None:
    names = wide_tree(local_root)
    pages: list[str] = []
    after = ""
    while page := [i.filename async for i in storage.list("w/", limit + 1, after)][:limit]:
        assert len(pages) <= len(names), "the cursor does not advance"
        pages += page
        after = page[-1]
    assert pages == names
    assert [i.filename async for i in storage.list("w/n1", 4, "w/n1-x")] == names[
        names.index("w/n1-x") + 1 : names.index("w/n1-x") + 5
    ]
