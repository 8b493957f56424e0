"""Prometheus metrics (prometheus_client), one registry per application.

``gridserve_requests_total{method,status}`` (``method`` one of :data:`KNOWN_METHODS`, anything
else counted as ``other``: a client cannot grow the label set by inventing methods),
``gridserve_sent_bytes_total``,
``gridserve_range_requests_total{kind}`` (single, multi, unsatisfiable),
``gridserve_streams_in_flight``, ``gridserve_uploads_in_flight``,
``gridserve_requests_in_flight``, ``gridserve_upload_bytes_total``,
``gridserve_storage_seconds{operation}`` (a histogram of storage lookups and writes),
``gridserve_storage_read_bytes_total{storage}`` (bytes the handlers took from a storage's
``read()``, by :func:`storage_kind`: what answering cost the storage; a response abandoned by
its client counts what was read for it, including what the kernel had queued and never
delivered, which ``scripts/bench --waste`` sets against what clients consumed). Behind a
chunk cache (:meth:`Metrics.watch_cache`) it counts what the cache read from the storage it
wraps, and the cache adds ``gridserve_cache_hits_total``, ``gridserve_cache_misses_total``,
``gridserve_cache_evictions_total`` (blocks) and ``gridserve_cache_bytes``;
``gridserve_probe_failures_total`` (media files ffprobe or the poster maker failed on).
Handlers find the application's :class:`Metrics` in ``settings["gridserve_metrics"]``; an
application without it records nothing.

With ``--processes N`` the daemon calls :func:`enable_multiprocess` before forking: every
worker then writes its values to files in a private directory (prometheus_client's
multiprocess mode) and :meth:`Metrics.render`, whichever worker runs it, sums them all. The
chunk cache keeps plain ints, which no file holds: each worker copies its caches' counters
into metrics of those files (:meth:`Metrics.publish`) when one of its requests ends and before
it renders, so a scrape sums every worker's cache as of its last request (a stream still
running counts once it ends; ``gridserve_cache_bytes`` sums the live workers only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gridserve.storage.cache import CachedStorage, CacheStats

CONTENT_TYPE = CONTENT_TYPE_LATEST
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"}
)


def method_label(method: str | None) -> str:
    """The ``method`` label for a request method: itself if known, else ``other``."""
    return method if method in KNOWN_METHODS else "other"


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(directory: str) -> None:
    """Makes every metric created from now on (in this process and its forks) share values
    through files in ``directory``, which must be empty and private to this daemon."""
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def process_exited(pid: int) -> None:
    """Forgets the live gauges of a worker that exited (its counters still count)."""
    directory = multiprocess_dir()
    if directory:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


STORAGE_KINDS = {"GridFSStorage": "gridfs", "LocalStorage": "local", "S3Storage": "s3"}


def storage_kind(storage: object) -> str:
    """The ``storage`` label of a storage: gridfs, local, s3, or other (a fixed set)."""
    return STORAGE_KINDS.get(type(storage).__name__, "other")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gridserve_requests", "HTTP requests answered", ["method", "status"], registry=r
        )
        self.sent_bytes = Counter("gridserve_sent_bytes", "Body bytes sent", registry=r)
        self.range_requests = Counter(
            "gridserve_range_requests", "Range requests by outcome", ["kind"], registry=r
        )
        self.streams_in_flight = Gauge(
            "gridserve_streams_in_flight",
            "Responses streaming now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.requests_in_flight = Gauge(
            "gridserve_requests_in_flight",
            "Requests begun and not yet ended (a request whose client left ends as 499)",
            registry=r,
        )
        self.uploads_in_flight = Gauge(
            "gridserve_uploads_in_flight", "Uploads being stored now", registry=r
        )
        self.storage_read_bytes = Counter(
            "gridserve_storage_read_bytes",
            "Bytes read from a storage to answer requests",
            ["storage"],
            registry=r,
        )
        self.upload_bytes = Counter("gridserve_upload_bytes", "Upload bytes received", registry=r)
        self.probe_failures = Counter(
            "gridserve_probe_failures", "Media probes or posters that failed", registry=r
        )
        self.storage_seconds = Histogram(
            "gridserve_storage_seconds",
            "Storage operation latency",
            ["operation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self._caches: list[CachedStorage] = []
        self._publishers: list[_CachePublisher] = []
        self._cache_metrics: _CacheMetrics | None = None
        # Labelled children by label values: prometheus_client's labels() takes a lock and
        # validates the values on every call; a request needs the same few each time.
        self._children: dict[tuple[object, ...], Any] = {}

    def watch_cache(self, cache: CachedStorage) -> None:
        """Exports ``cache``'s counters; its reads of the storage it wraps are the storage
        reads (what the handlers take from the cache is not)."""
        if multiprocess_dir():
            if self._cache_metrics is None:
                self._cache_metrics = _CacheMetrics(self.registry)
            self._publishers.append(_CachePublisher(cache, self._cache_metrics))
        else:
            self.registry.register(_CacheCollector(cache))
        cache.on_storage_read = self.storage_read_bytes.labels(storage_kind(cache.inner)).inc
        self._caches.append(cache)

    def publish(self) -> None:
        """Copies the watched caches' counters into the metrics every worker's scrape sums
        (``--processes N``); does nothing in a single process, where a scrape reads them."""
        for publisher in self._publishers:
            publisher.publish()

    def storage_read_counter(self, storage: object) -> Callable[[int], object]:
        """What a handler calls with the size of each piece it reads from ``storage``."""
        if any(storage is cache for cache in self._caches):
            return _uncounted  # the cache counts what it reads itself
        inc: Callable[[int], object] = self._child(
            self.storage_read_bytes, storage_kind(storage)
        ).inc
        return inc

    def count_request(self, method: str | None, status: int) -> None:
        """Counts one answered request. ``status`` is ours (a bounded set), ``method`` the
        client's, hence mapped through :func:`method_label`."""
        self._child(self.requests, method_label(method), str(status)).inc()

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered (label sets here are bounded)."""
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    @contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._child(self.storage_seconds, operation).observe(time.perf_counter() - start)

    def render(self) -> bytes:
        """The values of every process of the daemon (of this one when it runs alone)."""
        directory = multiprocess_dir()
        if directory:
            self.publish()
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, directory)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


def _uncounted(amount: int) -> None:
    pass


class _CacheCollector(Collector):
    """The chunk cache's own counters, read at each scrape (the cache keeps plain ints)."""

    def __init__(self, cache: CachedStorage) -> None:
        self._cache = cache

    def collect(self) -> Iterable[Metric]:
        stats = self._cache.stats()
        yield CounterMetricFamily(
            "gridserve_cache_hits", "Cache blocks served without a storage read", stats.hits
        )
        yield CounterMetricFamily(
            "gridserve_cache_misses", "Cache blocks read from the storage", stats.misses
        )
        yield CounterMetricFamily(
            "gridserve_cache_evictions", "Cache blocks evicted", stats.evictions
        )
        yield GaugeMetricFamily("gridserve_cache_bytes", "Bytes held by the cache", stats.bytes)


