"""Parsing ``multipart/byteranges`` bodies with the standard library's MIME parser."""

from __future__ import annotations

import email.parser
from email.message import Message


def parse_byteranges(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """The parts of a multipart body as (Content-Type, Content-Range, payload) triples."""
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.is_multipart(), "not a multipart body"
    parts: list[tuple[str, str, bytes]] = []
    for part in message.get_payload():
        assert isinstance(part, Message)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts.append((str(part["Content-Type"]), str(part["Content-Range"]), payload))
    return parts
