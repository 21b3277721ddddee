"""HTTP request and response types: `msgspec.Struct`s whose `Meta` constraints validate input and, through
Litestar's schema generation, document it in the OpenAPI document (limits, patterns, examples).

Requests forbid unknown fields, so a misspelled field (`topk`) is a 400 naming it instead of being ignored.
Responses are built by the controllers from the library's dataclasses (see `to_struct`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

# --- shared pieces ----------------------------------------------------------------------------------------

Domain = Literal["finance", "medical", "education"]
SearchMode = Literal["dense", "keyword", "hybrid"]
Backend = Literal["auto", "transformers", "openai", "extractive"]

DOC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"

# At least one visible character. Patterns are unanchored searches in both JSON Schema and msgspec; the class is
# the union of what Python's `\s` and ECMA-262's `\s` call space, so validators of either dialect agree.
NONBLANK = r"[^\s\x1c-\x1f\x85\ufeff]"

# Ids the documents store can hold: not "readme" (a README.md is never indexed as a document).
NEW_DOC_ID_PATTERN = r"^(?![Rr][Ee][Aa][Dd][Mm][Ee]$)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

DocId = Annotated[str, Meta(pattern=DOC_ID_PATTERN, description="Document id.", examples=["fin-index-funds"])]
NewDocId = Annotated[str, Meta(pattern=NEW_DOC_ID_PATTERN, description="Document id (not `readme`).",
                               examples=["fin-emergency-fund"])]
UserId = Annotated[str, Meta(pattern=USER_ID_PATTERN, description="User id.", examples=["u-0001"])]
Language = Annotated[str, Meta(pattern=LANGUAGE_PATTERN, description="ISO 639-1 code.", examples=["en"])]
Tag = Annotated[str, Meta(min_length=1, max_length=64, pattern=NONBLANK)]
TopK = Annotated[int, Meta(ge=1, le=50, description="How many passages/hits to return.")]


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


class CitationOut(Struct, kw_only=True):
    n: int
    doc_id: str
    chunk_id: str
    title: str
    span: str = ""
    score: float | None = None


class PassageOut(Struct, kw_only=True):
    n: int | None = None
    doc_id: str
    chunk_id: str
    title: str = ""
    text: str = ""
    score: float | None = None
    domain: str | None = None
    language: str | None = None
    heading: str = ""  # the chunk's heading path


class AskResponse(Struct, kw_only=True):
    answer: str
    citations: list[CitationOut]
    abstained: bool
    generation_id: str
    backend: str | None = None
    fallback: str | None = None  # why the extractive answer replaced the generated one, when it did
    invalid_citations_removed: int = 0
    passages: list[PassageOut] = msgspec.field(default_factory=list)
    disclaimer: str | None = None
    language: str | None = None
    timings_ms: dict[str, float] = msgspec.field(default_factory=dict)
    unsupported_sentences: int = 0
    citations_added: int = 0
    query: str | None = None  # the retrieval query (the question made standalone when history was given)
    expects: str | None = None  # what the question asks for: quantity, time, name, definition, list, yesno, other
    answerable: float | None = None  # the abstention model's confidence that the documents answer the question


# --- search -----------------------------------------------------------------------------------------------

class SearchRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """`domain` is a shortcut for `filters.domain`; given both, both apply."""

    query: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NONBLANK, examples=["expense ratio of ETFs"])]
    mode: SearchMode = "hybrid"
    domain: Domain | None = None
    filters: FiltersIn | None = None
    top_k: TopK | None = None
    rerank: bool | None = msgspec.field(default=None)


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
    hits: list[SearchHit]
    reranked: bool
    generation_id: str
    timings_ms: dict[str, float]


# --- summarize --------------------------------------------------------------------------------------------

class SummarizeRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """Exactly one of `doc_id`, `doc_ids`, `query` (the OpenAPI document says so with `oneOf`)."""

    doc_id: DocId | msgspec.UnsetType = msgspec.UNSET
    doc_ids: Annotated[list[DocId], Meta(min_length=1, max_length=20)] | msgspec.UnsetType = msgspec.UNSET
    query: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NONBLANK)] | msgspec.UnsetType = \
        msgspec.UNSET
    filters: FiltersIn | msgspec.UnsetType = msgspec.UNSET  # with `query` only
    style: Literal["brief", "bullets"] = "brief"
    max_words: Annotated[int, Meta(ge=10, le=1000)] = 120
    backend: Backend | None = None


class SummaryResponse(Struct, kw_only=True):
    summary: str
    generation_id: str
    style: str = "brief"
    doc_ids: list[str] = msgspec.field(default_factory=list)
    citations: list[CitationOut] = msgspec.field(default_factory=list)
    backend: str | None = None
    fallback: bool | str | None = None
    abstained: bool = False
    disclaimer: str | None = None
    language: str | None = None
    words: int | None = None
    invalid_citations_removed: int = 0
    unsupported_sentences: int = 0
    timings_ms: dict[str, float] = msgspec.field(default_factory=dict)


# --- recommendations --------------------------------------------------------------------------------------

class RecItem(Struct, kw_only=True):
    doc_id: str
    title: str
    domain: str | None = None
    score: float
    reason: str | None = None
    blurb: str | None = None


class RecommendationsResponse(Struct, kw_only=True):
    items: list[RecItem]
    strategy: str
    generation_id: str
    user_id: str | None = None
    timings_ms: dict[str, float] = msgspec.field(default_factory=dict)


class EventsRequest(Struct, forbid_unknown_fields=True):
    """A batch of interaction events. Each event is validated on its own: bad ones are reported, good ones kept."""

    events: Annotated[list[dict[str, Any]], Meta(
        min_length=1, max_length=1000,
        examples=[[{"user_id": "u-0001", "doc_id": "fin-index-funds", "type": "click",
                    "ts": "2025-06-01T12:00:00Z"}]])]


class RejectedEvent(Struct):
    index: int
    field: str | None
    reason: str


class EventsResponse(Struct, kw_only=True):
    accepted: int
    duplicates: int
    rejected: list[RejectedEvent]


# --- documents --------------------------------------------------------------------------------------------

class DocumentFields(Struct, forbid_unknown_fields=True, kw_only=True):
    """A document for the store (PUT /v1/documents/{doc_id}: the id is the path's)."""

    title: Annotated[str, Meta(min_length=1, max_length=500, pattern=NONBLANK, examples=["Emergency funds"])]
    text: Annotated[str, Meta(min_length=1, pattern=NONBLANK, description="Markdown body.",
                              examples=["An emergency fund covers three to six months of expenses."])]
    domain: Domain
    language: Language = "en"
    tags: Annotated[list[Tag], Meta(max_length=32)] = msgspec.field(default_factory=list)
    audience: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    date: dt.date | None = None
    source: Annotated[str, Meta(max_length=500)] | None = None


class DocumentIn(DocumentFields, kw_only=True):
    """A new document (POST /v1/documents)."""

    id: NewDocId


class DocumentSummary(Struct, kw_only=True):
    doc_id: str
    title: str
    domain: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    audience: str | None = None
    language: str | None = None
    date: str | None = None
    n_chunks: int | None = None
    n_chars: int | None = None


class DocumentList(Struct, kw_only=True):
    items: list[DocumentSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    generation_id: str


class DocumentOut(Struct, kw_only=True):
    doc_id: str
    title: str
    text: str
    domain: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    audience: str | None = None
    language: str | None = None
    date: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    indexed: bool
    generation_id: str | None = None
    in_store: bool
    pending_change: Literal["create", "update", "delete"] | None = None
    note: str | None = None


class RebuildHint(Struct):
    method: str
    path: str


class DocumentWriteResponse(Struct, kw_only=True):
    doc_id: str
    status: Literal["created", "replaced", "deleted"]
    domain: str | None = None
    indexed: bool = False
    message: str
    rebuild: RebuildHint


# --- admin ------------------------------------------------------------------------------------------------

class RebuildRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    sources: Annotated[list[Annotated[str, Meta(min_length=1, max_length=4096)]],
                       Meta(min_length=1, max_length=64)] | None = None
    embedder: Annotated[str, Meta(min_length=1, max_length=4096, examples=["minilm"])] | None = None
    # By default a rebuild whose documents, embedder and settings equal the published generation's writes
    # nothing and reports `unchanged`; force writes (and publishes) a new generation anyway.
    force: bool = False


class JobOut(Struct, kw_only=True):
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed"]
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None


class GenerationOut(Struct, kw_only=True):
    id: str
    published: bool
    loaded: bool
    created_at: str
    embedder: dict[str, Any]
    counts: dict[str, Any]
    index_type: str
    sources: list[str]
    parent: str | None = None
    build_seconds: float | None = None
    manifest: dict[str, Any]


class RollbackRequest(Struct, forbid_unknown_fields=True):
    generation_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                                       examples=["g20250101-120000-abcd"])]


