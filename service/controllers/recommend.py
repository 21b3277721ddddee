"""Recommendations: for a user, more like a document, trending; and the engagement events that feed them."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from litestar import Controller, get, post
from litestar.params import Parameter

from rag.engine import Engine
from rag.generation import Generation
from rag.types import DOMAINS
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


def lead_blurb(doc: dict, summary: dict, max_words: int = 40) -> str | None:
    """`explain=true`: a short blurb per item, the document's own opening sentences (extractive: no generative
    model runs per recommended item, so explaining stays cheap and cannot invent anything)."""
    from rag.extractive import count_words, join_sentences
    from rag.grounding import split_sentences

    body = "\n".join(line for line in (doc.get("text") or "").splitlines() if not line.lstrip().startswith("#"))
    title = (doc.get("title") or "").strip()
    parts: list[str] = []
    words = 0
    for sent in split_sentences(body):
        t = sent.text.strip()
        if title and t.startswith(title):  # a title line the loader kept in the text
            t = t[len(title):].lstrip(" :.-")
        if not t or t.startswith("|"):
            continue
        w = count_words(t)
        if parts and words + w > max_words:
            break
        parts.append(t)
        words += w
        if words >= 15:
            break
    return join_sentences(parts) or None


def _rec_response(result, gen: Generation, metrics: Metrics, op: str, user_id: str | None = None):
    metrics.observe_timings(op, getattr(result, "timings_ms", None))
    return to_struct(result, RecommendationsResponse, user_id=user_id,
                     generation_id=getattr(result, "generation_id", None) or gen.id)


class RecommendController(Controller):
    path = ""
    tags = ["recommendations"]

    @get("/users/{user_id:str}/recommendations", summary="Recommendations for a user",
         responses=error_responses(400, 401, 403, 429, 503, 504))
    async def for_user(
        self, engine: Engine, gen: Generation, slots: GenerationSlots, metrics: Metrics,
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
        adds a blurb per item (the document's opening sentences)."""
        recommender = await anyio.to_thread.run_sync(lambda: engine.recommender)

        def run():
            return recommender.recommend(gen, user_id, k=k, domain=_domain(domain), language=language,
                                         audience=audience, exclude_seen=exclude_seen, explain=explain,
                                         explainer=lead_blurb if explain else None)

        result = await anyio.to_thread.run_sync(run)
        return _rec_response(result, gen, metrics, "recommend", user_id)

    @get("/items/{doc_id:str}/similar", sync_to_thread=True, summary="More like this document",
         responses=error_responses(400, 401, 403, 404, 429, 503))
    def similar(self, engine: Engine, gen: Generation, metrics: Metrics,
                doc_id: Annotated[str, Parameter(pattern=DOC_ID_PATTERN)], k: K = 10) -> RecommendationsResponse:
        with unknown_ids_are_404("doc_id"):
            result = engine.recommender.similar(gen, doc_id, k=k)
        return _rec_response(result, gen, metrics, "similar")

    @get("/trending", sync_to_thread=True, summary="Trending documents",
         responses=error_responses(400, 401, 403, 429, 503))
    def trending(self, engine: Engine, gen: Generation, metrics: Metrics, domain: DomainQ = None,
                 k: K = 10) -> RecommendationsResponse:
        result = engine.recommender.trending(gen, domain=_domain(domain), k=k)
        return _rec_response(result, gen, metrics, "trending")

    @post("/events", status_code=200, sync_to_thread=True, summary="Ingest a batch of engagement events",
          responses=error_responses(400, 401, 403, 413, 429))
    def events(self, data: EventsRequest, engine: Engine) -> EventsResponse:
        """Partial acceptance: good events are stored, bad ones come back in `rejected` naming the index and
        field; 400 only when the body itself is malformed (not a batch of 1..1000 objects)."""
        report = engine.recommender.ingest(list(data.events))
        return to_struct(report, EventsResponse)
