"""Documents: read from the published generation, write to the source store.

Reads (``GET /v1/documents``, ``GET /v1/documents/{doc_id}``) come from the published generation, what search
and answers actually use; a document's ``pending_change`` says when the store holds a newer version (or a
deletion) that the next build will pick up.

Writes go to the documents store ``settings.documents_dir`` as ``<domain>/<id>.md`` Markdown files with YAML
front matter, written atomically (temp file + fsync + rename). They reach search after the next build
(``POST /v1/admin/index/rebuild``), which indexes the store first, so a ``PUT`` of a document that came from a
read-only source (e.g. the bundled ``data/``) overrides it. A document that only exists in such a source
cannot be deleted through the API (409).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

import yaml
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from rag.config import Settings
from rag.engine import Engine
from rag.published import NoSnapshot
from rag.types import DOMAINS, Document
from service.errors import GENERATION_ID_KEY, ServiceError, bad_request, error_responses
from service.schemas import (
    DOC_ID_PATTERN,
    NEW_DOC_ID_PATTERN,
    Domain,
    DocumentFields,
    DocumentIn,
    DocumentList,
    DocumentOut,
    DocumentSummary,
    DocumentWriteResponse,
    RebuildHint,
)

REBUILD = RebuildHint(method="POST", path="/v1/admin/index/rebuild")
PENDING_NOTE = "the change reaches search after the next index build: POST /v1/admin/index/rebuild"


class DocumentStore:
    """The writable source store: ``<documents_dir>/<domain>/<id>.md``."""

    def __init__(self, settings: Settings, max_bytes: int | None = None):
        self.root = settings.documents_dir
        self.max_bytes = settings.service.max_document_bytes if max_bytes is None else max_bytes
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
        """The stored version, parsed exactly as a build will parse it (so content hashes compare)."""
        from indexer.loaders import load_sources

        path = self.find(doc_id)
        if path is None:
            return None
        result = load_sources([path])
        for d in result.documents:
            if d.doc_id == doc_id:
                return d
        return None

    def render(self, doc_id: str, doc: DocumentFields) -> bytes:
        meta: dict[str, Any] = {"id": doc_id, "title": doc.title.strip(), "domain": doc.domain,
                                "language": doc.language, "tags": list(doc.tags)}
        if doc.audience:
            meta["audience"] = doc.audience
        if doc.date:
            meta["date"] = doc.date.isoformat()
        meta["source"] = doc.source or "api"
        front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False, default_flow_style=False)
        return f"---\n{front}---\n\n{doc.text.strip()}\n".encode("utf-8")

    def write(self, doc_id: str, doc: DocumentFields, *, create: bool) -> tuple[str, Path]:
        """('created' | 'replaced', path). Raises ServiceError 409 (create, exists) / 413 (too large)."""
        body = self.render(doc_id, doc)
        if len(body) > self.max_bytes:
            raise ServiceError(413, f"document is {len(body)} bytes; the limit is {self.max_bytes}",
                               code="payload_too_large", field="text")
        with self._lock:
            old = self.find(doc_id)
            if create and old is not None:
                raise ServiceError(409, f"document {doc_id!r} already exists in the documents store; "
                                        f"use PUT /v1/documents/{doc_id} to replace it", code="exists", field="id")
            target = self.path_for(doc.domain, doc_id)
            _atomic_write(target, body)
            if old is not None and old != target:  # the domain changed: the file moves
                old.unlink(missing_ok=True)
        return ("replaced" if old is not None else "created"), target

    def delete(self, doc_id: str) -> bool:
        with self._lock:
            path = self.find(doc_id)
            if path is None:
                return False
            path.unlink()
            _fsync_dir(path.parent)
            return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(target: Path, body: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot: a build that runs meanwhile skips the temp file (loaders ignore hidden files).
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".md", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_doc(doc: DocumentFields, doc_id: str) -> None:
    if not doc.title.strip():
        raise bad_request("title must not be blank", field="title")
    if not doc.text.strip():
        raise bad_request("text must not be blank", field="text")
    for i, t in enumerate(doc.tags):
        if not t.strip():
            raise bad_request("tags must not be blank", field=f"tags[{i}]")


def _published(engine: Engine, request: Request):
    try:
        snapshot = engine.snapshot()
    except NoSnapshot:
        return None
    request.scope.setdefault("state", {})[GENERATION_ID_KEY] = snapshot.id
    return snapshot


def _write_response(doc_id: str, status: str, domain: str | None) -> DocumentWriteResponse:
    verb = {"created": "stored", "replaced": "replaced", "deleted": "deleted from the store"}[status]
    return DocumentWriteResponse(doc_id=doc_id, status=status, domain=domain, indexed=False,
                                 message=f"document {doc_id} {verb}; {PENDING_NOTE}", rebuild=REBUILD)


DocIdParam = Annotated[str, Parameter(pattern=DOC_ID_PATTERN, description="Document id.")]
NewDocIdParam = Annotated[str, Parameter(pattern=NEW_DOC_ID_PATTERN, description="Document id (not `readme`).")]


class DocumentsController(Controller):
    path = "/documents"
    tags = ["documents"]

    @get("", sync_to_thread=True, summary="List documents of the published generation",
         responses=error_responses(400, 401, 403, 429, 503))
    def list_documents(
        self, engine: Engine, request: Request,
        domain: Annotated[Domain | None, Parameter(description="Only this domain.")] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
    ) -> DocumentList:
        if domain is not None and domain not in DOMAINS:
            raise bad_request(f"domain must be one of {', '.join(DOMAINS)}", field="domain")
        snapshot = engine.snapshot()  # NoSnapshot -> 503
        request.scope.setdefault("state", {})[GENERATION_ID_KEY] = snapshot.id
        where, params = ("WHERE domain = ?", [domain]) if domain else ("", [])
        total = int(snapshot.sql(f"SELECT count(*) FROM documents {where}", params).fetchone()[0])
        cur = snapshot.sql(f"SELECT doc_id, title, domain, tags, audience, language, date, n_chunks, n_chars "
                      f"FROM documents {where} ORDER BY doc_id LIMIT ? OFFSET ?", [*params, limit, offset])
        items = []
        for rec in cur.fetchall():
            d = dict(zip([c[0] for c in cur.description], rec))
            d["date"] = d["date"].isoformat() if d["date"] is not None else None
            d["tags"] = list(d["tags"] or [])
            d["title"] = d["title"] or ""
            items.append(DocumentSummary(**d))
        nxt = offset + len(items) if offset + len(items) < total else None
        return DocumentList(items=items, total=total, limit=limit, offset=offset, next_offset=nxt,
                            generation_id=snapshot.id)

    @get("/{doc_id:str}", sync_to_thread=True, summary="One document: metadata and text",
         responses=error_responses(400, 401, 403, 404, 429))
    def get_document(self, doc_id: DocIdParam, engine: Engine, docstore: DocumentStore,
                     request: Request) -> DocumentOut:
        """From the published generation; `pending_change` says when the store holds a newer version. A
        document only in the store (not built yet) is returned from there with `indexed: false`."""
        snapshot = _published(engine, request)
        indexed = snapshot.document(doc_id) if snapshot is not None else None
        stored = docstore.load(doc_id)
        if indexed is None and stored is None:
            raise ServiceError(404, f"no document {doc_id!r}", code="not_found", field="doc_id")
        pending = None
        if stored is not None and indexed is None:
            pending = "create"
        elif stored is not None and indexed is not None and stored.content_hash != indexed.get("content_hash"):
            pending = "update"
        elif stored is None and indexed is not None and docstore.owns((indexed.get("metadata") or {}).get("path")):
            pending = "delete"
        if indexed is not None:
            meta = dict(indexed.get("metadata") or {})
            meta.pop("path", None)  # a server path is nobody's business
            return DocumentOut(doc_id=doc_id, title=indexed.get("title") or "", text=indexed.get("text") or "",
                               domain=indexed.get("domain"), tags=list(indexed.get("tags") or []),
                               audience=indexed.get("audience"), language=indexed.get("language"),
                               date=indexed.get("date"), source=_public_source(indexed.get("source")),
                               metadata=meta, indexed=True, generation_id=snapshot.id, in_store=stored is not None,
                               pending_change=pending, note=PENDING_NOTE if pending else None)
        meta = dict(stored.metadata)
        meta.pop("path", None)
        return DocumentOut(doc_id=doc_id, title=stored.title, text=stored.text, domain=stored.domain,
                           tags=list(stored.tags), audience=stored.audience, language=stored.language,
                           date=stored.date, source=_public_source(stored.source), metadata=meta, indexed=False,
                           generation_id=snapshot.id if snapshot is not None else None, in_store=True,
                           pending_change=pending, note=PENDING_NOTE)

    @post("", status_code=201, sync_to_thread=True, summary="Create a document in the store",
          opt={"role": "admin"}, responses=error_responses(400, 401, 403, 409, 413, 429))
    def create_document(self, data: DocumentIn, engine: Engine, docstore: DocumentStore,
                        request: Request) -> DocumentWriteResponse:
        """409 when the id exists in the store, or in the published index from a read-only source (then PUT
        overrides it)."""
        _check_doc(data, data.id)
        snapshot = _published(engine, request)
        if snapshot is not None and docstore.find(data.id) is None:
            existing = snapshot.document(data.id, with_text=False)
            if existing is not None and not docstore.owns((existing.get("metadata") or {}).get("path")):
                raise ServiceError(409, f"document {data.id!r} exists in the index from a read-only source; "
                                        f"PUT /v1/documents/{data.id} stores an overriding copy", code="exists",
                                   field="id")
        status, _ = docstore.write(data.id, data, create=True)
        return _write_response(data.id, status, data.domain)

    @put("/{doc_id:str}", sync_to_thread=True, summary="Create or replace a document in the store",
         opt={"role": "admin"}, responses={
             201: ResponseSpec(data_container=DocumentWriteResponse, description="Created in the store.",
                               generate_examples=False),
             **error_responses(400, 401, 403, 413, 429)})
    def replace_document(self, doc_id: NewDocIdParam, data: DocumentFields, docstore: DocumentStore) -> Response[
            DocumentWriteResponse]:
        """201 when it did not exist in the store, 200 when it replaced it. The id is the path's."""
        _check_doc(data, doc_id)
        status, _ = docstore.write(doc_id, data, create=False)
        return Response(_write_response(doc_id, status, data.domain), status_code=201 if status == "created" else 200)

    @delete("/{doc_id:str}", status_code=200, sync_to_thread=True, summary="Delete a document from the store",
            opt={"role": "admin"}, responses=error_responses(400, 401, 403, 404, 409, 429))
    def delete_document(self, doc_id: DocIdParam, engine: Engine, docstore: DocumentStore,
                        request: Request) -> DocumentWriteResponse:
        """Only documents of the store can be deleted; one that only exists in a read-only source is a 409."""
        stored = docstore.find(doc_id)
        if stored is None:
            snapshot = _published(engine, request)
            indexed = snapshot.document(doc_id, with_text=False) if snapshot is not None else None
            if indexed is not None:
                if docstore.owns((indexed.get("metadata") or {}).get("path")):
                    raise ServiceError(404, f"document {doc_id!r} was already deleted from the store; "
                                            f"{PENDING_NOTE}", code="not_found", field="doc_id")
                raise ServiceError(409, f"document {doc_id!r} comes from a read-only source "
                                        f"({_public_source(indexed.get('source'))}), not the documents store; "
                                        "remove it from that source and rebuild", code="read_only_source",
                                   field="doc_id")
            raise ServiceError(404, f"no document {doc_id!r}", code="not_found", field="doc_id")
        docstore.delete(doc_id)
        return _write_response(doc_id, "deleted", stored.parent.name)


def _public_source(source: Any) -> str | None:
    """Attribution as given; a server file path shortened to its last parts."""
    if not source:
        return None
    s = str(source)
    if s.startswith("/"):
        parts = Path(s).parts
        return "/".join(parts[-2:])
    return s
