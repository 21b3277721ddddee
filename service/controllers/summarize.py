"""POST /v1/summarize: a summary of one document, several, or the documents a query finds."""

from __future__ import annotations

from litestar import Controller, post

from rag.access import Visibility
from rag.application import Application
from rag.snapshot import Snapshot
from rag.summarize import Summary
from service.errors import error_responses
from service.metrics import Metrics
from service.schemas import SummarizeRequest


class SummarizeController(Controller):
    path = "/summarize"
    tags = ["summaries"]

    @post("", status_code=200, sync_to_thread=True, summary="Summarize a document, several, or a topic",
          responses=error_responses(400, 401, 403, 404, 413, 429, 503))
    def summarize(self, data: SummarizeRequest, application: Application, snapshot: Snapshot,
                  metrics: Metrics, visibility: Visibility) -> Summary:
        """Exactly one of `doc_id`, `doc_ids`, `query`. Unknown document ids are a 404 naming the id. When the
        generator is unavailable, fails, times out or is not supported by the documents, the extractive summary
        answers and `fallback` says why."""
        return metrics.observe("summarize", application.summarize(**data.arguments(), snapshot=snapshot,
                                                                  visibility=visibility))
