"""Documents: read from the published snapshot, written to the source documents store.

Reads (list, get) come from the published snapshot, what search and answers actually use; a document's
`pending_change` says when the store holds a newer version (or a deletion) that the next build will pick up.

Writes go to `SourceDocuments`, the store under ``settings.documents_dir``: ``<domain>/<id>.md`` Markdown files with
YAML front matter, written atomically (temp file + fsync + rename). They reach search after the next build,
which indexes the store first, so a replacement of a document that came from a read-only source (e.g. the
bundled ``data/``) overrides it. A document that only exists in such a source cannot be deleted (Conflict).

`DocumentFields` (and `NewDocument`) are also the HTTP request bodies: their constraints are the API's.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from rag.access import Visibility, parse_access
from rag.config import Settings
from rag.durable import atomic_write, fsync_path
from rag.errors import Conflict, InvalidInput, NotFound, TooLarge
from rag.snapshot import Snapshot
from rag.types import DOMAINS, NONBLANK, Document, Domain, Language, NewDocId, Tag

PENDING_NOTE = "the change reaches search after the next index build: POST /v1/admin/index/rebuild or " \
               "`rag index build`"


class DocumentFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A document for the store (a replacement names its id apart)."""

    title: Annotated[str, Meta(min_length=1, max_length=500, pattern=NONBLANK, examples=["Emergency funds"])]
    text: Annotated[str, Meta(min_length=1, pattern=NONBLANK, description="Markdown body.",
                              examples=["An emergency fund covers three to six months of expenses."])]
    domain: Domain
    language: Language = "en"
    tags: Annotated[list[Tag], Meta(max_length=32)] = msgspec.field(default_factory=list)
    audience: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    date: dt.date | None = None
    source: Annotated[str, Meta(max_length=500)] | None = None
    # Groups that may read it (rag.access); none = public.
    access: Annotated[list[Annotated[str, Meta(min_length=1, max_length=64, pattern=NONBLANK)]],
                      Meta(max_length=32)] = msgspec.field(default_factory=list)


class NewDocument(DocumentFields, kw_only=True):
    """A new document with its id."""

    id: NewDocId


@dataclass(kw_only=True)
class DocumentMeta:
    doc_id: str
    title: str
    domain: str | None = None
    tags: list[str] = field(default_factory=list)
    audience: str | None = None
    language: str | None = None
    date: str | None = None
    access: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class DocumentSummary(DocumentMeta):
    n_chunks: int | None = None
    n_chars: int | None = None


@dataclass
class DocumentPage:
    items: list[DocumentSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    generation_id: str


@dataclass(kw_only=True)
class DocumentView(DocumentMeta):
    """One document: from the published snapshot when it is there (`indexed`), else from the store."""

    text: str
    indexed: bool
    in_store: bool
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    generation_id: str | None = None
    pending_change: Literal["create", "update", "delete"] | None = None
    note: str | None = None


@dataclass
class DocumentWrite:
    doc_id: str
    status: Literal["created", "replaced", "deleted"]
    domain: str | None = None
    indexed: bool = False  # a write reaches search with the next build


class SourceDocuments:
    """The writable source store: ``<documents_dir>/<domain>/<id>.md``.

    `load_documents` parses a stored file exactly as a build will (the builder's parser, `rag.builds.Builder`),
    so content hashes compare with the published snapshot's."""

    def __init__(self, settings: Settings, load_documents: Callable[[Sequence[Path]], list[Document]],
                 max_bytes: int | None = None):
        self.root = settings.documents_dir
        self.max_bytes = settings.service.max_document_bytes if max_bytes is None else max_bytes
        self._load_documents = load_documents
        self._lock = threading.Lock()

    def path_for(self, domain: str, doc_id: str) -> Path:
        return self.root / domain / f"{doc_id}.md"

    def find(self, doc_id: str) -> Path | None:
        for domain in DOMAINS:
            p = self.path_for(domain, doc_id)
            if p.is_file():
                return p
        return None

    def owns(self, path: str | None) -> bool:
        if not path:
            return False
        try:
            Path(path).resolve().relative_to(self.root.resolve())
            return True
        except (ValueError, OSError):
            return False

    def load(self, doc_id: str) -> Document | None:
        """The stored version, parsed exactly as a build will parse it."""
        path = self.find(doc_id)
        if path is None:
            return None
        return next((d for d in self._load_documents([path]) if d.doc_id == doc_id), None)

    @staticmethod
    def render(doc_id: str, doc: DocumentFields) -> bytes:
        meta: dict[str, Any] = {"id": doc_id, "title": doc.title.strip(), "domain": doc.domain,
                                "language": doc.language, "tags": list(doc.tags)}
        if doc.audience:
            meta["audience"] = doc.audience
        if doc.date:
            meta["date"] = doc.date.isoformat()
        meta["source"] = doc.source or "api"
        if doc.access:
            meta["access"] = list(doc.access)
        front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False, default_flow_style=False)
        return f"---\n{front}---\n\n{doc.text.strip()}\n".encode("utf-8")

    def write(self, doc_id: str, doc: DocumentFields, *, create: bool) -> DocumentWrite:
        """Created or replaced; Conflict (create, exists), TooLarge, InvalidInput (a blank title, text or tag)."""
        _check(doc)
        body = self.render(doc_id, doc)
        if len(body) > self.max_bytes:
            raise TooLarge(f"document is {len(body)} bytes; the limit is {self.max_bytes}", field="text")
        with self._lock:
            old = self.find(doc_id)
            if create and old is not None:
                raise Conflict(f"document {doc_id!r} already exists in the documents store; "
                               f"use PUT /v1/documents/{doc_id} to replace it", code="exists", field="id")
            target = self.path_for(doc.domain, doc_id)
            atomic_write(target, body, suffix=".md")
            if old is not None and old != target:  # the domain changed: the file moves
                old.unlink(missing_ok=True)
        return DocumentWrite(doc_id, "replaced" if old is not None else "created", doc.domain)

    def delete(self, doc_id: str) -> Path | None:
        """The path it had, or None when the store does not hold it."""
        with self._lock:
            path = self.find(doc_id)
            if path is None:
                return None
            path.unlink()
            fsync_path(path.parent)
            return path


