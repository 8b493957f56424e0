"""Operational endpoints: ``/healthz`` (alive), ``/readyz`` (storage reachable), ``/metrics``.

Each answers HEAD as GET, and errors as every gridserve route does
(:mod:`gridserve.handlers.errors`).
"""

from __future__ import annotations

import asyncio
import logging
import os

import tornado.web

from gridserve.handlers.errors import HeadAsGet, PlainErrors
from gridserve.metrics import CONTENT_TYPE, Metrics
from gridserve.storage.base import Storage, StorageUnavailable
from gridserve.storage.fallback import FallbackStorage
from gridserve.supervisor import worker_id

READY_TIMEOUT = 3.0

log = logging.getLogger("gridserve.ops")


class OpsHandler(HeadAsGet, PlainErrors):
    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")


def process_label() -> str:
    """Which process answers: ``worker=1 pid=4242`` under ``--processes N``, else ``pid=4242``."""
    number = worker_id()
    pid = f"pid={os.getpid()}"
    return pid if number is None else f"worker={number} {pid}"


class HealthHandler(OpsHandler):
    """200 ``ok`` (text/plain) while the process can answer at all."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Gridserve-Process", process_label())
        self.finish("ok\n")


class ReadyHandler(OpsHandler):
    """200 when the storage answers a ping within 3 s, else 503 with ``Retry-After`` (the
    reason is logged); with a :class:`FallbackStorage`, one line per storage, ``ready`` or
    ``unavailable`` (the reason is logged), 200 only when every one answers."""

    def initialize(self, storage: Storage) -> None:
        self.storage = storage

    async def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if isinstance(self.storage, FallbackStorage):
            await self._report_each(self.storage)
            return
        try:
            await asyncio.wait_for(self.storage.ping(), READY_TIMEOUT)
        except (StorageUnavailable, asyncio.TimeoutError) as exc:
            log.warning("not ready: %s", str(exc).splitlines()[0] if str(exc) else "timeout")
            raise tornado.web.HTTPError(503, reason="Storage unavailable") from None
        self.set_header("Cache-Control", "no-store")
        self.finish("ready\n")

    def error_headers(self, status_code: int) -> dict[str, str]:
        return {**super().error_headers(status_code), "Cache-Control": "no-store"}

    async def _report_each(self, storage: FallbackStorage) -> None:
        """One line per storage, the primary first; 503 unless every one answers (a file
        still on a fallback that is down cannot be served)."""
        lines = []
        for description, problem in await storage.health():
            lines.append(f"{description}: {'ready' if problem is None else 'unavailable'}\n")
            if problem is not None:
                log.warning("not ready: %s: %s", description, problem)
                self.set_status(503)
                for name, value in self.error_headers(503).items():
                    self.set_header(name, value)
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("".join(lines))


class MetricsHandler(OpsHandler):
    """The daemon's metrics in Prometheus text format: every worker's under ``--processes N``;
    ``X-Gridserve-Process`` names the process that answered."""

    def initialize(self, metrics: Metrics) -> None:
        self.metrics_registry = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Gridserve-Process", process_label())
        self.finish(self.metrics_registry.render())
