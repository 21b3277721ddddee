"""POST /v1/summarize: a summary of one document, several, or the documents a query finds."""

from __future__ import annotations

import logging
from functools import partial

import anyio.to_thread
import msgspec
from litestar import Controller, post

from rag.engine import Engine
from rag.snapshot import Snapshot
from service.controllers.ask import prepare_backend, uses_model
from service.errors import bad_request, error_responses, unknown_ids_are_404
from service.limits import GenerationSlots
from service.metrics import Metrics
from service.schemas import SummarizeRequest, SummaryResponse, nonblank, plain, to_filters, to_struct


log = logging.getLogger("service.summarize")


class SummarizeController(Controller):
    path = "/summarize"
    tags = ["summaries"]

    @post("", status_code=200, summary="Summarize a document, several, or a topic",
          responses=error_responses(400, 401, 403, 404, 413, 429, 503, 504))
    async def summarize(self, data: SummarizeRequest, engine: Engine, snapshot: Snapshot, slots: GenerationSlots,
                        metrics: Metrics) -> SummaryResponse:
        """Exactly one of `doc_id`, `doc_ids`, `query`. Unknown document ids are a 404 naming the id."""
        given = [name for name in ("doc_id", "doc_ids", "query") if getattr(data, name) is not msgspec.UNSET]
        if len(given) != 1:
            field = given[1] if len(given) > 1 else "doc_id"
            raise bad_request("give exactly one of doc_id, doc_ids, query"
                              + (f" (got {', '.join(given)})" if given else ""), field=field)
        doc_ids = [data.doc_id] if data.doc_id else (list(dict.fromkeys(data.doc_ids)) if data.doc_ids else None)
        query = nonblank(data.query, "query") if data.query is not msgspec.UNSET else None
        if data.filters is not msgspec.UNSET and query is None:
            raise bad_request("filters apply to a query summary only", field="filters")
        filters = to_filters(data.filters) if data.filters is not msgspec.UNSET else None
        summarizer = await anyio.to_thread.run_sync(lambda: engine.summarizer)
        unavailable = await prepare_backend(engine, data.backend)
        backend = "extractive" if unavailable else data.backend

        def run(backend=backend):
            with unknown_ids_are_404("doc_ids" if data.doc_ids else "doc_id"):
                return summarizer.summarize(snapshot, doc_ids=doc_ids, query=query, filters=filters, style=data.style,
                                            max_words=data.max_words, backend=backend)

        try:
            result = await (slots.run(run) if uses_model(engine, backend) else anyio.to_thread.run_sync(run))
        except TimeoutError:
            log.warning("summary generation timed out after %.0f s; extractive summary", slots.run_timeout_s)
            result = await anyio.to_thread.run_sync(partial(run, "extractive"))
            unavailable = f"generation timed out after {slots.run_timeout_s:g} s; extractive summary"
        if unavailable:
            result.fallback = unavailable
        metrics.observe_timings("summarize", getattr(result, "timings_ms", None))
        raw = plain(result)
        raw["generation_id"] = raw.get("generation_id") or snapshot.id
        raw.setdefault("style", data.style)
        return to_struct(raw, SummaryResponse)
