"""Prometheus metrics, one registry per app (several apps in one test process never collide).

- ``rag_http_requests_total{method,route,status}`` and ``rag_http_request_duration_seconds{method,route,status}``,
  labelled by route *template* (``/v1/items/{doc_id:str}/similar``), never the raw path (bounded cardinality).
- ``rag_stage_duration_seconds{operation,stage}`` from the library's ``timings_ms`` (embed, dense, keyword, ...).
- ``rag_generation_info{generation_id,embedder}`` (1 for the loaded generation) and ``rag_generation_swaps_total``,
  read from the application at scrape time, so swaps made by another process's build show up too.
- ``rag_generation_embedding_cache_reuse_ratio`` (the served generation's build: vectors reused from the embedding
  cache / chunks, from its manifest) and ``rag_generation_size{kind}``.
- ``rag_answers_total{backend,abstained,fallback}``, ``rag_rate_limited_total``, ``rag_generator_slots_in_use``
  (text generation: the application's one limit), ``rag_jobs_total{kind,state}`` (jobs this process finished).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("service.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _ApplicationCollector:
    """Values that live in the application: read at scrape time, nothing to keep in sync."""

    def __init__(self, metrics: "Metrics"):
        self.m = metrics

    def collect(self):
        app = self.m.application
        info = GaugeMetricFamily("rag_generation_info", "The index generation this process serves (value 1).",
                                 labels=["generation_id", "embedder"])
        swaps = CounterMetricFamily("rag_generation_swaps", "Generation swaps since start (hot reloads).")
        slots = GaugeMetricFamily("rag_generator_slots_in_use", "Generator slots in use (text generation).")
        reuse = GaugeMetricFamily("rag_generation_embedding_cache_reuse_ratio",
                                  "Share of the served generation's chunk vectors its build took from the "
                                  "embedding cache.", labels=["generation_id"])
        counts = GaugeMetricFamily("rag_generation_size", "Documents and chunks of the served generation.",
                                   labels=["kind"])
        jobs = CounterMetricFamily("rag_jobs", "Admin jobs this process finished, by final state.",
                                   labels=["kind", "state"])
        if app is not None:
            snapshot = app.published.loaded
            if snapshot is not None:
                m = snapshot.manifest
                info.add_metric([snapshot.id, m.embedder.name], 1.0)
                if m.counts.chunks:
                    reuse.add_metric([snapshot.id], m.counts.vectors_reused / m.counts.chunks)
                counts.add_metric(["documents"], float(m.counts.documents))
                counts.add_metric(["chunks"], float(m.counts.chunks))
            swaps.add_metric([], float(app.published.swaps))
            slots.add_metric([], float(app.generators.slots.in_use))
            finished = app.loaded("jobs")
            for (kind, state), n in (finished.finished.items() if finished is not None else ()):
                jobs.add_metric([kind, state], float(n))
        yield from (info, reuse, counts, swaps, slots, jobs)


class Metrics:
    def __init__(self, application: Any = None):
        self.application = application
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("rag_http_requests", "HTTP requests.", ["method", "route", "status"], registry=r)
        self.latency = Histogram("rag_http_request_duration_seconds", "HTTP request latency (to the last byte).",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.stages = Histogram("rag_stage_duration_seconds", "Library stage timings (from timings_ms).",
                                ["operation", "stage"], buckets=STAGE_BUCKETS, registry=r)
        self.answers = Counter("rag_answers", "Answers given.", ["backend", "abstained", "fallback"], registry=r)
        self.rate_limited = Counter("rag_rate_limited", "Requests refused by the rate limit.", registry=r)
        r.register(_ApplicationCollector(self))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def observe(self, operation: str, result: Any) -> Any:
        """A library result's stage timings (and, for an answer, its backend and outcome); returns `result`."""
        for stage, ms in (getattr(result, "timings_ms", None) or {}).items():
            try:
                value = float(ms)
            except (TypeError, ValueError):
                continue
            name = stage[:-3] if stage.endswith("_ms") else stage
            self.stages.labels(operation, name).observe(value / 1000.0)
        if operation == "ask":
            self.answers.labels(result.backend or "", str(bool(result.abstained)).lower(),
                                str(bool(result.fallback)).lower()).inc()
        return result

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
