"""Recommendations: for a user, more like a document, trending; and the engagement events that feed them."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import Parameter

from rag.access import Visibility
from rag.application import Application
from rag.events import IngestReport
from rag.recommend import RecommendationList
from rag.snapshot import Snapshot
from service.errors import error_responses
from service.metrics import Metrics
from service.schemas import DOC_ID_PATTERN, LANGUAGE_PATTERN, USER_ID_PATTERN, DomainParam, EventsRequest

K = Annotated[int, Parameter(ge=1, le=100, description="How many items.")]


class RecommendController(Controller):
    path = ""
    tags = ["recommendations"]

    @get("/users/{user_id:str}/recommendations", sync_to_thread=True, summary="Recommendations for a user",
         responses=error_responses(400, 401, 403, 429, 503))
    def for_user(
        self, application: Application, snapshot: Snapshot, metrics: Metrics, visibility: Visibility,
        user_id: Annotated[str, Parameter(pattern=USER_ID_PATTERN)],
        k: K = 10,
        domain: DomainParam = None,
        language: Annotated[str | None, Parameter(pattern=LANGUAGE_PATTERN)] = None,
        audience: Annotated[str | None, Parameter(min_length=1, max_length=64)] = None,
        exclude_seen: bool = True,
        explain: bool = False,
    ) -> RecommendationList:
        """Personalized ("for you"): a time-decayed profile of what the user engaged with, diversified, each
        item with a reason. New users get trending items or items near their declared interests. `explain=true`
        adds a one-sentence blurb per item, written by the configured generator and checked against the document
        (its opening sentences when the check fails, the generator fails or times out, or the backend is
        `extractive`; `fallback` says why)."""
        result = application.recommend(user_id, k=k, domain=domain, language=language, audience=audience,
                                       exclude_seen=exclude_seen, explain=explain, snapshot=snapshot,
                                       visibility=visibility)
        return metrics.observe("recommend", result)

    @get("/items/{doc_id:str}/similar", sync_to_thread=True, summary="More like this document",
         responses=error_responses(400, 401, 403, 404, 429, 503))
    def similar(self, application: Application, snapshot: Snapshot, metrics: Metrics, visibility: Visibility,
                doc_id: Annotated[str, Parameter(pattern=DOC_ID_PATTERN)], k: K = 10) -> RecommendationList:
        return metrics.observe("similar", application.similar(doc_id, k=k, snapshot=snapshot,
                                                              visibility=visibility))

    @get("/trending", sync_to_thread=True, summary="Trending documents",
         responses=error_responses(400, 401, 403, 429, 503))
    def trending(self, application: Application, snapshot: Snapshot, metrics: Metrics, visibility: Visibility,
                 domain: DomainParam = None, k: K = 10) -> RecommendationList:
        return metrics.observe("trending", application.trending(domain=domain, k=k, snapshot=snapshot,
                                                                visibility=visibility))

    @post("/events", status_code=200, sync_to_thread=True, summary="Ingest a batch of engagement events",
          responses=error_responses(400, 401, 403, 413, 429))
    def events(self, data: EventsRequest, application: Application) -> IngestReport:
        """Partial acceptance: good events are stored, bad ones come back in `rejected` naming the index and
        field; 400 only when the body itself is malformed (not a batch of 1..1000 objects)."""
        return application.record_events(list(data.events))
