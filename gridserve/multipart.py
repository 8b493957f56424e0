"""A streaming ``multipart/form-data`` reader on python-multipart's push parser.

Tornado hands the body over in pieces (``data_received``); :meth:`MultipartReader.feed` pushes
each through the parser and queues what it found (part starts with their headers, data, part
ends) in a small bounded queue, so memory stays bounded whatever the body size and the producer
waits while the consumer (a storage's ``save``) is slow. :meth:`MultipartReader.parts` yields
:class:`Part` objects whose :meth:`Part.data` streams that part's bytes.

Part headers are kept as the bytes that arrived: browsers send form file names as raw UTF-8
(RFC 7578 section 4.2, the HTML standard), which :func:`parse_disposition` decodes; an RFC 6266
``filename*=UTF-8''...`` parameter wins over ``filename``. Any byte sequence parses: the
worst a client gets is a name that the name rules then refuse.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_QUEUED_EVENTS = 8
MAX_HEADER_BYTES = 16 * 1024


class MultipartError(Exception):
    """A malformed or truncated multipart body (a 400)."""


@dataclass
class _Event:
    kind: str  # "part", "data", "end-part", "end", "error"
    data: bytes = b""
    headers: dict[str, bytes] = field(default_factory=dict)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_disposition(raw: bytes) -> dict[str, str]:
    """The parameters of a ``Content-Disposition`` header value, names lower-cased, values
    decoded (UTF-8, else Latin-1). Quoted values keep their bytes except ``\\"`` and
    ``\\\\`` (so a Windows path's backslashes survive); ``filename*`` (RFC 5987/8187
    ``charset'lang'%XX``) replaces ``filename`` when it decodes."""
    params: dict[str, str] = {}
    position = raw.find(b";")
    while 0 <= position < len(raw):
        match = _PARAMETER.match(raw, position + 1)
        if match is None:
            position = raw.find(b";", position + 1)
            continue
        name = _decode(match.group(1)).lower()
        if match.group(2) is not None:
            value = _UNESCAPE.sub(rb"\1", match.group(2))
        else:
            value = (match.group(3) or b"").strip()
        params.setdefault(name, _decode(value))
        position = raw.find(b";", match.end())
    extended = params.pop("filename*", None)
    if extended is not None:
        decoded = _decode_extended(extended)
        if decoded is not None:
            params["filename"] = decoded
    return params


_PARAMETER = re.compile(rb'\s*([^\s=;"]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"?|([^;]*))', re.DOTALL)
_UNESCAPE = re.compile(rb'\\(["\\])')


def _decode_extended(value: str) -> str | None:
    """An RFC 8187 ``charset'language'value``, or None if it is not one."""
    charset, quote1, rest = value.partition("'")
    _, quote2, encoded = rest.partition("'")
    if not (quote1 and quote2) or charset.lower() not in ("utf-8", "iso-8859-1"):
        return None
    try:
        return unquote_to_bytes(encoded).decode(charset.lower())
    except UnicodeDecodeError:
        return None


@dataclass
class Part:
    """One part of the form: its field ``name``, ``filename`` (None for plain fields) and
    declared ``content_type``."""

    name: str | None
    filename: str | None
    content_type: str | None
    _reader: MultipartReader
    _done: bool = False

    async def data(self) -> AsyncIterator[bytes]:
        while not self._done:
            event = await self._reader._next()
            if event.kind == "data":
                yield event.data
            elif event.kind == "end-part":
                self._done = True
            else:
                raise MultipartError("part ended without its boundary")

    async def skip(self) -> None:
        async for _ in self.data():
            pass


class MultipartReader:
    """Reads a ``multipart/form-data`` body given its ``Content-Type`` header value."""

    def __init__(self, content_type: str) -> None:
        ctype, params = parse_options_header(content_type)
        if ctype != b"multipart/form-data":
            raise MultipartError("expected a multipart/form-data body")
        boundary = params.get(b"boundary")
        if not boundary or len(boundary) > 200:
            raise MultipartError("multipart/form-data without a valid boundary")
        self._queue: asyncio.Queue[_Event] = asyncio.Queue(MAX_QUEUED_EVENTS)
        self._pending: list[_Event] = []
        self._closed = False
        self._ended = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._header_bytes = 0
        callbacks: Any = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    # -- parser callbacks (synchronous) ---------------------------------------------------

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]
        self._count_header(end - start)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            raise MultipartParseError("part headers too large")

    def _on_header_end(self) -> None:
        self._headers[_decode(bytes(self._header_field)).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        self._pending.append(_Event("part", headers=self._headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._pending.append(_Event("data", data=bytes(data[start:end])))

    def _on_part_end(self) -> None:
        self._pending.append(_Event("end-part"))

    def _on_end(self) -> None:
        self._ended = True

    # -- producer side ----------------------------------------------------------------

    async def feed(self, chunk: bytes) -> None:
        """Parses ``chunk``; waits while the consumer is behind."""
        if self._closed:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self._pending.append(_Event("error", data=str(exc).encode()))
        await self._flush()

    async def finish(self) -> None:
        """Marks the end of the body; a body without its closing boundary is an error."""
        if not self._ended:
            self._pending.append(_Event("error", data=b"truncated multipart body"))
        self._pending.append(_Event("end"))
        await self._flush()

    async def _flush(self) -> None:
        events, self._pending = self._pending, []
        for event in events:
            if self._closed:
                return
            await self._queue.put(event)

    def close(self) -> None:
        """The consumer gave up: stop queueing, and free a producer waiting for room."""
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait()

    # -- consumer side ----------------------------------------------------------------

    async def _next(self) -> _Event:
        event = await self._queue.get()
        if event.kind == "error":
            raise MultipartError(event.data.decode())
        return event

    async def parts(self) -> AsyncIterator[Part]:
        current: Part | None = None
        while True:
            if current is not None and not current._done:
                await current.skip()
            event = await self._next()
            if event.kind == "end":
                return
            if event.kind != "part":
                raise MultipartError(f"unexpected {event.kind} between parts")
            params = parse_disposition(event.headers.get("content-disposition", b""))
            content_type = event.headers.get("content-type")
            current = Part(
                name=params.get("name"),
                filename=params.get("filename"),
                content_type=_decode(content_type) if content_type is not None else None,
                _reader=self,
            )
            yield current
