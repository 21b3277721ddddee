"""The Litestar app: a thin HTTP layer over `rag.engine.Engine`.

    create_app(settings=None, engine=None) -> Litestar

Layout: ``/v1/...`` (guarded by API keys, rate limited) holds one controller per resource; ``/health``,
``/ready`` and ``/metrics`` are open; the OpenAPI document is at ``/schema/openapi.json`` with Scalar at
``/schema`` (Swagger UI at ``/schema/swagger``).

Models and stores load once, in the lifespan: the engine, the published generation with its embedder (when one
exists: the app starts without one and ``/ready`` says 503 until a build is published), the state DB and the
jobs table. Every request that reads the index resolves ``engine.snapshot()`` once (the ``gen`` dependency)
and runs entirely on that generation; the id goes back as ``generation_id`` and the ``X-Generation-Id`` header.

When both `settings` and `engine` are given, `settings.service` configures the HTTP layer (keys, limits, CORS)
and the engine keeps its own settings for everything below it (tests build several apps over one engine).
"""

from __future__ import annotations

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
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

import rag
from rag.config import Settings, load_settings
from rag.engine import Engine
from rag.snapshot import Snapshot
from rag.published import NoSnapshot
from service.errors import GENERATION_ID_KEY, ServiceError, exception_handlers, from_msgspec
from service.jobs import JobManager
from service.limits import GenerationSlots, RateLimitMiddleware, TokenBuckets
from service.request_log import RequestContextMiddleware
from service.metrics import Metrics
from service.playground import playground_routes
from service.security import ApiKeyAuth

log = logging.getLogger("service.app")


class RagApp(Litestar):
    """Litestar with the request-context layer (request id, access log, metrics) around everything it serves,
    404s for unknown routes and CORS preflights included (Litestar's own middleware only runs for routed
    requests)."""

    def __init__(self, *args: Any, metrics: Metrics | None = None, **kwargs: Any):
        self._rag_metrics = metrics  # before super().__init__, which builds the ASGI handler
        super().__init__(*args, **kwargs)

    def _create_asgi_handler(self):
        handler = super()._create_asgi_handler()
        return RequestContextMiddleware(handler, metrics=getattr(self, "_rag_metrics", None))


# --- dependencies -------------------------------------------------------------------------------------------

def provide_engine(state: State) -> Engine:
    return state.engine


def provide_generation(state: State, request: Request) -> Snapshot:
    """The one generation this request runs on (raises NoSnapshot -> 503)."""
    snapshot = state.engine.snapshot()
    request.scope.setdefault("state", {})[GENERATION_ID_KEY] = snapshot.id
    return snapshot


def provide_slots(state: State) -> GenerationSlots:
    return state.slots


def provide_metrics(state: State) -> Metrics:
    return state.metrics


def provide_jobs(state: State) -> JobManager:
    return state.jobs


def provide_settings(state: State) -> Settings:
    return state.settings


def provide_docstore(state: State):
    return state.docstore


