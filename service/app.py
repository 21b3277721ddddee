"""The Litestar app: a thin HTTP layer over `rag.application.Application`.

    create_app(settings=None, application=None) -> Litestar

Layout: ``/v1/...`` (guarded by API keys, rate limited) holds one controller per resource; ``/health``,
``/ready`` and ``/metrics`` are open; the OpenAPI document is at ``/schema/openapi.json`` with Scalar at
``/schema`` (Swagger UI at ``/schema/swagger``).

The application loads once, in the lifespan: the published snapshot with its embedder (when one exists: the app
starts without one and ``/ready`` says 503 until a build is published), the state DB and its jobs. Every request
that reads the index resolves the published snapshot once (the ``snapshot`` dependency) and runs entirely on it;
its id goes back as ``generation_id`` and the ``X-Generation-Id`` header.

When both `settings` and `application` are given, `settings.service` configures the HTTP layer (keys, limits,
CORS) and the application keeps its own settings for everything below it (tests build several apps over one).
"""

from __future__ import annotations

import copy
import logging
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

import rag
from indexer.build import Indexer
from rag.access import Visibility
from rag.application import Application
from rag.config import Settings, load_settings
from rag.errors import InvalidInput
from rag.jobs import allowed_embedders, allowed_sources
from rag.published import NoSnapshot
from rag.snapshot import Snapshot
from rag.validation import convert
from service import schemas
from service.errors import exception_handlers
from service.limits import RateLimitMiddleware, TokenBuckets, shared_rate_limit
from service.metrics import Metrics
from service.playground import playground_routes
from service.request_log import GENERATION_ID_KEY, PRINCIPAL_KEY, RequestLog, note_query
from service.security import ApiKeyAuth

log = logging.getLogger("service.app")


# --- dependencies -------------------------------------------------------------------------------------------

def provide_application(state: State) -> Application:
    return state.application


def provide_snapshot(state: State, request: Request) -> Snapshot:
    """The one snapshot this request runs on (NoSnapshot -> 503)."""
    snapshot = state.application.snapshot()
    request.scope["state"][GENERATION_ID_KEY] = snapshot.id
    return snapshot


def provide_published(state: State, request: Request) -> Snapshot | None:
    """The published snapshot, or None before the first build (the documents routes work without one)."""
    snapshot = state.application.published_snapshot()
    if snapshot is not None:
        request.scope["state"][GENERATION_ID_KEY] = snapshot.id
    return snapshot


def provide_metrics(state: State) -> Metrics:
    return state.metrics


def provide_visibility(request: Request) -> Visibility:
    """What the request's principal may see (rag.access); public documents only when no guard ran."""
    principal = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    return principal.visibility if principal is not None else Visibility.public()


DEPENDENCIES = {
    "application": Provide(provide_application, sync_to_thread=False),
    # Resolving may open a newly published snapshot (seconds when its embedder is new): off the loop.
    "snapshot": Provide(provide_snapshot, sync_to_thread=True),
    "published": Provide(provide_published, sync_to_thread=True),
    "metrics": Provide(provide_metrics, sync_to_thread=False),
    "visibility": Provide(provide_visibility, sync_to_thread=False),
}


# --- strict request bodies ------------------------------------------------------------------------------------

async def strict_body(request: Request) -> None:
    """Validate a JSON body against the handler's `data` type with msgspec in strict mode, before Litestar
    converts it (Litestar converts leniently: `"rerank": 0` would pass as false, `"top_k": "5"` as 5); a problem
    is an InvalidInput naming the field (rag.validation)."""
    field = request.route_handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return
    body = await request.body()  # cached: Litestar reads the same bytes; the body-size limit applies here
    if not body.strip():
        if field.is_optional:
            return
        raise InvalidInput("a JSON request body is required", code="missing_body")
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise InvalidInput(f"malformed JSON body: {e}", code="malformed_body") from e
    if isinstance(raw, dict):  # the access line may say how long the query was, not what it said (rag.access)
        text = raw.get("query", raw.get("question"))
        note_query(request, text if isinstance(text, str) else None,
                   log_text=request.app.state.application.settings.privacy.log_queries)
    convert(_integral_floats(raw), field.annotation, strict=True)


