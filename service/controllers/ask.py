"""POST /v1/ask: a grounded answer with checked citations, as one JSON body or as Server-Sent Events.

Streaming (``"stream": true``) sends typed events, in this order::

    event: retrieval   data: {"passages": [...], "generation_id": ...}
    event: token       data: {"text": "..."}                      (many)
    event: citation    data: {"n": 1, "doc_id": ..., ...}         (one per citation kept)
    event: done        data: {"answer", "citations", "abstained", "timings_ms", "generation_id", ...}
    event: error       data: {"code", "message", "request_id"}    (instead of done, when it fails midway)

Errors found before the stream starts (validation, no index, all slots busy) are ordinary JSON error responses.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import anyio.to_thread
from litestar import Controller, Request, post
from litestar.response import ServerSentEvent, ServerSentEventMessage

from rag.engine import Engine
from rag.snapshot import Snapshot
from service.errors import ServiceError, error_responses, request_id_of
from service.limits import GenerationSlots
from service.metrics import Metrics
from service.schemas import AskRequest, AskResponse, nonblank, plain, to_filters, to_struct

log = logging.getLogger("service.ask")


class EventStream(ServerSentEvent):
    """ServerSentEvent that keeps `text/event-stream` when returned from a handler documented as JSON (Litestar
    passes the handler's media type down and it would win over the response's own)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any):
        kwargs["media_type"] = None
        return super().to_asgi_response(*args, **kwargs)


def uses_model(engine: Engine, backend: str | None) -> bool:
    """Whether answering with `backend` runs a generative model (and so needs a generation slot)."""
    try:
        return engine.answerer.generators.resolve_name(backend) != "extractive"
    except ValueError as e:
        raise ServiceError(400, str(e), code="validation_error", field="backend") from e


async def prepare_backend(engine: Engine, backend: str | None) -> str | None:
    """Load the backend's model before the generation clock starts (loading is not generating: a first
    request must not time out because the weights were still being read). Returns why the backend cannot be
    used (the caller then answers extractively and says so in `fallback`), or None."""
    if not uses_model(engine, backend):
        return None
    pool = engine.answerer.generators
    try:
        await anyio.to_thread.run_sync(pool.get, backend)
    except Exception as e:  # noqa: BLE001 - a missing/broken model degrades to the extractive answer
        log.warning("generator backend %s unavailable: %s", backend or pool.settings.backend, e)
        return f"backend {pool.resolve_name(backend)} unavailable ({type(e).__name__}: {e}); extractive answer"
    return None


def _event_parts(ev: Any, snapshot_id: str) -> tuple[str, dict]:
    """An `AnswerEvent(type, data)` -> (SSE event name, JSON payload object)."""
    kind = str(getattr(ev, "type", None) or getattr(ev, "kind", None) or "message")
    data = plain(getattr(ev, "data", None))
    if kind == "retrieval":
        return kind, {"passages": data if isinstance(data, list) else [], "generation_id": snapshot_id}
    if kind == "token":
        return kind, {"text": data if isinstance(data, str) else str(data)}
    if kind == "error":
        return kind, {"code": "generation_error", "message": data if isinstance(data, str) else str(data)}
    if kind == "done" and isinstance(data, dict):
        data = to_struct(data, AskResponse, generation_id=data.get("generation_id") or snapshot_id)
        return kind, plain(data)
    return kind, data if isinstance(data, dict) else {"value": data}


