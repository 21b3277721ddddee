"""POST /v1/ask: a grounded answer with checked citations, as one JSON body or as Server-Sent Events.

Streaming (``"stream": true``) sends typed events, in this order::

    event: retrieval   data: {"passages": [...], "generation_id": ...}
    event: token       data: {"text": "..."}                      (many)
    event: citation    data: {"n": 1, "doc_id": ..., ...}         (one per citation kept)
    event: done        data: {"answer", "citations", "abstained", "timings_ms", "generation_id", ...}
    event: error       data: {"code", "message", "request_id"}    (instead of done, when it fails midway)

Errors found before the stream starts (validation, no index, all generator slots busy) are ordinary JSON error
responses. The answer is `Application.ask`'s, the same as `rag ask` gives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, post
from litestar.response import ServerSentEvent, ServerSentEventMessage

from rag.access import Visibility
from rag.answering import Answer, AnswerEvent
from rag.application import AnswerStream, Application
from rag.snapshot import Snapshot
from service.errors import error_responses
from service.metrics import Metrics
from service.request_log import USER_ID_KEY, request_id_of
from service.schemas import AskRequest

log = logging.getLogger("service.ask")


class EventStream(ServerSentEvent):
    """ServerSentEvent that keeps `text/event-stream` when returned from a handler documented as JSON (Litestar
    passes the handler's media type down and it would win over the response's own)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any):
        kwargs["media_type"] = None
        return super().to_asgi_response(*args, **kwargs)


class AskController(Controller):
    path = "/ask"
    tags = ["answers"]

    @post("", status_code=200, summary="Ask a question (JSON or Server-Sent Events)",
          responses=error_responses(400, 401, 403, 413, 429, 503))
    async def ask(self, data: AskRequest, application: Application, snapshot: Snapshot, metrics: Metrics,
                  request: Request, visibility: Visibility) -> Answer:
        """Retrieve, generate (or extract), check citations. With `stream: true` the response is
        `text/event-stream` with events retrieval, token, citation, done (or error)."""
        if data.user_id:
            request.scope["state"][USER_ID_KEY] = data.user_id
        call = application.ask_stream if data.stream else application.ask
        result = await anyio.to_thread.run_sync(partial(call, **data.arguments(), snapshot=snapshot,
                                                        visibility=visibility))
        if data.stream:
            return EventStream(_sse(result, metrics, request_id_of(request)),
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                        "X-Generation-Id": result.generation_id})
        return metrics.observe("ask", result)


async def _sse(stream: AnswerStream, metrics: Metrics, request_id: str) -> AsyncIterator[ServerSentEventMessage]:
    """The events of `stream` as SSE messages, each `next()` in a worker thread; an error midway is reported
    in-band (the status line is sent)."""
    seq = 0
    try:
        while (event := await anyio.to_thread.run_sync(next, stream, None)) is not None:
            seq += 1
            yield ServerSentEventMessage(data=json.dumps(_payload(event, stream, metrics, request_id),
                                                         ensure_ascii=False), event=event.type, id=str(seq))
    except Exception as e:  # noqa: BLE001 - the status line is sent: report in-band, log the trace
        log.error("stream failed (request %s)", request_id, exc_info=e)
        yield ServerSentEventMessage(event="error", id=str(seq + 1), data=json.dumps(
            {"code": "internal_error", "message": "the answer failed midway; quote the request id",
             "request_id": request_id}))
    finally:
        await anyio.to_thread.run_sync(stream.close)


def _payload(event: AnswerEvent, stream: AnswerStream, metrics: Metrics, request_id: str) -> dict[str, Any]:
    if event.type == "retrieval":
        return {"passages": msgspec.to_builtins(event.data), "generation_id": stream.generation_id}
    if event.type == "token":
        return {"text": event.data}
    if event.type == "error":
        return {"code": "generation_error", "message": str(event.data), "request_id": request_id}
    if event.type == "done":
        metrics.observe("ask", event.data)
    return msgspec.to_builtins(event.data)
