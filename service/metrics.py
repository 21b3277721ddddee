"""Prometheus metrics, one registry per app (several apps in one test process never collide).

- ``rag_http_requests_total{method,route,status}`` and ``rag_http_request_duration_seconds{method,route,status}``,
  labelled by route *template* (``/v1/items/{doc_id:str}/similar``), never the raw path (bounded cardinality).
- ``rag_stage_duration_seconds{operation,stage}`` from the library's ``timings_ms`` (embed, dense, keyword, ...).
- ``rag_generation_info{generation_id,embedder}`` (1 for the loaded generation) and ``rag_generation_swaps_total``,
  read from the engine at scrape time, so swaps made by another process's build show up too.
- ``rag_generation_embedding_cache_reuse_ratio`` (the served generation's build: vectors reused from the embedding
  cache / chunks, from its manifest) and ``rag_generation_size{kind}``.
- ``rag_cache_hit_ratio{cache}`` for caches the library exposes through ``cache_stats()``/``cache_info()`` (none of
  the recommender's profile caches do yet; the gauge appears when one does).
- ``rag_answers_total{backend,abstained,fallback}``, ``rag_rate_limited_total``, ``rag_generation_slots_in_use``,
  ``rag_jobs_total{state}``.
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


class _EngineCollector:
    """Values that live in the engine: read at scrape time, nothing to keep in sync."""

    def __init__(self, metrics: "Metrics"):
        self.m = metrics

    def collect(self):
        engine = self.m.engine
        info = GaugeMetricFamily("rag_generation_info", "The index generation this process serves (value 1).",
                                 labels=["generation_id", "embedder"])
        swaps = CounterMetricFamily("rag_generation_swaps", "Generation swaps since start (hot reloads).")
        slots = GaugeMetricFamily("rag_generation_slots_in_use", "Generation slots in use.")
        ratio = GaugeMetricFamily("rag_cache_hit_ratio", "Hit ratio of library caches that expose stats.",
                                  labels=["cache"])
        reuse = GaugeMetricFamily("rag_generation_embedding_cache_reuse_ratio",
                                  "Share of the served generation's chunk vectors its build took from the "
                                  "embedding cache.", labels=["generation_id"])
        counts = GaugeMetricFamily("rag_generation_size", "Documents and chunks of the served generation.",
                                   labels=["kind"])
        if engine is not None:
            index = getattr(engine, "published", None)
            snapshot = getattr(index, "_snapshot", None) if index is not None else None
            if snapshot is not None:
                try:
                    emb = snapshot.manifest.embedder.name
                except AttributeError:
                    emb = ""
                info.add_metric([snapshot.id, emb], 1.0)
                c = snapshot.manifest.counts
                if c.chunks:
                    reuse.add_metric([snapshot.id], c.vectors_reused / c.chunks)
                counts.add_metric(["documents"], float(c.documents))
                counts.add_metric(["chunks"], float(c.chunks))
            swaps.add_metric([], float(getattr(index, "swaps", 0) or 0))
            for name, value in _cache_ratios(engine).items():
                ratio.add_metric([name], value)
        if self.m.slots is not None:
            slots.add_metric([], float(self.m.slots.in_use))
        yield info
        yield reuse
        yield counts
        yield swaps
        yield slots
        yield ratio


def _ratio(stats: Any) -> float | None:
    """hits/(hits+misses) from a dict, an object with attributes, or functools' CacheInfo."""
    if stats is None:
        return None
    get = stats.get if isinstance(stats, dict) else (lambda k, d=None: getattr(stats, k, d))
    if get("hit_rate") is not None:
        return float(get("hit_rate"))
    hits, misses = get("hits"), get("misses")
    if hits is None or misses is None:
        return None
    total = float(hits) + float(misses)
    return float(hits) / total if total else 0.0


def _cache_ratios(engine: Any) -> dict[str, float]:
    """Caches exposed by the library, looked up without forcing lazy parts (recommender, answerer) to load."""
    out: dict[str, float] = {}
    loaded = getattr(engine, "__dict__", {})
    candidates = {"retriever": getattr(engine, "retriever", None), "recommender": loaded.get("recommender"),
                  "answerer": loaded.get("answerer")}
    for owner_name, owner in candidates.items():
        if owner is None:
            continue
        for attr in ("cache_stats", "cache_info"):
            fn = getattr(owner, attr, None)
            if not callable(fn):
                continue
            try:
                stats = fn()
            except Exception:  # noqa: BLE001 - a metrics scrape never fails because of one source
                continue
            if isinstance(stats, dict) and stats and not {"hits", "misses", "hit_rate"} & set(stats):
                for name, sub in stats.items():
                    r = _ratio(sub)
                    if r is not None:
                        out[f"{owner_name}.{name}"] = r
            else:
                r = _ratio(stats)
                if r is not None:
                    out[owner_name] = r
    return out


class Metrics:
    def __init__(self, engine: Any = None):
        self.engine = engine
        self.slots = None  # set by the app: limits.GenerationSlots
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("rag_http_requests", "HTTP requests.", ["method", "route", "status"], registry=r)
        self.latency = Histogram("rag_http_request_duration_seconds", "HTTP request latency (to the last byte).",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.stages = Histogram("rag_stage_duration_seconds", "Library stage timings (from timings_ms).",
                                ["operation", "stage"], buckets=STAGE_BUCKETS, registry=r)
        self.answers = Counter("rag_answers", "Answers given.", ["backend", "abstained", "fallback"], registry=r)
        self.rate_limited = Counter("rag_rate_limited", "Requests refused by the rate limit.", registry=r)
        self.jobs = Counter("rag_jobs", "Admin jobs by final state.", ["kind", "state"], registry=r)
        r.register(_EngineCollector(self))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def observe_timings(self, operation: str, timings_ms: dict[str, float] | None) -> None:
        for stage, ms in (timings_ms or {}).items():
            try:
                value = float(ms)
            except (TypeError, ValueError):
                continue
            name = stage[:-3] if stage.endswith("_ms") else stage
            self.stages.labels(operation, name).observe(value / 1000.0)

    def observe_answer(self, backend: str | None, abstained: bool, fallback: Any) -> None:
        self.answers.labels(backend or "", str(bool(abstained)).lower(), str(bool(fallback)).lower()).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
