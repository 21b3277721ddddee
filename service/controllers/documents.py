"""Documents: read from the published generation, written to the documents store (rag.documents).

Reads (``GET /v1/documents``, ``GET /v1/documents/{doc_id}``) come from the published generation, what search
and answers actually use; a document's ``pending_change`` says when the store holds a newer version (or a
deletion) that the next build will pick up. Writes reach search after the next build
(``POST /v1/admin/index/rebuild``), which indexes the store first, so a ``PUT`` of a document that came from a
read-only source (e.g. the bundled ``data/``) overrides it. A document that only exists in such a source
cannot be deleted through the API (409).
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from rag.access import Visibility
from rag.application import Application
from rag.snapshot import Snapshot
from service.errors import error_responses
from service.schemas import (
    DOC_ID_PATTERN,
    NEW_DOC_ID_PATTERN,
    DocumentFields,
    DocumentPage,
    DocumentView,
    DocumentWriteResponse,
    DomainParam,
    NewDocument,
)

DocIdParam = Annotated[str, Parameter(pattern=DOC_ID_PATTERN, description="Document id.")]
NewDocIdParam = Annotated[str, Parameter(pattern=NEW_DOC_ID_PATTERN, description="Document id (not `readme`).")]


class DocumentsController(Controller):
    path = "/documents"
    tags = ["documents"]

    @get("", sync_to_thread=True, summary="List documents of the published generation",
         responses=error_responses(400, 401, 403, 429, 503))
    def list_documents(
        self, application: Application, snapshot: Snapshot, visibility: Visibility,
        domain: DomainParam = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000)] = 0,
    ) -> DocumentPage:
        return application.list_documents(domain=domain, limit=limit, offset=offset, snapshot=snapshot,
                                          visibility=visibility)

    @get("/{doc_id:str}", sync_to_thread=True, summary="One document: metadata and text",
         responses=error_responses(400, 401, 403, 404, 429))
    def get_document(self, doc_id: DocIdParam, application: Application, published: Snapshot | None,
                     visibility: Visibility) -> DocumentView:
        """From the published generation; `pending_change` says when the store holds a newer version. A
        document only in the store (not built yet) is returned from there with `indexed: false`."""
        return application.get_document(doc_id, published=published, visibility=visibility)

    @post("", status_code=201, sync_to_thread=True, summary="Create a document in the store",
          opt={"role": "admin"}, responses=error_responses(400, 401, 403, 409, 413, 429))
    def create_document(self, data: NewDocument, application: Application, published: Snapshot | None,
                        visibility: Visibility) -> DocumentWriteResponse:
        """409 when the id exists in the store, or in the published index from a read-only source (then PUT
        overrides it), or belongs to a document this key may not see (`id_unavailable`)."""
        return DocumentWriteResponse.of(application.add_document(data, published=published, visibility=visibility))

    @put("/{doc_id:str}", sync_to_thread=True, summary="Create or replace a document in the store",
         opt={"role": "admin"}, responses={
             201: ResponseSpec(data_container=DocumentWriteResponse, description="Created in the store.",
                               generate_examples=False),
             **error_responses(400, 401, 403, 409, 413, 429)})
    def replace_document(self, doc_id: NewDocIdParam, data: DocumentFields, application: Application,
                         published: Snapshot | None, visibility: Visibility) -> Response[DocumentWriteResponse]:
        """201 when it did not exist in the store, 200 when it replaced it. The id is the path's. 409
        (`id_unavailable`) when it belongs to a document this key may not see: that one is never replaced."""
        written = DocumentWriteResponse.of(application.replace_document(doc_id, data, published=published,
                                                                        visibility=visibility))
        return Response(written, status_code=201 if written.status == "created" else 200)

    @delete("/{doc_id:str}", status_code=200, sync_to_thread=True, summary="Delete a document from the store",
            opt={"role": "admin"}, responses=error_responses(400, 401, 403, 404, 409, 429))
    def delete_document(self, doc_id: DocIdParam, application: Application, published: Snapshot | None,
                        visibility: Visibility) -> DocumentWriteResponse:
        """Only documents of the store can be deleted; one that only exists in a read-only source is a 409, one
        this key may not see a 404 (as though it did not exist)."""
        return DocumentWriteResponse.of(application.delete_document(doc_id, published=published,
                                                                    visibility=visibility))
