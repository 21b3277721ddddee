"""HTTP request and response types.

Requests are `msgspec.Struct`s whose `Meta` constraints validate input and, through Litestar's schema generation,
document it in the OpenAPI document (limits, patterns, examples); they forbid unknown fields, so a misspelled
field (`topk`) is a 400 naming it instead of being ignored. Each turns itself into the keyword arguments of its
`rag.application.Application` call (`arguments()`), and the choices (`Domain`, `SearchMode`, `Backend`,
`SummaryStyle`) are the library's own.

Responses are the library's typed results where the wire shape is theirs (`Answer`, `Summary`,
`RecommendationList`, `IngestReport`, `DocumentPage`, `DocumentView`, `Job`, `SnapshotInfo`, `Rollback`,
`Readiness`); two wrap one where the wire says more than the library knows (`SearchResponse`: each hit's legs;
`DocumentWriteResponse`: how to rebuild).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from litestar.params import Parameter
from msgspec import Meta, Struct

from rag.answering import Answer
from rag.application import Readiness, Rollback, SnapshotInfo
from rag.config import Backend
from rag.documents import DocumentFields, DocumentPage, DocumentView, DocumentWrite, NewDocument
from rag.events import IngestReport
from rag.jobs import Job
from rag.recommend import RecommendationList
from rag.retriever import SearchResult
from rag.summarize import Summary, SummaryStyle
from rag.types import (
    DOC_ID_PATTERN,
    LANGUAGE_PATTERN,
    NEW_DOC_ID_PATTERN,
    NONBLANK,
    USER_ID_PATTERN,
    DocId,
    Domain,
    Filters,
    Language,
    SearchMode,
    SearchResults,
    Tag,
    UserId,
)

__all__ = ["Answer", "AskRequest", "Backend", "DOC_ID_PATTERN", "DocumentFields", "DocumentPage", "DocumentView",
           "DocumentWriteResponse", "Domain", "DomainParam", "ErrorBody", "EventsRequest", "HealthResponse",
           "IngestReport", "Job", "LANGUAGE_PATTERN", "NEW_DOC_ID_PATTERN", "NewDocument", "Readiness",
           "RebuildRequest", "RecommendationList", "Rollback", "RollbackRequest", "SearchRequest", "SearchResponse",
           "SnapshotInfo", "SummarizeRequest", "Summary", "USER_ID_PATTERN"]

TopK = Annotated[int, Meta(ge=1, le=50, description="How many passages/hits to return.")]
DomainParam = Annotated[Domain | None, Parameter(description="Only this domain.")]  # a query parameter


class FiltersIn(Struct, forbid_unknown_fields=True, kw_only=True):
    """Metadata filters, applied inside both retrieval legs (never after truncation)."""

    domain: Domain | Annotated[list[Domain], Meta(min_length=1, max_length=3)] | None = None
    tags: Tag | Annotated[list[Tag], Meta(min_length=1, max_length=32)] | None = None
    language: Language | Annotated[list[Language], Meta(min_length=1, max_length=16)] | None = None
    audience: Annotated[str, Meta(min_length=1, max_length=64)] | Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(min_length=1, max_length=16)] | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    doc_ids: Annotated[list[DocId], Meta(min_length=1, max_length=200)] | None = None


NO_DOMAIN = "\x00none"  # a domain no document has: the filter for "these constraints exclude everything"


def to_filters(filters: FiltersIn | None, domain: str | None = None) -> Filters:
    """Request filters (+ the `domain` shortcut) -> `rag.types.Filters`. All constraints apply together, so
    contradictory ones (disjoint domains, `date_from` after `date_to`) simply match nothing."""
    f = filters or FiltersIn()
    f_domain = f.domain
    if domain is not None:
        # Both apply (filters are a conjunction): their intersection; disjoint ones match nothing.
        listed = None if f_domain is None else ([f_domain] if isinstance(f_domain, str) else list(f_domain))
        f_domain = domain if listed is None or domain in listed else [NO_DOMAIN]
    return Filters.of(domain=f_domain, tags=f.tags, language=f.language, audience=f.audience,
                      date_from=f.date_from.isoformat() if f.date_from else None,
                      date_to=f.date_to.isoformat() if f.date_to else None, doc_ids=f.doc_ids)


class Turn(Struct, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: Annotated[str, Meta(min_length=1, max_length=4000, pattern=NONBLANK)]


class ErrorDetail(Struct, omit_defaults=True):
    code: Annotated[str, Meta(examples=["validation_error"])]
    message: str
    request_id: str = ""
    field: str | None = None
    hint: str | None = None
    job: dict[str, Any] | None = None  # the running job, on a 409 for a second rebuild


class ErrorBody(Struct):
    """Every error response: a code, a readable message, the offending field for validation errors, and the
    request id to quote when reporting it."""

    error: ErrorDetail


# --- ask --------------------------------------------------------------------------------------------------

class AskRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """`domain` is a shortcut for `filters.domain`; given both, both apply."""

    question: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NONBLANK,
                                  description="The question, 1..2000 characters.",
                                  examples=["How often should I rebalance an index fund portfolio?"])]
    domain: Domain | None = None
    filters: FiltersIn | None = None
    top_k: TopK | None = None
    history: Annotated[list[Turn], Meta(max_length=20)] = msgspec.field(default_factory=list)
    user_id: UserId | None = None
    backend: Backend | None = None
    mode: SearchMode = "hybrid"
    stream: bool = msgspec.field(default=False)

    def arguments(self) -> dict[str, Any]:
        return {"question": self.question, "filters": to_filters(self.filters, self.domain), "top_k": self.top_k,
                "history": [{"role": t.role, "content": t.content} for t in self.history],
                "backend": self.backend, "mode": self.mode}


# --- search -----------------------------------------------------------------------------------------------

class SearchRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """`domain` is a shortcut for `filters.domain`; given both, both apply."""

    query: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NONBLANK, examples=["expense ratio of ETFs"])]
    mode: SearchMode = "hybrid"
    domain: Domain | None = None
    filters: FiltersIn | None = None
    top_k: TopK | None = None
    rerank: bool | None = msgspec.field(default=None)
    # "documents": one hit per document (its best passage), documents ranked by it; "chunks": passages
    results: SearchResults = "chunks"

    def arguments(self) -> dict[str, Any]:
        return {"query": self.query, "mode": self.mode, "filters": to_filters(self.filters, self.domain),
                "top_k": self.top_k, "rerank": self.rerank, "results": self.results}


class LegRanks(Struct, kw_only=True):
    dense_rank: int | None = None
    dense_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None
    rerank_score: float | None = None


class SearchHit(Struct, kw_only=True):
    doc_id: str
    chunk_id: str
    title: str
    text: str
    score: float
    heading_path: list[str]
    metadata: dict[str, Any]
    legs: LegRanks


class SearchResponse(Struct, kw_only=True):
    query: str
    mode: SearchMode
    results: SearchResults
    hits: list[SearchHit]
    reranked: bool
    generation_id: str
    timings_ms: dict[str, float]

    @classmethod
    def of(cls, res: SearchResult, results: str = "chunks") -> "SearchResponse":
        """A search result with each hit's ranks and scores per leg grouped under `legs` (and no FAISS row)."""
        hits = [SearchHit(doc_id=h.doc_id, chunk_id=h.chunk_id, title=h.title, text=h.text, score=float(h.score),
                          heading_path=list(h.heading_path), metadata=dict(h.metadata),
                          legs=LegRanks(dense_rank=h.dense_rank, dense_score=h.dense_score,
                                        keyword_rank=h.keyword_rank, keyword_score=h.keyword_score,
                                        rerank_score=h.rerank_score))
                for h in res.hits]
        return cls(query=res.query, mode=res.mode, results=results, hits=hits, reranked=res.reranked,
                   generation_id=res.generation_id,
                   timings_ms={k: round(float(v), 3) for k, v in res.timings_ms.items()})


