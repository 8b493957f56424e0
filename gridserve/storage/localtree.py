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

import logging
import os
import stat
from collections.abc import Iterator

from gridserve.storage.base import MAX_KEY_BYTES

log = logging.getLogger("gridserve.storage.local")


def sort_key(name: str, is_dir: bool) -> str:
    """How a directory entry sorts among its siblings (see the module docstring)."""
    return name + "/" if is_dir else name


def walk_names(real_root: str, prefix: str = "", after: str = "") -> Iterator[str]:
    """Names (relative, ``/``-separated) of the non-hidden files and file links under
    ``real_root`` (a resolved path) that start with ``prefix`` and sort after ``after``, in
    name order. Entries that vanish or cannot be read while walking are skipped."""
    folder, _, tail = prefix.rpartition("/")
    base = ""
    if folder:
        segments = folder.split("/")
        if any(s in ("", ".", "..") or s.startswith(".") for s in segments):
            return
        base = folder + "/"
    start = os.path.join(real_root, folder) if folder else real_root
    if folder and not _inside(real_root, os.path.realpath(start)):
        log.debug("listing %r: its folder leads outside the root", prefix)
        return
    ancestors: list[tuple[int, int]] = []  # the folders on the way: a link back is a loop
    path = real_root
    try:
        for segment in [""] + (folder.split("/") if folder else []):
            path = os.path.join(path, segment) if segment else path
            st = os.stat(path)
            if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) in ancestors:
                return
            ancestors.append((st.st_dev, st.st_ino))
    except OSError:
        return
    yield from _walk(real_root, start, base, tail, after, ancestors)


def _walk(
    real_root: str,
    directory: str,
    base: str,
    tail: str,
    after: str,
    ancestors: list[tuple[int, int]],
) -> Iterator[str]:
    entries: list[tuple[str, str, bool]] = []  # (sort key, name, is a folder)
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                name = entry.name
                if name.startswith(".") or not name.startswith(tail) or not _is_text(name):
                    continue
                kind = _kind(real_root, entry, ancestors)
                if kind is not None:
                    entries.append((sort_key(name, kind), name, kind))
    except OSError as exc:
        log.debug("listing skips %s: %s", directory, exc.strerror)
        return
    entries.sort()
    for key, name, is_dir in entries:
        full = base + key
        if is_dir:
            if (full < after and not after.startswith(full)) or len(full) > MAX_KEY_BYTES:
                continue  # every name below sorts before the cursor, or is too long a key
            try:
                st = os.stat(os.path.join(directory, name))
            except OSError:
                continue
            ancestors.append((st.st_dev, st.st_ino))
            yield from _walk(real_root, os.path.join(directory, name), full, "", after, ancestors)
            ancestors.pop()
        elif full > after:
            yield full


def _kind(real_root: str, entry: os.DirEntry[str], ancestors: list[tuple[int, int]]) -> bool | None:
    """True for a folder to walk, False for a file to list, None to skip."""
    try:
        if not entry.is_symlink():
            if entry.is_dir(follow_symlinks=False):
                return True
            return False if entry.is_file(follow_symlinks=False) else None
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