DEPENDENCIES = {
    "engine": Provide(provide_engine, sync_to_thread=False),
    # Resolving may open a newly published generation (seconds when its embedder is new): off the loop.
    "snapshot": Provide(provide_generation, sync_to_thread=True),
    "slots": Provide(provide_slots, sync_to_thread=False),
    "metrics": Provide(provide_metrics, sync_to_thread=False),
    "jobs": Provide(provide_jobs, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "docstore": Provide(provide_docstore, sync_to_thread=False),
}


# --- strict request bodies ------------------------------------------------------------------------------------

_BODY_TYPES: dict[Any, Any] = {}


async def strict_body(request: Request) -> None:
    """Validate a JSON body against the handler's `data` type with msgspec in strict mode, before Litestar
    converts it (Litestar converts leniently: `"rerank": 0` would pass as false, `"top_k": "5"` as 5)."""
    handler = request.route_handler
    field = handler.parsed_fn_signature.parameters.get("data")
    if field is None:
        return
    body = await request.body()  # cached: Litestar reads the same bytes; the body-size limit applies here
    if not body.strip() and field.is_optional:
        return
    if not body.strip():
        raise ServiceError(400, "a JSON request body is required", code="missing_body")
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise ServiceError(400, f"malformed JSON body: {e}", code="malformed_body") from e
    try:
        msgspec.convert(_integral_floats(raw), type=field.annotation, strict=True)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from e


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

def refine_openapi(app: Litestar) -> None:
    """Make the served OpenAPI document say exactly what the server enforces.

    Litestar's schema generation drops some msgspec constraints (those on list items and inside unions) and
    does not mark `forbid_unknown_fields` structs as closed. msgspec generates exact JSON Schema (2020-12,
    which OpenAPI 3.1 uses) for our structs, so their component schemas are replaced by msgspec's. The one
    rule a struct cannot express, "exactly one of doc_id, doc_ids, query", is added as `oneOf`; the streamed
    form of /v1/ask is documented as a `text/event-stream` alternative.
    """
    from litestar._openapi.plugin import OpenAPIPlugin

    from service import schemas

    plugin = app.plugins.get(OpenAPIPlugin)
    doc = plugin.provide_openapi_schema()  # cached by the plugin: edits here are what /schema serves
    structs = [v for v in vars(schemas).values()
               if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == schemas.__name__]
    _, components = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
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
    engine = getattr(app.state, "engine", None)
    if engine is not None and "RebuildRequest" in target:
        from service.jobs import allowed_embedders, allowed_sources

        props = target["RebuildRequest"]["properties"]
        props["sources"] = {"anyOf": [{"type": "array", "minItems": 1, "maxItems": 64,
                                       "items": {"enum": allowed_sources(engine.settings)}}, {"type": "null"}],
                            "default": None,
                            "description": "Sources to index (default: the documents store and the published "
                                           "generation's sources); only these, as of server start."}
        props["embedder"] = {"anyOf": [{"enum": allowed_embedders(engine.settings)}, {"type": "null"}],
                             "default": None, "description": "Embedder for the new generation."}
    if engine is not None and not engine.retriever.can_rerank and "SearchRequest" in target:
        target["SearchRequest"]["properties"]["rerank"] = {
            "anyOf": [{"const": False}, {"type": "null"}], "default": None,
            "description": "No cross-encoder is configured on this server (retrieval.reranker), so only "
                           "false/null; true is a 400."}
    try:
        ok = doc["paths"]["/v1/ask"]["post"]["responses"]["200"]
        ok.setdefault("content", {})["text/event-stream"] = {"schema": {
            "type": "object", "required": ["event", "data"],
            "description": "With `stream: true`: Server-Sent Events retrieval, token..., citation..., done (or "
                           "error); each `data:` is one JSON object.",
            "properties": {"event": {"enum": ["retrieval", "token", "citation", "done", "error"]},
                           "data": {"type": "string", "contentMediaType": "application/json"},
                           "id": {"type": "string"}}}}
        ok["description"] = "The answer (JSON), or with `stream: true` a Server-Sent Events stream."
    except KeyError:
        pass


# --- app ----------------------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Litestar:
    from service.controllers import API_CONTROLLERS, HealthController
    from service.controllers.documents import DocumentStore

    owns_engine = engine is None
    if settings is None:
        settings = engine.settings if engine is not None else load_settings()
    svc = settings.service
    metrics = Metrics()
    auth = ApiKeyAuth(svc)
    slots = GenerationSlots(settings.generator.max_concurrent, svc.queue_timeout_s,
                            run_timeout_s=settings.generator.timeout_s)
    metrics.slots = slots
    buckets = TokenBuckets(svc.rate_limit_per_minute) if svc.rate_limit_per_minute > 0 else None

    @asynccontextmanager
    async def lifespan(app: Litestar):
        eng = engine or Engine(settings)
        metrics.engine = eng
        app.state.engine = eng
        app.state.docstore = DocumentStore(eng.settings, max_bytes=svc.max_document_bytes)
        if svc.open_mode:
            log.warning("OPEN MODE: API keys are not checked; every caller is admin. Local demos only.")
        elif not svc.api_keys:
            log.warning("no API keys configured (service.api_keys): every /v1 request will be refused with 401")
        try:
            snapshot = await anyio.to_thread.run_sync(eng.generation)
            log.info("serving generation %s (%d documents, embedder %s)", snapshot.id, snapshot.manifest.counts.documents,
                     snapshot.manifest.embedder.name)
        except NoSnapshot as e:
            log.warning("no index generation yet: %s; /ready answers 503 until one is published", e)
        except Exception:  # noqa: BLE001 - a broken generation must not keep the API (and rebuilds) down
            log.exception("could not load the published generation; /ready answers 503")
        state_store = await anyio.to_thread.run_sync(lambda: eng.state)
        jobs = JobManager(eng.settings, eng, metrics)
        await anyio.to_thread.run_sync(jobs.recover)
        app.state.jobs = jobs
        try:
            await anyio.to_thread.run_sync(refine_openapi, app)
        except Exception:  # noqa: BLE001 - the API works without the refinements; the document is just looser
            log.exception("could not refine the OpenAPI document")
        log.info("service started", extra={"home": str(eng.settings.home_path), "open_mode": svc.open_mode})
        try:
            yield
        finally:
            if owns_engine:
                finished = await anyio.to_thread.run_sync(jobs.wait, 5.0)
                if finished:
                    state_store.close()
                else:
                    log.warning("a rebuild job is still running at shutdown; it will be marked failed on restart")

    v1_middleware: list[Any] = []
    if buckets is not None:
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
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        components=Components(security_schemes={
            "ApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
            "Bearer": SecurityScheme(type="http", scheme="bearer"),
        }),
        use_handler_docstrings=True,
    )

    return RagApp(
        metrics=metrics,
        route_handlers=[HealthController, v1, *playground_routes()],  # the playground: / and /playground/
        dependencies=DEPENDENCIES,
        lifespan=[lifespan],
        exception_handlers=exception_handlers(),
        cors_config=cors,
        openapi_config=openapi,
        request_max_body_size=svc.max_body_bytes,
        state=State({"settings": settings, "metrics": metrics, "slots": slots, "auth": auth}),
        logging_config=None,
        debug=False,
    )
