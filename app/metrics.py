"""Prometheus metrics, one registry per app (several apps may share a process in tests)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from app.stores.base import StoreError, StoreUnavailable, VersionCounts


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.applied_revision = Gauge(
            "sc_applied_revision",
            "The store revision this instance has applied.",
            registry=self.registry,
        )
        self.projects = Gauge(
            "sc_projects", "Projects this instance serves.", registry=self.registry
        )
        self.peers = Gauge("sc_peers", "Live instances of the cluster.", registry=self.registry)
        self.sse_subscribers = Gauge(
            "sc_sse_subscribers", "Open event streams on this instance.", registry=self.registry
        )
        self.sse_events_sent = Counter(
            "sc_sse_events_sent", "Event frames queued to subscribers.", registry=self.registry
        )
        self.sse_dropped = Counter(
            "sc_sse_subscribers_dropped",
            "Subscribers dropped for falling behind.",
            registry=self.registry,
        )
        self.sse_resumes = Counter(
            "sc_sse_resumes",
            "Streams resumed with Last-Event-ID, by what served the missed changes: the "
            "in-memory history, the store's history, or a snapshot.",
            ["served"],
            registry=self.registry,
        )
        self.sse_replay_reads = Counter(
            "sc_sse_replay_reads",
            "Reads of the store's history for resumes (one serves every resume it covers).",
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "sc_store_operation_seconds",
            "Latency of store operations.",
            ["op"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.store_errors = Counter(
            "sc_store_errors",
            "Store operations that failed.",
            ["op", "kind"],
            registry=self.registry,
        )
        self.resyncs = Counter(
            "sc_resyncs",
            "Times the watch was re-established by listing again.",
            registry=self.registry,
        )

        self.store_values_skipped = Counter(
            "sc_store_values_skipped",
            "Store values not served (once per key and revision), by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.store_values_invalid = Gauge(
            "sc_store_values_invalid",
            "Keys whose current store value is not served (listed on /readyz).",
            registry=self.registry,
        )

    @asynccontextmanager
    async def store_op(self, op: str) -> AsyncIterator[None]:
        """Time one store operation; count it as an error when the store failed."""
        start = time.perf_counter()
        try:
            yield
        except StoreUnavailable:
            self.store_errors.labels(op, "unavailable").inc()
            raise
        except StoreError:
            # Conflicts and "not found" are answers, not failures of the store.
            raise
        except Exception:
            self.store_errors.labels(op, "internal").inc()
            raise
        finally:
            self.store_seconds.labels(op).observe(time.perf_counter() - start)

    def count_versions(self, counts: VersionCounts) -> None:
        """Export the store's own counts of versions written and pruned."""
        self.registry.register(_VersionCollector(counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _VersionCollector(Collector):
    """``sc_versions_written_total`` and ``sc_versions_pruned_total``, read from the
    store at each scrape: the store counts them in its own transactions."""

    def __init__(self, counts: VersionCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "sc_versions_written",
            "Versions written with their writes by this instance.",
            value=self._counts.written,
        )
        yield CounterMetricFamily(
            "sc_versions_pruned",
            "Old versions this instance's writes pruned (beyond PROJECT_VERSIONS).",
            value=self._counts.pruned,
        )