class _CacheMetrics:
    """The chunk caches' counters as metrics whose values live in the multiprocess files."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.hits = Counter(
            "gridserve_cache_hits", "Cache blocks served without a storage read", registry=r
        )
        self.misses = Counter(
            "gridserve_cache_misses", "Cache blocks read from the storage", registry=r
        )
        self.evictions = Counter("gridserve_cache_evictions", "Cache blocks evicted", registry=r)
        self.bytes = Gauge(
            "gridserve_cache_bytes",
            "Bytes held by the cache",
            registry=r,
            multiprocess_mode="livesum",
        )


class _CachePublisher:
    """Adds what one cache counted since the last :meth:`publish` to :class:`_CacheMetrics`."""

    def __init__(self, cache: CachedStorage, metrics: _CacheMetrics) -> None:
        self._cache = cache
        self._metrics = metrics
        self._sent: CacheStats | None = None

    def publish(self) -> None:
        stats = self._cache.stats()
        sent = self._sent
        if sent == stats:
            return
        m = self._metrics
        for counter, now, before in (
            (m.hits, stats.hits, sent.hits if sent else 0),
            (m.misses, stats.misses, sent.misses if sent else 0),
            (m.evictions, stats.evictions, sent.evictions if sent else 0),
        ):
            if now > before:
                counter.inc(now - before)
        m.bytes.inc(stats.bytes - (sent.bytes if sent else 0))
        self._sent = stats
