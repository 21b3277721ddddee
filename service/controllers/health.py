"""Liveness, readiness and metrics: open (no API key), never rate limited."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec

from rag.application import Application, Readiness
from service.metrics import Metrics
from service.schemas import HealthResponse


class HealthController(Controller):
    path = ""
    tags = ["health"]

    @get("/health", summary="Liveness", sync_to_thread=False)
    def health(self) -> HealthResponse:
        """The process is up and serving HTTP."""
        return HealthResponse(status="ok")

    @get("/ready", summary="Readiness", sync_to_thread=True,
         responses={503: ResponseSpec(data_container=Readiness, description="Not ready: `reason` says why.",
                                      generate_examples=False)})
    def ready(self, application: Application) -> Response[Readiness]:
        """200 only when a generation is loaded and its embedder is ready; 503 with the reason otherwise."""
        result = application.readiness()
        headers = {"X-Generation-Id": result.generation_id} if result.generation_id else {}
        return Response(result, status_code=200 if result.status == "ready" else 503, headers=headers)

    @get("/metrics", summary="Prometheus metrics", media_type="text/plain; version=0.0.4", sync_to_thread=False,
         include_in_schema=True)
    def metrics(self, metrics: Metrics) -> Response[bytes]:
        """Prometheus text exposition format."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)
