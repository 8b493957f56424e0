"""File names: the one normalisation every way into a storage goes through.

PUT, POST (its folder and each form file name), the CLI's ``put``, and any later importer
(tus, migrate) turn a requested name into a storage key with :func:`normalize_name` (a file)
or :func:`normalize_folder` (a folder a form uploads into), so one visible name is one key
whatever way it arrived. Pure: no I/O.

A key is NFC-normalised Unicode; it has no empty, ``.``, ``..`` or hidden (dot) segment, no
control or invisible formatting character, no segment longer than :data:`MAX_SEGMENT_BYTES`
(what every file system of ours can hold: ``NAME_MAX``) and at most
:data:`~gridserve.storage.base.MAX_KEY_BYTES` bytes in all. A name that is not already a key
is refused (:class:`InvalidName`), never silently rewritten into another name, except for the
NFC normalisation itself.
"""

from __future__ import annotations

import unicodedata

from gridserve.storage.base import MAX_KEY_BYTES

MAX_SEGMENT_BYTES = 255
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class InvalidName(ValueError):
    """A requested name that can never be a key; the message says why (a 400)."""


def normalize_name(name: str, *, basename_only: bool = False) -> str:
    """The storage key for the file ``name``, or :class:`InvalidName`.

    With ``basename_only`` (form uploads, whose ``filename`` should be a bare name but may be a
    client's path) only the last segment of ``/`` or ``\\`` separated paths is kept.
    """
    if basename_only:
        name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise InvalidName("empty file name")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        raise InvalidName("control character in file name")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidName("empty, '.' or '..' segment in file name")
        if segment.startswith("."):
            raise InvalidName("hidden (dot) segment in file name")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidName(f"file name segment longer than {MAX_SEGMENT_BYTES} bytes")
    if len(name.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidName(f"file name longer than {MAX_KEY_BYTES} bytes")
    return name


def normalize_folder(folder: str) -> str:
    """The key prefix for a folder a form uploads into: ``""`` (the top) or a normalised name
    ending in ``/``. ``folder`` may be given with or without its trailing ``/`` (exactly one)."""
    if folder == "":
        return ""
    return normalize_name(folder.removesuffix("/")) + "/"