# --- summarize --------------------------------------------------------------------------------------------

class SummarizeRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """Exactly one of `doc_id`, `doc_ids`, `query` (the OpenAPI document says so with `oneOf`)."""

    doc_id: DocId | msgspec.UnsetType = msgspec.UNSET
    doc_ids: Annotated[list[DocId], Meta(min_length=1, max_length=20)] | msgspec.UnsetType = msgspec.UNSET
    query: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NONBLANK)] | msgspec.UnsetType = \
        msgspec.UNSET
    filters: FiltersIn | msgspec.UnsetType = msgspec.UNSET  # with `query` only
    style: SummaryStyle = "brief"
    max_words: Annotated[int, Meta(ge=10, le=1000)] | None = None  # None: more words for more sections
    backend: Backend | None = None

    def arguments(self) -> dict[str, Any]:
        given = {name: getattr(self, name) for name in ("doc_id", "doc_ids", "query")
                 if getattr(self, name) is not msgspec.UNSET}
        filters = None if self.filters is msgspec.UNSET else to_filters(self.filters)
        return {**given, "filters": filters, "style": self.style, "max_words": self.max_words,
                "backend": self.backend}


# --- recommendations --------------------------------------------------------------------------------------

class EventsRequest(Struct, forbid_unknown_fields=True):
    """A batch of interaction events. Each event is validated on its own: bad ones are reported, good ones kept."""

    events: Annotated[list[dict[str, Any]], Meta(
        min_length=1, max_length=1000,
        examples=[[{"user_id": "u-0001", "doc_id": "fin-index-funds", "type": "click",
                    "ts": "2025-06-01T12:00:00Z"}]])]


