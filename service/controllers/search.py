"""POST /v1/search: passages from the hybrid retriever (dense, keyword or both fused), with the legs' ranks."""

from __future__ import annotations

from litestar import Controller, post

from rag.access import Visibility
from rag.application import Application
from rag.snapshot import Snapshot
from service.errors import error_responses
from service.metrics import Metrics
from service.schemas import SearchRequest, SearchResponse


class SearchController(Controller):
    path = "/search"
    tags = ["search"]

    @post("", status_code=200, sync_to_thread=True, summary="Search passages",
          responses=error_responses(400, 401, 403, 413, 429, 503))
    def search(self, data: SearchRequest, application: Application, snapshot: Snapshot,
               metrics: Metrics, visibility: Visibility) -> SearchResponse:
        """Hybrid search: dense (FAISS) + keyword (BM25) under the same metadata filters, fused (z-score by
        default); `rerank: true` needs a cross-encoder configured (`retrieval.reranker`)."""
        result = application.search(**data.arguments(), snapshot=snapshot, visibility=visibility)
        return SearchResponse.of(metrics.observe("search", result), data.results)
