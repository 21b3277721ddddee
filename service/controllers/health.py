"""Liveness, readiness and metrics: open (no API key), never rate limited."""

from __future__ import annotations

import anyio.to_thread
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from rag.published import NoSnapshot
from service.schemas import HealthResponse, ReadyResponse


class HealthController(Controller):
    path = ""
    tags = ["health"]

    @get("/health", summary="Liveness", sync_to_thread=False)
    def health(self) -> HealthResponse:
        """The process is up and serving HTTP."""
        return HealthResponse(status="ok")

    @get("/ready", summary="Readiness",
         responses={503: ResponseSpec(data_container=ReadyResponse, description="Not ready: `reason` says why.",
                                      generate_examples=False)})
    async def ready(self, state: State) -> Response[ReadyResponse]:
        """200 only when a generation is loaded and its embedder is ready; 503 with the reason otherwise."""
        engine = state.engine

        def check() -> ReadyResponse:
            try:
                snapshot = engine.snapshot()
                _ = snapshot.embedder  # loaded with the generation; raises if its model cannot be loaded
            except NoSnapshot as e:
                return ReadyResponse(status="not_ready", reason=f"no index generation published: {e}")
            except Exception as e:  # noqa: BLE001 - readiness reports any failure as a reason
                return ReadyResponse(status="not_ready", reason=f"{type(e).__name__}: {e}")
            m = snapshot.manifest
            return ReadyResponse(status="ready", generation_id=snapshot.id, embedder=m.embedder.name,
                                 documents=m.counts.documents, chunks=m.counts.chunks)

        result = await anyio.to_thread.run_sync(check)
        headers = {"X-Generation-Id": result.generation_id} if result.generation_id else {}
        return Response(result, status_code=200 if result.status == "ready" else 503, headers=headers)

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4", sync_to_thread=False,
         include_in_schema=True)
    def metrics(self, state: State) -> Response[bytes]:
        """Prometheus text exposition format."""
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)