class RollbackResponse(Struct):
    published: str
    previous: str | None


# --- health -----------------------------------------------------------------------------------------------

class HealthResponse(Struct):
    status: str


class ReadyResponse(Struct, kw_only=True):
    status: str
    generation_id: str | None = None
    embedder: str | None = None
    documents: int | None = None
    chunks: int | None = None
    reason: str | None = None


# --- conversion -------------------------------------------------------------------------------------------

def plain(obj: Any) -> Any:
    """Dataclasses (possibly nested) and structs to builtins, tolerant of fields the response does not name."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Struct):
        return {f: plain(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (dt.date, dt.datetime)):
        return obj.isoformat()
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    return obj


def to_struct(obj: Any, typ: type, **extra: Any) -> Any:
    """Build the response struct `typ` from a library object, dropping fields it does not declare."""
    data = plain(obj) if not isinstance(obj, dict) else plain(obj)
    data.update(extra)
    return msgspec.convert(data, typ, strict=False)


NO_DOMAIN = "\x00none"  # a domain no document has: the filter for "these constraints exclude everything"


def to_filters(filters: FiltersIn | None, domain: str | None = None):
    """Request filters (+ the `domain` shortcut) -> `rag.types.Filters`. All constraints apply together, so
    contradictory ones (disjoint domains, `date_from` after `date_to`) simply match nothing."""
    from rag.types import Filters

    f = filters or FiltersIn()
    f_domain = f.domain
    if domain is not None:
        # Both apply (filters are a conjunction): their intersection; disjoint ones match nothing.
        listed = None if f_domain is None else ([f_domain] if isinstance(f_domain, str) else list(f_domain))
        f_domain = domain if listed is None or domain in listed else [NO_DOMAIN]
    return Filters.of(domain=f_domain, tags=f.tags, language=f.language, audience=f.audience,
                      date_from=f.date_from.isoformat() if f.date_from else None,
                      date_to=f.date_to.isoformat() if f.date_to else None, doc_ids=f.doc_ids)


def nonblank(value: str, field: str) -> str:
    from service.errors import bad_request

    v = value.strip()
    if not v:
        raise bad_request(f"{field} must not be blank", field=field)
    return v
