"""One way to answer an error on every route, and HEAD answered as GET by construction.

Every gridserve handler (files, ops, page, and :class:`NotFoundHandler` for paths no route
matches) renders an error the same way: the body is ``<status> <reason>\\n`` as
``text/plain; charset=utf-8`` with ``X-Content-Type-Options: nosniff``, plus the header the
status needs (``Allow`` on 405, ``Retry-After`` on 503, ``WWW-Authenticate`` on 401, and what an
:class:`HTTPErrorWithHeaders` carries, e.g. 416's ``Content-Range``).

HEAD = GET: a handler builds the same response for both methods and leaves the body out only
at the last step. The error body is written for HEAD too; Tornado's ``finish()`` computes
``Content-Length`` from what was written and its ``flush()`` drops the body of a HEAD, so the
status and every header, ``Content-Length`` included, are those GET gets. :class:`HeadAsGet`
gives handlers that only define ``get`` the same property.

Override point: ``error_headers(status_code) -> dict[str, str]``, the headers an error with that
status carries (default: the ones above).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

import tornado.web

RETRY_AFTER_SECONDS = 5


class HTTPErrorWithHeaders(tornado.web.HTTPError):
    """An ``HTTPError`` whose answer carries ``headers`` (a 416's ``Content-Range``)."""

    def __init__(
        self, status_code: int, headers: Mapping[str, str], reason: str | None = None
    ) -> None:
        super().__init__(status_code, reason=reason)
        self.headers = dict(headers)


def error_body(status_code: int, reason: str) -> str:
    """The body of every error answer: ``<status> <reason>\\n``."""
    return f"{status_code} {reason}\n"


class PlainErrors(tornado.web.RequestHandler):
    """Renders every error as short plain text, identically for GET and HEAD (see module)."""

    def error_headers(self, status_code: int) -> dict[str, str]:
        """Override point: the headers an error answer with ``status_code`` carries."""
        headers: dict[str, str] = {}
        if status_code == 405:
            headers["Allow"] = ", ".join(self.SUPPORTED_METHODS)
        if status_code == 503:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if status_code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="gridserve"'
        return headers

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        for name, value in self.error_headers(status_code).items():
            self.set_header(name, value)
        exc_info = kwargs.get("exc_info")
        if exc_info is not None and isinstance(exc_info[1], HTTPErrorWithHeaders):
            for name, value in exc_info[1].headers.items():
                self.set_header(name, value)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        # Written for HEAD as well: Tornado counts it into Content-Length, then drops it.
        self.finish(error_body(status_code, self._reason))


class HeadAsGet(tornado.web.RequestHandler):
    """HEAD runs ``get`` itself; Tornado sends what it built without the body."""

    def head(self, *args: Any, **kwargs: Any) -> Awaitable[None] | None:
        result: Awaitable[None] | None = self.get(*args, **kwargs)
        return result


class NotFoundHandler(PlainErrors):
    """The answer for a path no route matches (``default_handler_class``): a plain 404."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)

    def check_xsrf_cookie(self) -> None:
        """A 404, never a 403, whatever the method."""