def _integral_floats(v: Any) -> Any:
    """JSON Schema counts 5.0 as an integer; msgspec's strict mode does not. Agree with the schema."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, dict):
        return {k: _integral_floats(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_integral_floats(x) for x in v]
    return v


# --- OpenAPI ----------------------------------------------------------------------------------------------

class RefinedJsonRenderPlugin(JsonRenderPlugin):
    """``/schema/openapi.json`` as the server enforces it (the interactive pages read this document).

    Litestar's schema generation drops some msgspec constraints (those on list items and inside unions) and
    does not mark `forbid_unknown_fields` structs as closed. msgspec generates exact JSON Schema (2020-12,
    which OpenAPI 3.1 uses) for our types, so their component schemas are replaced by msgspec's. The one
    rule a struct cannot express, "exactly one of doc_id, doc_ids, query", is added as `oneOf`; the streamed
    form of /v1/ask is documented as a `text/event-stream` alternative; rebuild sources and embedders are the
    ones this server accepts, as of its first request for the document."""

    def __init__(self) -> None:
        super().__init__()
        self._refined: dict[str, Any] | None = None

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        if self._refined is None:
            doc = copy.deepcopy(openapi_schema)
            try:
                refine_openapi(doc, getattr(request.app.state, "application", None))
            except Exception:  # noqa: BLE001 - the API works without the refinements; the document is looser
                log.exception("could not refine the OpenAPI document")
            self._refined = doc
        return self.render_json(request, self._refined)


def refine_openapi(doc: dict[str, Any], application: Application | None) -> None:
    types = [v for v in vars(schemas).values()
             if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == schemas.__name__]
    types += [schemas.DocumentFields, schemas.NewDocument, *schemas.RESPONSE_TYPES]
    _, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    target = doc.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in components.items():
        if name in target:
            target[name] = schema
    if "SummarizeRequest" in target:
        def only(name: str, *excluded: str) -> dict:
            return {"required": [name], "not": {"anyOf": [{"required": [x]} for x in excluded]}}

        target["SummarizeRequest"]["oneOf"] = [only("doc_id", "doc_ids", "query", "filters"),
                                               only("doc_ids", "doc_id", "query", "filters"),
                                               only("query", "doc_id", "doc_ids")]
    if application is not None and "RebuildRequest" in target:
        props = target["RebuildRequest"]["properties"]
        props["sources"] = {"anyOf": [{"type": "array", "minItems": 1, "maxItems": 64,
                                       "items": {"enum": allowed_sources(application.settings)}}, {"type": "null"}],
                            "default": None,
                            "description": "Sources to index (default: the documents store and the published "
                                           "generation's sources); only these."}
        props["embedder"] = {"anyOf": [{"enum": allowed_embedders(application.settings)}, {"type": "null"}],
                             "default": None, "description": "Embedder for the new generation."}
    if application is not None and not application.retriever.can_rerank and "SearchRequest" in target:
        target["SearchRequest"]["properties"]["rerank"] = {
            "anyOf": [{"const": False}, {"type": "null"}], "default": None,
            "description": "No cross-encoder is configured on this server (retrieval.reranker), so only "
                           "false/null; true is a 400."}
    ok = doc.get("paths", {}).get("/v1/ask", {}).get("post", {}).get("responses", {}).get("200")
    if ok is not None:
        ok.setdefault("content", {})["text/event-stream"] = {"schema": {
            "type": "object", "required": ["event", "data"],
            "description": "With `stream: true`: Server-Sent Events retrieval, token..., citation..., done (or "
                           "error); each `data:` is one JSON object.",
            "properties": {"event": {"enum": ["retrieval", "token", "citation", "done", "error"]},
                           "data": {"type": "string", "contentMediaType": "application/json"},
                           "id": {"type": "string"}}}}
        ok["description"] = "The answer (JSON), or with `stream: true` a Server-Sent Events stream."


# --- app ----------------------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None, application: Application | None = None) -> Litestar:
    from service.controllers import API_CONTROLLERS, HealthController

    owns_application = application is None
    if settings is None:
        settings = application.settings if application is not None else load_settings()
    svc = settings.service
    metrics = Metrics()
    auth = ApiKeyAuth(svc)
    buckets = TokenBuckets(svc.rate_limit_per_minute) if svc.rate_limit_per_minute > 0 else None
    request_log = RequestLog(metrics)

    @asynccontextmanager
    async def lifespan(app: Litestar):
        application_ = application or Application(settings, builder=Indexer())
        metrics.application = application_
        app.state.application = application_
        if svc.open_mode:
            log.warning("OPEN MODE: API keys are not checked; every caller is admin. Local demos only.")
        elif not svc.api_keys:
            log.warning("no API keys configured (service.api_keys): every /v1 request will be refused with 401")
        try:
            snapshot = await anyio.to_thread.run_sync(application_.snapshot)
            log.info("serving generation %s (%d documents, embedder %s)", snapshot.id,
                     snapshot.manifest.counts.documents, snapshot.manifest.embedder.name)
        except NoSnapshot as e:
            log.warning("no index generation yet: %s; /ready answers 503 until one is published", e)
        except Exception:  # noqa: BLE001 - a broken snapshot must not keep the API (and rebuilds) down
            log.exception("could not load the published generation; /ready answers 503")
        if application_.settings.answers.qa_model:  # read once now, not on the first question
            await anyio.to_thread.run_sync(application_.answerer.qa_reading)
        await anyio.to_thread.run_sync(application_.recover_jobs)
        log.info("service started", extra={"home": str(application_.settings.home_path), "open_mode": svc.open_mode})
        try:
            yield
        finally:
            if owns_application:
                await anyio.to_thread.run_sync(application_.close)

    v1_middleware: list[Any] = []
    stores: dict[str, Any] = {}
    if svc.rate_limit_store and svc.rate_limit_per_minute > 0:  # shared by replicas (Litestar's limiter + a store)
        shared, stores = shared_rate_limit(svc.rate_limit_store, svc.rate_limit_per_minute, auth.identity)
        v1_middleware.append(shared)
    elif buckets is not None:
        v1_middleware.append(RateLimitMiddleware(buckets, auth.identity, on_limited=metrics.rate_limited.inc))
    v1 = Router(path="/v1", route_handlers=API_CONTROLLERS, guards=[auth.guard], middleware=v1_middleware,
                security=[{"ApiKey": []}, {"Bearer": []}], before_request=strict_body)

    cors = None
    if svc.cors_origins:
        cors = CORSConfig(allow_origins=list(svc.cors_origins), allow_methods=["GET", "POST", "PUT", "DELETE"],
                          allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-ID"],
                          expose_headers=["X-Request-ID", "X-Generation-Id", "Retry-After", "RateLimit-Limit",
                                          "RateLimit-Remaining"], max_age=600)

    openapi = OpenAPIConfig(
        title="RAG service API",
        version=rag.__version__,
        description=("Grounded answers with citations, passage search, summaries and recommendations over "
                     "finance, medical and education documents. Authenticate with `X-API-Key: KEY` or "
                     "`Authorization: Bearer KEY`. Errors are `{\"error\": {\"code\", \"message\", \"field\"?, "
                     "\"request_id\"}}`."),
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger"), RefinedJsonRenderPlugin()],
        components=Components(security_schemes={
            "ApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
            "Bearer": SecurityScheme(type="http", scheme="bearer"),
        }),
        use_handler_docstrings=True,
    )

    return Litestar(
        route_handlers=[HealthController, v1, *playground_routes()],  # the playground: / and /playground/
        dependencies=DEPENDENCIES,
        lifespan=[lifespan],
        middleware=[request_log.middleware()],
        before_send=[request_log.before_send],
        exception_handlers=exception_handlers(),
        cors_config=cors,
        openapi_config=openapi,
        request_max_body_size=svc.max_body_bytes,
        stores=stores or None,
        state=State({"settings": settings, "metrics": metrics, "auth": auth}),
        logging_config=None,
        debug=False,
    )
