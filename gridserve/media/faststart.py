"""Faststart: rewrite an MP4/MOV whose ``moov`` box comes after ``mdat`` so ``moov`` comes first.

A player that meets ``mdat`` first must seek to the end of the file for the index before it can
show a frame: extra round trips on every play. Moving ``moov`` in front of ``mdat`` shifts every
media byte by the size of ``moov``, so each chunk offset table (``stco``, 32-bit, or ``co64``,
64-bit) is patched; a ``stco`` whose new offsets would not fit in 32 bits is upgraded to
``co64`` (which grows ``moov`` by four bytes per entry, and so shifts the media again: the
plan is computed to a fixed point). Every other byte is kept as it was: the result has the same
top-level boxes in the same order, except that ``moov`` moved in front of the first ``mdat``.

Pure: no I/O of its own. The caller reads through a ``read_at(offset, size) -> bytes`` callable
(or drives :func:`scan` itself, e.g. with async reads) and writes what :meth:`Plan.pieces`
describes: literal ``bytes`` (the new ``moov``) and ``(start, stop)`` ranges of the original.

Entry points:

``scan(length)``
    a generator that yields offsets where it needs a box header (send it up to 16 bytes read
    there) and returns the list of top-level :class:`Box`\\ es.
``top_level_boxes(read_at, length)``
    the same, driven by a synchronous reader.
``moov_first(boxes)``
    True/False: does ``moov`` come before the first ``mdat``? None when it is not an
    ISO media file with both boxes.
``plan(boxes, moov_bytes)``
    the rewrite, or None when nothing needs to move. Raises :class:`FaststartError` for files
    it will not rewrite (fragmented, compressed ``moov``, offsets into nothing).
``rewrite_file(source, target)``
    convenience over two binary file objects; returns whether it rewrote.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO

# Boxes on the path from moov to the chunk offset tables; everything else is kept opaque.
_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})
_UINT32_MAX = 0xFFFFFFFF
MAX_MOOV_BYTES = 256 * 1024 * 1024  # an index larger than this is not a media file we serve
HEADER_PROBE = 16  # bytes a box header can take (size, type, 64-bit size)
COPY_BLOCK = 1024 * 1024


class FaststartError(ValueError):
    """The file is an ISO media file that this module does not rewrite, or is malformed."""


@dataclass(frozen=True)
class Box:
    """A top-level box: its type, where it starts and its total size (header included)."""

    type: bytes
    start: int
    size: int
    header: int  # 8, or 16 with a 64-bit size

    @property
    def stop(self) -> int:
        return self.start + self.size


def parse_header(data: bytes, offset: int, length: int) -> Box:
    """The box whose header is ``data`` (at least 8 bytes read at ``offset``; 16 for a box
    with a 64-bit size) in a file of ``length`` bytes. Raises :class:`FaststartError`."""
    if len(data) < 8:
        raise FaststartError(f"truncated box header at byte {offset}")
    size, kind = struct.unpack(">I4s", data[:8])
    header = 8
    if size == 1:
        if len(data) < 16:
            raise FaststartError(f"truncated 64-bit box header at byte {offset}")
        (size,) = struct.unpack(">Q", data[8:16])
        header = 16
    elif size == 0:
        size = length - offset  # to the end of the file
    if size < header or offset + size > length:
        raise FaststartError(f"box {kind!r} at byte {offset} has an impossible size {size}")
    return Box(kind, offset, size, header)


def scan(length: int) -> Generator[int, bytes, list[Box]]:
    """Walks the top-level boxes of a file of ``length`` bytes: yields an offset, expects the
    bytes there (up to 16) to be sent back, and returns the boxes."""
    boxes: list[Box] = []
    offset = 0
    while offset < length:
        data = yield offset
        box = parse_header(data, offset, length)
        boxes.append(box)
        offset = box.stop
    return boxes


def top_level_boxes(read_at: Callable[[int, int], bytes], length: int) -> list[Box]:
    """:func:`scan` driven by ``read_at(offset, size)``."""
    walker = scan(length)
    try:
        offset = next(walker)
        while True:
            offset = walker.send(read_at(offset, min(HEADER_PROBE, length - offset)))
    except StopIteration as done:
        result: list[Box] = done.value
        return result


def looks_like_iso_media(head: bytes) -> bool:
    """Whether the first bytes of a file are an ISO base media (MP4, MOV, 3GP, M4A) box."""
    return len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")


def moov_first(boxes: list[Box]) -> bool | None:
    """True when ``moov`` precedes the first ``mdat``, False when it follows it, None when the
    file lacks one of them."""
    kinds = [box.type for box in boxes]
    if b"moov" not in kinds or b"mdat" not in kinds:
        return None
    return kinds.index(b"moov") < kinds.index(b"mdat")


# -- the moov tree ------------------------------------------------------------------------------


@dataclass
class _Node:
    type: bytes
    header: int
    payload: bytes = b""  # opaque boxes and chunk offset tables
    children: list[_Node] | None = None

    def size(self) -> int:
        if self.children is None:
            return self.header + len(self.payload)
        return self.header + sum(child.size() for child in self.children)

    def serialize(self, out: bytearray) -> None:
        size = self.size()
        if self.header == 16:
            out += struct.pack(">I4sQ", 1, self.type, size)
        else:
            if size > _UINT32_MAX:
                raise FaststartError("moov too large for its 32-bit header")
            out += struct.pack(">I4s", size, self.type)
        if self.children is None:
            out += self.payload
        else:
            for child in self.children:
                child.serialize(out)

    def tables(self) -> Iterator[_Node]:
        if self.type in (b"stco", b"co64"):
            yield self
        for child in self.children or ():
            yield from child.tables()


def _parse_tree(data: bytes, start: int, stop: int) -> list[_Node]:
    nodes: list[_Node] = []
    offset = start
    while offset < stop:
        if stop - offset < 8:
            raise FaststartError("trailing bytes inside a box")
        box = parse_header(data[offset : offset + 16], offset, stop)
        body = offset + box.header
        if box.type in _CONTAINERS:
            nodes.append(_Node(box.type, box.header, children=_parse_tree(data, body, box.stop)))
        else:
            nodes.append(_Node(box.type, box.header, payload=data[body : box.stop]))
        offset = box.stop
    return nodes


def _offsets(table: _Node) -> list[int]:
    data = table.payload
    if len(data) < 8:
        raise FaststartError(f"truncated {table.type.decode()} box")
    (count,) = struct.unpack(">I", data[4:8])
    width = 8 if table.type == b"co64" else 4
    if len(data) < 8 + width * count:
        raise FaststartError(f"{table.type.decode()} box shorter than its {count} entries")
    return list(struct.unpack(f">{count}{'Q' if width == 8 else 'I'}", data[8 : 8 + width * count]))


def _write_table(table: _Node, offsets: list[int], wide: bool) -> None:
    kind = b"co64" if wide else b"stco"
    entries = struct.pack(f">{len(offsets)}{'Q' if wide else 'I'}", *offsets)
    # version/flags kept; any bytes after the entries (there should be none) too.
    width = 8 if table.type == b"co64" else 4
    tail = table.payload[8 + width * len(offsets) :]
    table.type = kind
    table.payload = table.payload[:4] + struct.pack(">I", len(offsets)) + entries + tail


# -- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The rewritten file: ``pieces`` in order, each literal bytes or a range of the original.
    ``length`` is the new file's size; ``upgraded`` counts ``stco`` tables made ``co64``."""

    pieces: tuple[bytes | tuple[int, int], ...]
    length: int
    upgraded: int


