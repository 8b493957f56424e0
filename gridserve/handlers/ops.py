"""Operational endpoints: ``/healthz`` (alive), ``/readyz`` (storage reachable), ``/metrics``."""

from __future__ import annotations

import asyncio

import tornado.web

from gridserve.handlers.stream import RETRY_AFTER_SECONDS
from gridserve.metrics import CONTENT_TYPE, Metrics
from gridserve.storage.base import Storage, StorageUnavailable

READY_TIMEOUT = 3.0


class HealthHandler(tornado.web.RequestHandler):
    """200 while the process can answer at all."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.finish("ok\n")


class ReadyHandler(tornado.web.RequestHandler):
    """200 when the storage answers a ping within 3 s, else 503 with ``Retry-After``."""

    def initialize(self, storage: Storage) -> None:
        self.storage = storage

    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        try:
            await asyncio.wait_for(self.storage.ping(), READY_TIMEOUT)
        except (StorageUnavailable, asyncio.TimeoutError) as exc:
            self.set_status(503)
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            self.finish(
                f"storage unavailable: {str(exc).splitlines()[0] if str(exc) else 'timeout'}\n"
            )
            return
        self.finish("ready\n")


class MetricsHandler(tornado.web.RequestHandler):
    """The application's metrics in Prometheus text format."""

    def initialize(self, metrics: Metrics) -> None:
        self.metrics_registry = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.metrics_registry.render())
