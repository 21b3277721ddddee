"""POST /v1/search: passages from the hybrid retriever (dense, keyword or both fused), with the legs' ranks."""

from __future__ import annotations

from litestar import Controller, post

from rag.engine import Engine
from rag.snapshot import Snapshot
from service.errors import bad_request, error_responses
from service.metrics import Metrics
from service.schemas import LegRanks, SearchHit, SearchRequest, SearchResponse, nonblank, to_filters


class SearchController(Controller):
    path = "/search"
    tags = ["search"]

    @post("", status_code=200, sync_to_thread=True, summary="Search passages",
          responses=error_responses(400, 401, 403, 413, 429, 503))
    def search(self, data: SearchRequest, engine: Engine, snapshot: Snapshot, metrics: Metrics) -> SearchResponse:
        """Hybrid search: dense (FAISS) + keyword (BM25) under the same metadata filters, fused with RRF;
        `rerank: true` needs a cross-encoder configured (`retrieval.reranker`)."""
        query = nonblank(data.query, "query")
        if data.rerank and not engine.retriever.can_rerank:
            raise bad_request("rerank: no reranker is configured on this server (settings.retrieval.reranker)",
                              field="rerank")
        filters = to_filters(data.filters, data.domain)
        res = engine.search(query, mode=data.mode, filters=filters, top_k=data.top_k, rerank=data.rerank, snapshot=snapshot)
        metrics.observe_timings("search", res.timings_ms)
        hits = [SearchHit(doc_id=h.doc_id, chunk_id=h.chunk_id, title=h.title, text=h.text, score=float(h.score),
                          heading_path=list(h.heading_path), metadata=dict(h.metadata),
                          legs=LegRanks(dense_rank=h.dense_rank, dense_score=h.dense_score,
                                        keyword_rank=h.keyword_rank, keyword_score=h.keyword_score,
                                        rerank_score=h.rerank_score))
                for h in res.hits]
        return SearchResponse(query=res.query, mode=res.mode, hits=hits, reranked=res.reranked,
                              generation_id=res.generation_id,
                              timings_ms={k: round(float(v), 3) for k, v in res.timings_ms.items()})