def plan(boxes: list[Box], moov_bytes: bytes) -> Plan | None:
    """The faststart rewrite of the file whose top-level boxes are ``boxes`` and whose ``moov``
    box (header included) is ``moov_bytes``; None when ``moov`` already comes first."""
    order = moov_first(boxes)
    if order is None or order:
        return None
    kinds = [box.type for box in boxes]
    if b"moof" in kinds:
        raise FaststartError("fragmented MP4 (moof): not rewritten")
    if kinds.count(b"moov") != 1:
        raise FaststartError("more than one moov box")
    moov_box = boxes[kinds.index(b"moov")]
    if len(moov_bytes) != moov_box.size:
        raise FaststartError("moov bytes do not match the moov box")
    if moov_box.size > MAX_MOOV_BYTES:
        raise FaststartError(f"moov of {moov_box.size} bytes is too large")
    moov = _parse_tree(moov_bytes, 0, len(moov_bytes))[0]
    if any(child.type == b"cmov" for child in moov.children or ()):
        raise FaststartError("compressed moov (cmov): not rewritten")
    tables = list(moov.tables())
    originals = [_offsets(table) for table in tables]
    first_mdat = kinds.index(b"mdat")
    rest = [box for box in boxes if box is not moov_box]
    head, tail = rest[:first_mdat], rest[first_mdat:]

    wide = [table.type == b"co64" for table in tables]
    while True:
        moov_size = moov.size() + sum(
            4 * len(offsets)
            for offsets, table, want in zip(originals, tables, wide, strict=True)
            if want and table.type == b"stco"
        )
        moved = _mover(head, moov_size, tail)
        new_offsets = [[moved(offset) for offset in offsets] for offsets in originals]
        grown = [
            was or max(offsets, default=0) > _UINT32_MAX
            for was, offsets in zip(wide, new_offsets, strict=True)
        ]
        if grown == wide:
            break
        wide = grown  # each pass only adds co64 tables: a fixed point is reached
    upgraded = 0
    for table, offsets, want in zip(tables, new_offsets, wide, strict=True):
        if want and table.type == b"stco":
            upgraded += 1
        _write_table(table, offsets, want)
    out = bytearray()
    moov.serialize(out)
    if len(out) != moov_size:  # pragma: no cover - a bug, not an input error
        raise AssertionError("moov size changed unexpectedly")
    pieces: list[bytes | tuple[int, int]] = [(box.start, box.stop) for box in head]
    pieces.append(bytes(out))
    pieces += [(box.start, box.stop) for box in tail]
    length = sum(box.size for box in rest) + len(out)
    return Plan(tuple(_merge(pieces)), length, upgraded)


