"""Walking a directory tree in the order a listing promises, lazily, from a prefix.

A listing is sorted by name, names compared by code point (which is also UTF-8 byte order,
MongoDB's order for GridFS). Within one directory, sorting a folder ``d`` as ``d/`` and a file
``f`` as ``f`` puts every name below ``d`` exactly where it belongs among its siblings: all of
them start with ``d/``, and no sibling does. So a depth-first walk over directories sorted
that way yields names in global order, and a listing can stop after ``limit`` names having
read only the directories on its way: the cost is the page, not the store.

Only the prefix's folder is opened to start; a folder whose names all sort before ``after``
is never opened. Hidden (dot) entries are skipped. Links are followed while their target
stays inside the root (a link leading out, or back to a folder being walked, is skipped and
logged at DEBUG).
"""

from __future__ import annotations

import heapq
import logging
import os
import stat
from collections.abc import Iterator

from gridserve.storage.base import MAX_KEY_BYTES

log = logging.getLogger("gridserve.storage.local")


def sort_key(name: str, is_dir: bool) -> str:
    """How a directory entry sorts among its siblings (see the module docstring)."""
    return name + "/" if is_dir else name


def walk_names(real_root: str, prefix: str = "", after: str = "", want: int = 0) -> Iterator[str]:
    """Names (relative, ``/``-separated) of the non-hidden files and file links under
    ``real_root`` (a resolved path) that start with ``prefix`` and sort after ``after``, in
    name order. Entries that vanish or cannot be read while walking are skipped (the caller
    opens each name and skips what is not a regular file). ``want`` is a hint: how many names
    the caller expects to take (a large folder is then partly sorted, not wholly)."""
    folder, _, tail = prefix.rpartition("/")
    base = ""
    if folder:
        segments = folder.split("/")
        # No stored name holds a NUL (no path can): such a folder is empty, not an error.
        if any(s in ("", ".", "..") or s.startswith(".") or "\0" in s for s in segments):
            return
        base = folder + "/"
    start = os.path.join(real_root, folder) if folder else real_root
    if folder and not _inside(real_root, os.path.realpath(start)):
        log.debug("listing %r: its folder leads outside the root", prefix)
        return
    ancestors: list[tuple[int, int]] = []  # the folders on the way: a link back is a loop
    path = real_root
    try:
        for segment in ["", *(folder.split("/") if folder else [])]:
            path = os.path.join(path, segment) if segment else path
            st = os.stat(path)
            if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) in ancestors:
                return
            ancestors.append((st.st_dev, st.st_ino))
    except OSError:
        return
    yield from _walk(real_root, start, base, tail, after, ancestors, max(want, 0))


def _walk(
    real_root: str,
    directory: str,
    base: str,
    tail: str,
    after: str,
    ancestors: list[tuple[int, int]],
    want: int,
) -> Iterator[str]:
    keys: list[str] = []  # sort keys: a folder's name ends in "/" (no name contains one)
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                name = entry.name
                if name[0] == "." or (tail and not name.startswith(tail)):
                    continue
                if entry.is_symlink():
                    kind = _link_kind(real_root, entry, ancestors)
                    if kind is None:
                        continue
                    key = name + "/" if kind else name
                else:
                    try:
                        key = name + "/" if entry.is_dir(follow_symlinks=False) else name
                    except OSError:
                        continue
                if after and _before(base + key, after):
                    continue
                keys.append(key)
    except OSError as exc:
        log.debug("listing skips %s: %s", directory, exc.strerror)
        return
    for key in _in_order(keys, want):
        full = base + key
        if not _is_text(full):
            continue
        if key[-1] != "/":
            yield full
            continue
        if len(full) > MAX_KEY_BYTES:
            continue
        name = key[:-1]
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            continue
        ancestors.append((st.st_dev, st.st_ino))
        yield from _walk(real_root, os.path.join(directory, name), full, "", after, ancestors, want)
        ancestors.pop()


def _before(full: str, after: str) -> bool:
    """Whether the file ``full``, or every name below the folder ``full`` (ending in ``/``),
    sorts at or before the cursor ``after``."""
    if full[-1] == "/":
        return full < after and not after.startswith(full)
    return full <= after


def _in_order(keys: list[str], want: int) -> Iterator[str]:
    """``keys`` sorted, lazily: when the caller likely takes only the first ``want`` of many,
    those are picked with a heap, and the rest sorted only if it comes to that."""
    if not want or len(keys) <= 4 * want + 64:
        keys.sort()
        yield from keys
        return
    first = heapq.nsmallest(want, keys)
    yield from first
    last = first[-1]
    yield from sorted(k for k in keys if k > last)


def _link_kind(
    real_root: str, entry: os.DirEntry[str], ancestors: list[tuple[int, int]]
) -> bool | None:
    """For a link: True for a folder to walk, False for a file to list, None to skip."""
    try:
        target = os.path.realpath(entry.path)
        if not _inside(real_root, target):
            log.debug("listing skips %s: a link leading outside the root", entry.path)
            return None
        st = entry.stat()  # follows the link
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        if (st.st_dev, st.st_ino) in ancestors:
            log.debug("listing skips %s: a link back to a folder above it", entry.path)
            return None
        return True
    return False if stat.S_ISREG(st.st_mode) else None


def _inside(real_root: str, real: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _is_text(name: str) -> bool:
    """False for names that are not valid UTF-8 on disk (they decode with surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