# --- documents --------------------------------------------------------------------------------------------

class RebuildHint(Struct):
    method: str
    path: str


REBUILD = RebuildHint(method="POST", path="/v1/admin/index/rebuild")


class DocumentWriteResponse(Struct, kw_only=True):
    doc_id: str
    status: Literal["created", "replaced", "deleted"]
    domain: str | None = None
    indexed: bool = False
    message: str
    rebuild: RebuildHint

    @classmethod
    def of(cls, w: DocumentWrite) -> "DocumentWriteResponse":
        verb = {"created": "stored", "replaced": "replaced", "deleted": "deleted from the store"}[w.status]
        return cls(doc_id=w.doc_id, status=w.status, domain=w.domain, indexed=w.indexed, rebuild=REBUILD,
                   message=f"document {w.doc_id} {verb}; the change reaches search after the next index build: "
                           f"{REBUILD.method} {REBUILD.path}")


# --- admin ------------------------------------------------------------------------------------------------

class RebuildRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    sources: Annotated[list[Annotated[str, Meta(min_length=1, max_length=4096)]],
                       Meta(min_length=1, max_length=64)] | None = None
    embedder: Annotated[str, Meta(min_length=1, max_length=4096, examples=["minilm"])] | None = None
    # By default a rebuild whose documents, embedder and settings equal the published generation's writes
    # nothing and reports `unchanged`; force writes (and publishes) a new generation anyway.
    force: bool = False

    def arguments(self) -> dict[str, Any]:
        return {"sources": self.sources, "embedder": self.embedder, "force": self.force}


class RollbackRequest(Struct, forbid_unknown_fields=True):
    generation_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                                       examples=["g20250101-120000-abcd"])]


# --- health -----------------------------------------------------------------------------------------------

class HealthResponse(Struct):
    status: str


# The library types a response reuses, for the OpenAPI refinement (their exact JSON Schema from msgspec).
RESPONSE_TYPES = (Answer, Summary, RecommendationList, IngestReport, DocumentPage, DocumentView, Job, SnapshotInfo,
                  Rollback, Readiness)