def _check(doc: DocumentFields) -> None:
    """What the HTTP schema already enforces, for callers that build a DocumentFields in code."""
    if not doc.title.strip():
        raise InvalidInput("title must not be blank", field="title")
    if not doc.text.strip():
        raise InvalidInput("text must not be blank", field="text")
    for i, t in enumerate(doc.tags):
        if not t.strip():
            raise InvalidInput("tags must not be blank", field=f"tags[{i}]")
    if doc.domain not in DOMAINS:
        raise InvalidInput(f"domain must be one of {', '.join(DOMAINS)}", field="domain")
    try:
        parse_access(doc.access)
    except ValueError as e:
        raise InvalidInput(str(e), field="access") from e


class Documents:
    """The documents use cases over the published snapshot and the store (the application delegates here)."""

    def __init__(self, store: SourceDocuments):
        self.store = store

    def list(self, snapshot: Snapshot, *, domain: str | None = None, limit: int = 50, offset: int = 0,
             access: tuple[str, ...] | None = None) -> DocumentPage:
        if domain is not None and domain not in DOMAINS:
            raise InvalidInput(f"domain must be one of {', '.join(DOMAINS)}", field="domain")
        total, rows = snapshot.list_documents(domain=domain, limit=limit, offset=offset, access=access)
        items = [DocumentSummary(**row) for row in rows]
        nxt = offset + len(items) if offset + len(items) < total else None
        return DocumentPage(items=items, total=total, limit=limit, offset=offset, next_offset=nxt,
                            generation_id=snapshot.id)

    def get(self, snapshot: Snapshot | None, doc_id: str, *, visibility: Visibility | None = None) -> DocumentView:
        """From the published snapshot (None: none published yet); `pending_change` says when the store holds
        a newer version. A document only in the store (not built yet) comes from there with `indexed` false.
        A version the caller may not see counts as absent (`visibility`, rag.access)."""
        indexed, stored = self._versions(snapshot, doc_id, with_text=True)
        if visibility is not None:
            indexed = indexed if indexed is not None and visibility.sees(indexed.get("access")) else None
            stored = stored if stored is not None and visibility.sees(stored.access) else None
        if indexed is None and stored is None:
            raise NotFound(f"no document {doc_id!r}", field="doc_id")
        pending = None
        if stored is not None and indexed is None:
            pending = "create"
        elif stored is not None and indexed is not None and stored.content_hash != indexed.get("content_hash"):
            pending = "update"
        elif stored is None and indexed is not None and self.store.owns(_path_of(indexed)):
            pending = "delete"
        note = PENDING_NOTE if pending else None
        if indexed is not None:
            return DocumentView(doc_id=doc_id, title=indexed.get("title") or "", text=indexed.get("text") or "",
                                domain=indexed.get("domain"), tags=list(indexed.get("tags") or []),
                                audience=indexed.get("audience"), language=indexed.get("language"),
                                date=indexed.get("date"), source=public_source(indexed.get("source")),
                                access=list(indexed.get("access") or []),
                                metadata=_public_metadata(indexed.get("metadata")), indexed=True,
                                generation_id=snapshot.id, in_store=stored is not None, pending_change=pending,
                                note=note)
        return DocumentView(doc_id=doc_id, title=stored.title, text=stored.text, domain=stored.domain,
                            tags=list(stored.tags), audience=stored.audience, language=stored.language,
                            date=stored.date, source=public_source(stored.source), access=list(stored.access),
                            metadata=_public_metadata(stored.metadata), indexed=False,
                            generation_id=snapshot.id if snapshot is not None else None, in_store=True,
                            pending_change=pending, note=note)

    def _hidden(self, snapshot: Snapshot | None, doc_id: str, visibility: Visibility | None) -> bool:
        """Whether a version of the document exists (published or stored) that the caller may not see. A write
        must never replace or delete one: an admin key restricted to some groups manages those groups' documents
        and the public ones, nothing else."""
        if visibility is None or visibility.all:
            return False
        indexed, stored = self._versions(snapshot, doc_id, with_text=False)
        return (indexed is not None and not visibility.sees(indexed.get("access"))) or \
            (stored is not None and not visibility.sees(stored.access))

    def _versions(self, snapshot: Snapshot | None, doc_id: str, *, with_text: bool
                  ) -> tuple[dict[str, Any] | None, Document | None]:
        """(the published version, the stored version) of a document; None where there is none."""
        indexed = snapshot.document(doc_id, with_text=with_text) if snapshot is not None else None
        return indexed, self.store.load(doc_id)

    @staticmethod
    def _unavailable(doc_id: str) -> Conflict:
        # The same answer whatever keeps the id from this caller: it never tells what the document holds or who
        # may read it.
        return Conflict(f"document id {doc_id!r} is not available to this key; choose another id",
                        code="id_unavailable", field="id")

    def add(self, snapshot: Snapshot | None, doc: NewDocument, *,
            visibility: Visibility | None = None) -> DocumentWrite:
        """Conflict when the id exists in the store, or in the published snapshot from a read-only source
        (a replacement overrides it there), or belongs to a document the caller may not see."""
        if self._hidden(snapshot, doc.id, visibility):
            raise self._unavailable(doc.id)
        if snapshot is not None and self.store.find(doc.id) is None:
            existing = snapshot.document(doc.id, with_text=False)
            if existing is not None and not self.store.owns(_path_of(existing)):
                raise Conflict(f"document {doc.id!r} exists in the index from a read-only source; "
                               f"PUT /v1/documents/{doc.id} stores an overriding copy", code="exists", field="id")
        return self.store.write(doc.id, doc, create=True)

    def replace(self, doc_id: str, doc: DocumentFields, *, snapshot: Snapshot | None = None,
                visibility: Visibility | None = None) -> DocumentWrite:
        """Created or replaced in the store; Conflict when the id belongs to a document the caller may not see."""
        if self._hidden(snapshot, doc_id, visibility):
            raise self._unavailable(doc_id)
        return self.store.write(doc_id, doc, create=False)

    def delete(self, snapshot: Snapshot | None, doc_id: str, *, visibility: Visibility | None = None
               ) -> DocumentWrite:
        """Only documents of the store can be deleted; one that only exists in a read-only source is a
        Conflict, one the store already deleted (not rebuilt yet) is NotFound, and so is one the caller may
        not see (as though it did not exist)."""
        if self._hidden(snapshot, doc_id, visibility):
            raise NotFound(f"no document {doc_id!r}", field="doc_id")
        removed = self.store.delete(doc_id)
        if removed is not None:
            return DocumentWrite(doc_id, "deleted", removed.parent.name)
        indexed = snapshot.document(doc_id, with_text=False) if snapshot is not None else None
        if indexed is None:
            raise NotFound(f"no document {doc_id!r}", field="doc_id")
        if self.store.owns(_path_of(indexed)):
            raise NotFound(f"document {doc_id!r} was already deleted from the store; {PENDING_NOTE}",
                           field="doc_id")
        raise Conflict(f"document {doc_id!r} comes from a read-only source ({public_source(indexed.get('source'))}),"
                       " not the documents store; remove it from that source and rebuild", code="read_only_source",
                       field="doc_id")


def _path_of(record: dict[str, Any]) -> str | None:
    return (record.get("metadata") or {}).get("path")


def _public_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    meta = dict(metadata or {})
    meta.pop("path", None)  # a server path is nobody's business
    return meta


def public_source(source: Any) -> str | None:
    """Attribution as given; a server file path shortened to its last parts."""
    if not source:
        return None
    s = str(source)
    if s.startswith("/"):
        return "/".join(Path(s).parts[-2:])
    return s