class AskController(Controller):
    path = "/ask"
    tags = ["answers"]

    @post("", status_code=200, summary="Ask a question (JSON or Server-Sent Events)",
          responses=error_responses(400, 401, 403, 413, 429, 503, 504))
    async def ask(self, data: AskRequest, engine: Engine, snapshot: Snapshot, slots: GenerationSlots,
                  metrics: Metrics, request: Request) -> AskResponse:
        """Retrieve, generate (or extract), check citations. With `stream: true` the response is
        `text/event-stream` with events retrieval, token, citation, done (or error)."""
        question = nonblank(data.question, "question")
        filters = to_filters(data.filters, data.domain)
        history = [{"role": t.role, "content": t.content} for t in data.history]
        answerer = await anyio.to_thread.run_sync(lambda: engine.answerer)
        asked = answerer.generators.resolve_name(data.backend)  # None -> the configured default
        unavailable = await prepare_backend(engine, data.backend)
        backend = "extractive" if unavailable else data.backend
        needs_slot = uses_model(engine, backend)
        kwargs = dict(filters=filters, top_k=data.top_k, history=history, backend=backend, mode=data.mode)
        if data.user_id:
            request.scope.setdefault("state", {})["rag.user_id"] = data.user_id
        if data.stream:
            return await self._stream(answerer, snapshot, question, kwargs, needs_slot, slots, metrics, request,
                                      unavailable=unavailable, asked=asked)

        call = partial(answerer.answer, snapshot, question, **kwargs)
        try:
            ans = await (slots.run(call) if needs_slot else anyio.to_thread.run_sync(call))
        except TimeoutError:
            # The generation outlived settings.generator.timeout_s: answer extractively instead (the slot stays
            # taken until the abandoned generation really ends, so the bound on concurrent generations holds).
            log.warning("generation timed out after %.0f s; extractive answer", slots.run_timeout_s)
            ans = await anyio.to_thread.run_sync(partial(answerer.answer, snapshot, question,
                                                         **{**kwargs, "backend": "extractive"}))
            unavailable = f"generation timed out after {slots.run_timeout_s:g} s; extractive answer"
        if unavailable and not getattr(ans, "abstained", False):
            ans.fallback = unavailable
            ans.backend = asked or ans.backend
        metrics.observe_timings("ask", getattr(ans, "timings_ms", None))
        metrics.observe_answer(getattr(ans, "backend", None), getattr(ans, "abstained", False),
                               getattr(ans, "fallback", None))
        return to_struct(ans, AskResponse, generation_id=getattr(ans, "generation_id", None) or snapshot.id)

    async def _stream(self, answerer, snapshot: Snapshot, question: str, kwargs: dict, needs_slot: bool,
                      slots: GenerationSlots, metrics: Metrics, request: Request, *, unavailable: str | None = None,
                      asked: str | None = None) -> EventStream:
        rid = request_id_of(request)
        # Take the slot before answering 200: when all are busy the client gets a real 503, not an error event.
        lease = await slots.acquire() if needs_slot else None

        def make_iter():
            return answerer.answer_stream(snapshot, question, **kwargs)

        async def events():
            seq = 0
            try:
                async for ev in slots.iterate(make_iter, lease=lease):
                    kind, payload = _event_parts(ev, snapshot.id)
                    if kind == "done" and unavailable and not payload.get("abstained"):
                        payload["fallback"] = unavailable
                        payload["backend"] = asked or payload.get("backend")
                    if kind == "done":
                        metrics.observe_timings("ask", payload.get("timings_ms"))
                        metrics.observe_answer(payload.get("backend"), payload.get("abstained", False),
                                               payload.get("fallback"))
                    if kind == "error":
                        payload["request_id"] = rid
                    seq += 1
                    yield ServerSentEventMessage(data=json.dumps(payload, ensure_ascii=False, default=str),
                                                 event=kind, id=str(seq))
            except TimeoutError:
                seq += 1
                yield ServerSentEventMessage(event="error", id=str(seq), data=json.dumps(
                    {"code": "timeout", "message": "generation timed out", "request_id": rid}))
            except Exception as e:  # noqa: BLE001 - the status line is sent: report in-band, log the trace
                log.error("stream failed (request %s)", rid, exc_info=e)
                seq += 1
                yield ServerSentEventMessage(event="error", id=str(seq), data=json.dumps(
                    {"code": "internal_error", "message": "the answer failed midway; quote the request id",
                     "request_id": rid}))

        return EventStream(events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                                  "X-Generation-Id": snapshot.id})
