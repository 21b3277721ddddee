"""Structured JSON logs, and the outermost ASGI layer that gives every request an id, a log line and metrics.

One line per request::

    {"ts": "...", "level": "INFO", "logger": "service.access", "msg": "request", "request_id": "...",
     "method": "POST", "path": "/v1/ask", "route": "/v1/ask", "status": 200, "duration_ms": 41.2,
     "generation_id": "g2025...", "client": "127.0.0.1", "key": "k:3f2a19c0"}

The request id is the caller's ``X-Request-ID`` when it is sane (``[A-Za-z0-9._:-]{1,128}``), a new one
otherwise; it is echoed in the ``X-Request-ID`` response header and in every error body. The layer wraps
the whole app (404s for unknown routes, CORS preflights and streamed responses included); the generation a
request ran on is also echoed as ``X-Generation-Id``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from service.errors import GENERATION_ID_KEY, REQUEST_ID_KEY

access_log = logging.getLogger("service.access")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
KEY_ID_KEY = "rag.key_id"
ROLE_KEY = "rag.role"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra attributes passed with ``extra={...}`` become fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: int | str = logging.INFO, stream=None) -> None:
    """Root logger -> JSON lines on stderr (uvicorn's own loggers included). For `rag serve`, not for tests."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our access line carries more (request id, generation)


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Raw ASGI (not Litestar middleware) so it sees every request, routed or not, streamed or not."""

    def __init__(self, app, metrics=None):
        self.app = app
        self.metrics = metrics
        self._allow_map: dict | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                try:
                    candidate = value.decode("latin-1")
                except UnicodeDecodeError:
                    candidate = ""
                if _REQUEST_ID_OK.match(candidate):
                    rid = candidate
                break
        rid = rid or new_request_id()
        state[REQUEST_ID_KEY] = rid
        status_holder = {"status": 500, "started": False}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                if scope.get("method") == "OPTIONS" and any(k.lower() == b"allow" for k, _ in headers):
                    allowed = self._allowed(scope)
                    if allowed:
                        headers = [(k, v) for k, v in headers if k.lower() != b"allow"]
                        headers.append((b"allow", allowed.encode("latin-1")))
                snapshot_id = state.get(GENERATION_ID_KEY)
                if snapshot_id and not any(k.lower() == b"x-generation-id" for k, _ in headers):
                    headers.append((b"x-generation-id", str(snapshot_id).encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._finish(scope, state, rid, status_holder, start)

    def _allowed(self, scope) -> str | None:
        """The methods of the route (Litestar 2.25's automatic OPTIONS answer lists only some of them when a
        path has several handlers)."""
        if self._allow_map is None:
            app = scope.get("litestar_app")
            routes = getattr(app, "routes", None) or []
            self._allow_map = {getattr(r, "path_format", None): ", ".join(sorted(getattr(r, "methods", ())))
                               for r in routes if getattr(r, "methods", None)}
        return self._allow_map.get(scope.get("path_template"))

    def _finish(self, scope, state, rid, status_holder, start) -> None:
        duration = time.perf_counter() - start
        route = scope.get("path_template") or ("<unmatched>" if status_holder["status"] == 404 else "<none>")
        method = scope.get("method", "")
        status = status_holder["status"] if status_holder["started"] else 499  # client went away first
        if self.metrics is not None:
            try:
                self.metrics.observe_request(method, route, status, duration)
            except Exception:  # noqa: BLE001 - metrics never break a request
                pass
        client = scope.get("client") or ("", 0)
        fields = {
            "request_id": rid, "method": method, "path": scope.get("path", ""), "route": route,
            "status": status, "duration_ms": round(duration * 1000, 2),
            "generation_id": state.get(GENERATION_ID_KEY), "client": client[0] if client else "",
        }
        if state.get(KEY_ID_KEY):
            fields["key"] = state[KEY_ID_KEY]
        if state.get("rag.user_id"):
            fields["user_id"] = state["rag.user_id"]
        level = logging.WARNING if status >= 500 else logging.INFO
        access_log.log(level, "request", extra=fields)