def _mover(head: list[Box], moov_size: int, tail: list[Box]) -> Callable[[int], int]:
    """old offset -> new offset, for offsets inside the boxes that keep their bytes."""
    placed: list[tuple[int, int, int]] = []  # (old start, old stop, new start)
    position = 0
    for box in head:
        placed.append((box.start, box.stop, position))
        position += box.size
    position += moov_size
    for box in tail:
        placed.append((box.start, box.stop, position))
        position += box.size

    def moved(offset: int) -> int:
        for start, stop, new_start in placed:
            if start <= offset < stop:
                return new_start + offset - start
        raise FaststartError(f"chunk offset {offset} points outside the media boxes")

    return moved


def _merge(pieces: list[bytes | tuple[int, int]]) -> Iterator[bytes | tuple[int, int]]:
    """Adjacent ranges of the original joined into one."""
    pending: tuple[int, int] | None = None
    for piece in pieces:
        if isinstance(piece, tuple):
            if pending is not None and pending[1] == piece[0]:
                pending = (pending[0], piece[1])
                continue
            if pending is not None:
                yield pending
            pending = piece
            continue
        if pending is not None:
            yield pending
            pending = None
        yield piece
    if pending is not None:
        yield pending


def plan_for(read_at: Callable[[int, int], bytes], length: int) -> Plan | None:
    """:func:`plan` for a file read through ``read_at``: None when it is no ISO media file or
    needs no rewrite."""
    if length < 8 or not looks_like_iso_media(read_at(0, 8)):
        return None
    boxes = top_level_boxes(read_at, length)
    if moov_first(boxes) is not False:
        return None
    moov = next(box for box in boxes if box.type == b"moov")
    if moov.size > MAX_MOOV_BYTES:
        raise FaststartError(f"moov of {moov.size} bytes is too large")
    return plan(boxes, read_at(moov.start, moov.size))


def write_plan(
    the_plan: Plan, read_at: Callable[[int, int], bytes], write: Callable[[bytes], object]
) -> None:
    """Writes the rewritten file through ``write``, copying ranges in blocks."""
    for piece in the_plan.pieces:
        if isinstance(piece, bytes):
            write(piece)
            continue
        start, stop = piece
        while start < stop:
            block = read_at(start, min(COPY_BLOCK, stop - start))
            if not block:
                raise FaststartError(f"source ended at byte {start}")
            write(block)
            start += len(block)


def file_reader(source: BinaryIO) -> Callable[[int, int], bytes]:
    """A ``read_at`` over a seekable binary file object."""

    def read_at(offset: int, size: int) -> bytes:
        source.seek(offset)
        return source.read(size)

    return read_at


def rewrite_file(source: BinaryIO, target: BinaryIO) -> bool:
    """Writes the faststart form of ``source`` to ``target`` and returns True; returns False
    (writing nothing) when ``source`` needs no rewrite."""
    read_at = file_reader(source)
    source.seek(0, 2)
    length = source.tell()
    the_plan = plan_for(read_at, length)
    if the_plan is None:
        return False
    write_plan(the_plan, read_at, target.write)
    return True
