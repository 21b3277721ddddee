"""Domain objects shared by the indexer, the library and the service.

Plain dataclasses on purpose: they cross process and module boundaries (indexer -> DuckDB -> retriever ->
HTTP schemas) and must stay cheap to build and easy to read.
"""

from __future__ import annotations

import hashlib
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from msgspec import Meta

# Choices shared by the library, the HTTP schemas and the CLI: written once, here.
Domain = Literal["finance", "medical", "education"]
DOMAINS: tuple[str, ...] = typing.get_args(Domain)
SearchMode = Literal["dense", "keyword", "hybrid"]
SEARCH_MODES: tuple[str, ...] = typing.get_args(SearchMode)
# What a search returns: passages (chunks, at most `retrieval.max_per_doc` per document) or documents (each by its
# best passage, ranked by it: how the retrieval figures rank documents).
SearchResults = Literal["chunks", "documents"]
SEARCH_RESULTS: tuple[str, ...] = typing.get_args(SearchResults)

# Ids and short texts as every way in (HTTP bodies, the documents store) accepts them.
DOC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"
# Ids the documents store can hold: not "readme" (a README.md is never indexed as a document).
NEW_DOC_ID_PATTERN = r"^(?![Rr][Ee][Aa][Dd][Mm][Ee]$)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# At least one visible character. Patterns are unanchored searches in both JSON Schema and msgspec; the class is
# the union of what Python's `\s` and ECMA-262's `\s` call space, so validators of either dialect agree.
NONBLANK = r"[^\s\x1c-\x1f\x85\ufeff]"

DocId = Annotated[str, Meta(pattern=DOC_ID_PATTERN, description="Document id.", examples=["fin-index-funds"])]
NewDocId = Annotated[str, Meta(pattern=NEW_DOC_ID_PATTERN, description="Document id (not `readme`).",
                               examples=["fin-emergency-fund"])]
UserId = Annotated[str, Meta(pattern=USER_ID_PATTERN, description="User id.", examples=["u-0001"])]
Language = Annotated[str, Meta(pattern=LANGUAGE_PATTERN, description="ISO 639-1 code.", examples=["en"])]
Tag = Annotated[str, Meta(min_length=1, max_length=64, pattern=NONBLANK)]


@dataclass
class Document:
    """One source document with its metadata, as a loader produced it."""

    doc_id: str
    text: str
    title: str = ""
    domain: str | None = None
    tags: list[str] = field(default_factory=list)
    audience: str | None = None
    language: str | None = None  # ISO 639-1 ("en", "zh"); detected when the source does not say
    date: str | None = None  # ISO date "YYYY-MM-DD"
    source: str = ""  # path or URI it came from
    format: str = "txt"  # md | txt | html | pdf | jsonl | csv | beir
    metadata: dict[str, Any] = field(default_factory=dict)  # anything else the source carried
    access: list[str] = field(default_factory=list)  # group names (rag.access); empty = public

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for part in (self.title, self.text, self.domain or "", ",".join(self.tags), self.audience or "",
                     self.language or "", self.date or ""):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        if self.access:  # only then, so the hashes of public documents stay what they were
            h.update(("access\x00" + "\x1f".join(sorted(self.access))).encode("utf-8"))
        return h.hexdigest()


@dataclass
class Chunk:
    """A retrievable span of a document. `row` is its FAISS id inside one generation."""

    chunk_id: str  # f"{doc_id}#{ordinal}"
    doc_id: str
    ordinal: int
    text: str
    heading_path: list[str] = field(default_factory=list)
    kind: str = "text"  # text | table
    n_tokens: int = 0
    start_char: int | None = None  # offsets into Document.text where the loader can tell
    end_char: int | None = None

    def embed_text(self, title: str = "") -> str:
        """What the embedder sees: title and heading path give a short chunk its context."""
        head = " > ".join(p for p in [title, *self.heading_path] if p)
        return f"{head}\n{self.text}" if head else self.text

    def content_hash(self, title: str = "") -> str:
        """Key of the embedding cache: same embed text, same vector."""
        return hashlib.sha256(self.embed_text(title).encode("utf-8")).hexdigest()


@dataclass
class SkippedSource:
    path: str
    reason: str


@dataclass
class Filters:
    """Metadata filters. Applied inside each retrieval leg, never after truncation."""

    domain: list[str] | None = None
    tags: list[str] | None = None  # a chunk matches when its document has ANY of these tags
    language: list[str] | None = None
    audience: list[str] | None = None
    date_from: str | None = None  # inclusive ISO dates
    date_to: str | None = None
    doc_ids: list[str] | None = None
    # The caller's visibility (rag.access.Visibility.key()): public documents plus those labelled with one of these
    # groups; None = no restriction. Set by the application from the principal, never from request input.
    access: tuple[str, ...] | None = None

    def is_empty(self) -> bool:
        return self.access is None and not any((self.domain, self.tags, self.language, self.audience,
                                                self.date_from, self.date_to, self.doc_ids))

    @staticmethod
    def _as_list(v: Any) -> list[str] | None:
        if v is None or v == "" or v == []:
            return None
        if isinstance(v, str):
            return [v]
        return [str(x) for x in v]

    @classmethod
    def of(cls, **kw: Any) -> "Filters":
        """Build from loose input (a string or a list per field)."""
        return cls(
            domain=cls._as_list(kw.get("domain")),
            tags=cls._as_list(kw.get("tags")),
            language=cls._as_list(kw.get("language")),
            audience=cls._as_list(kw.get("audience")),
            date_from=kw.get("date_from") or None,
            date_to=kw.get("date_to") or None,
            doc_ids=cls._as_list(kw.get("doc_ids")),
        )

    def key(self) -> tuple:
        return (tuple(self.domain or ()), tuple(self.tags or ()), tuple(self.language or ()),
                tuple(self.audience or ()), self.date_from, self.date_to, tuple(self.doc_ids or ()), self.access)


@dataclass
class Hit:
    """One retrieved chunk with the evidence of how each leg ranked it."""

    row: int
    chunk_id: str
    doc_id: str
    title: str
    text: str
    score: float
    heading_path: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # domain, tags, language, audience, date, source
    dense_rank: int | None = None
    dense_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None
    rerank_score: float | None = None
