"""Recommendations: for a user, more like a document, trending; and the engagement events that feed them."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from litestar import Controller, get, post
from litestar.params import Parameter

from rag.engine import Engine
from rag.snapshot import Snapshot
from rag.types import DOMAINS
from service.controllers.ask import prepare_backend, uses_model
from service.errors import bad_request, error_responses, unknown_ids_are_404
from service.limits import GenerationSlots
from service.metrics import Metrics
from service.schemas import (
    DOC_ID_PATTERN,
    LANGUAGE_PATTERN,
    USER_ID_PATTERN,
    Domain,
    EventsRequest,
    EventsResponse,
    RecommendationsResponse,
    to_struct,
)

K = Annotated[int, Parameter(ge=1, le=100, description="How many items.")]
DomainQ = Annotated[Domain | None, Parameter(description="Only this domain.")]


def _domain(value: str | None) -> str | None:
    if value is not None and value not in DOMAINS:
        raise bad_request(f"domain must be one of {', '.join(DOMAINS)}", field="domain")
    return value


def _rec_response(result, snapshot: Snapshot, metrics: Metrics, op: str, user_id: str | None = None):
    metrics.observe_timings(op, getattr(result, "timings_ms", None))
    return to_struct(result, RecommendationsResponse, user_id=user_id,
                     generation_id=getattr(result, "generation_id", None) or snapshot.id)


class RecommendController(Controller):
    path = ""
    tags = ["recommendations"]

    @get("/users/{user_id:str}/recommendations", summary="Recommendations for a user",
         responses=error_responses(400, 401, 403, 429, 503, 504))
    async def for_user(
        self, engine: Engine, snapshot: Snapshot, slots: GenerationSlots, metrics: Metrics,
        user_id: Annotated[str, Parameter(pattern=USER_ID_PATTERN)],
        k: K = 10,
        domain: DomainQ = None,
        language: Annotated[str | None, Parameter(pattern=LANGUAGE_PATTERN)] = None,
        audience: Annotated[str | None, Parameter(min_length=1, max_length=64)] = None,
        exclude_seen: bool = True,
        explain: bool = False,
    ) -> RecommendationsResponse:
        """Personalized ("for you"): a time-decayed profile of what the user engaged with, diversified, each
        item with a reason. New users get trending items or items near their declared interests. `explain=true`
        adds a one-sentence blurb per item, written by the configured generator and checked against the document
        (its opening sentences when the check fails or the backend is `extractive`)."""
        domain = _domain(domain)

        def run(explain_backend: str | None = None):
            return engine.recommend(user_id, snapshot=snapshot, k=k, domain=domain, language=language, audience=audience,
                                    exclude_seen=exclude_seen, explain=explain, explain_backend=explain_backend)

        # Blurbs from a generative model take a generation slot, like /v1/ask; a model that is missing or
        # outlives the generation timeout gives the documents' opening sentences instead.
        if explain and uses_model(engine, None) and await prepare_backend(engine, None) is None:
            try:
                result = await slots.run(run)
            except TimeoutError:
                result = await anyio.to_thread.run_sync(run, "extractive")
        else:
            result = await anyio.to_thread.run_sync(run, "extractive" if explain else None)
        return _rec_response(result, snapshot, metrics, "recommend", user_id)

    @get("/items/{doc_id:str}/similar", sync_to_thread=True, summary="More like this document",
         responses=error_responses(400, 401, 403, 404, 429, 503))
    def similar(self, engine: Engine, snapshot: Snapshot, metrics: Metrics,
                doc_id: Annotated[str, Parameter(pattern=DOC_ID_PATTERN)], k: K = 10) -> RecommendationsResponse:
        with unknown_ids_are_404("doc_id"):
            result = engine.recommender.similar(snapshot, doc_id, k=k)
        return _rec_response(result, snapshot, metrics, "similar")

    @get("/trending", sync_to_thread=True, summary="Trending documents",
         responses=error_responses(400, 401, 403, 429, 503))
    def trending(self, engine: Engine, snapshot: Snapshot, metrics: Metrics, domain: DomainQ = None,
                 k: K = 10) -> RecommendationsResponse:
        result = engine.recommender.trending(snapshot, domain=_domain(domain), k=k)
        return _rec_response(result, snapshot, metrics, "trending")

    @post("/events", status_code=200, sync_to_thread=True, summary="Ingest a batch of engagement events",
          responses=error_responses(400, 401, 403, 413, 429))
    def events(self, data: EventsRequest, engine: Engine) -> EventsResponse:
        """Partial acceptance: good events are stored, bad ones come back in `rejected` naming the index and
        field; 400 only when the body itself is malformed (not a batch of 1..1000 objects)."""
        report = engine.recommender.ingest(list(data.events))
        return to_struct(report, EventsResponse)
