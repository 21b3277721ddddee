"""Structured JSON logs, and the request context: every request gets an id, one access log line and metrics.

One line per request::

    {"ts": "...", "level": "INFO", "logger": "service.access", "msg": "request", "request_id": "...",
     "method": "POST", "path": "/v1/ask", "route": "/v1/ask", "status": 200, "duration_ms": 41.2,
     "generation_id": "g2025...", "client": "127.0.0.1", "key": "k:3f2a19c0"}

The request id is the caller's ``X-Request-ID`` when it is sane (``[A-Za-z0-9._:-]{1,128}``), a new one
otherwise; it is echoed in the ``X-Request-ID`` response header and in every error body. The layer wraps
the whole app (404s for unknown routes, CORS preflights and streamed responses included); the generation a
request ran on is also echoed as ``X-Generation-Id``.

It hooks into Litestar twice, through documented hooks only: `RequestLog.before_send` (an application
``before_send`` hook: it sees every response the app sends, routed or not) stamps the headers and writes the
line when the last body part goes out; `RequestLog.middleware()` (application middleware: routed requests)
starts the clock when the request arrives and still writes the line when the client went away before the
response started (status 499).
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

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("service.access")

REQUEST_ID_KEY = "rag.request_id"
GENERATION_ID_KEY = "rag.generation_id"
USER_ID_KEY = "rag.user_id"
_CONTEXT_KEY = "rag.request_context"

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
KEY_ID_KEY = "rag.key_id"
ROLE_KEY = "rag.role"
PRINCIPAL_KEY = "rag.principal"  # rag.access.Principal, set by the API-key guard
QUERY_LOG_KEY = "rag.query_log"  # what the line may say about the request's query (rag.access.query_log_fields)


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


def _context(scope: Scope) -> dict[str, Any]:
    """This request's context, made on first use: its id (the caller's sane X-Request-ID, else a new one) and
    the clock."""
    state = scope.setdefault("state", {})
    ctx = state.get(_CONTEXT_KEY)
    if ctx is None:
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID_OK.match(candidate):
                    rid = candidate
                break
        state[REQUEST_ID_KEY] = rid or new_request_id()
        ctx = state[_CONTEXT_KEY] = {"start": time.perf_counter(), "status": 500, "started": False, "done": False}
    return ctx


def note_query(connection: Any, text: str | None, *, log_text: bool = False) -> None:
    """Let the request's log line carry its query's length and hash (the text only with `privacy.log_queries`)."""
    from rag.access import query_log_fields

    if text is not None:
        getattr(connection, "scope", connection).setdefault("state", {})[QUERY_LOG_KEY] = \
            query_log_fields(text, log_text=log_text)


def request_id_of(connection: Any) -> str:
    """The request id of a request (or its scope), made now if nothing asked for it yet."""
    scope = getattr(connection, "scope", connection)
    _context(scope)
    return str(scope["state"][REQUEST_ID_KEY])


class RequestLog:
    def __init__(self, metrics=None):
        self.metrics = metrics
        self._allow_map: dict | None = None

    def middleware(self) -> ASGIMiddleware:
        return _Arrival(self)

    async def before_send(self, message: Message, scope: Scope) -> None:
        if scope.get("type") != "http":
            return
        ctx = _context(scope)
        if message["type"] == "http.response.start":
            ctx["status"], ctx["started"] = message["status"], True
            message["headers"] = self._headers(scope, list(message.get("headers", [])))
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finish(scope)

    def _headers(self, scope: Scope, headers: list) -> list:
        state = scope["state"]
        headers = [(k, v) for k, v in headers if k.lower() != b"x-request-id"]
        headers.append((b"x-request-id", state[REQUEST_ID_KEY].encode("latin-1")))
        if scope.get("method") == "OPTIONS" and any(k.lower() == b"allow" for k, _ in headers):
            allowed = self._allowed(scope)
            if allowed:
                headers = [(k, v) for k, v in headers if k.lower() != b"allow"]
                headers.append((b"allow", allowed.encode("latin-1")))
        snapshot_id = state.get(GENERATION_ID_KEY)
        if snapshot_id and not any(k.lower() == b"x-generation-id" for k, _ in headers):
            headers.append((b"x-generation-id", str(snapshot_id).encode("latin-1")))
        return headers

    def _allowed(self, scope: Scope) -> str | None:
        """The methods of the route (Litestar 2.25's automatic OPTIONS answer lists only some of them when a
        path has several handlers)."""
        if self._allow_map is None:
            app = scope.get("litestar_app")
            routes = getattr(app, "routes", None) or []
            self._allow_map = {getattr(r, "path_format", None): ", ".join(sorted(getattr(r, "methods", ())))
                               for r in routes if getattr(r, "methods", None)}
        return self._allow_map.get(scope.get("path_template"))

    def finish(self, scope: Scope) -> None:
        """The access line and the request metrics, once per request."""
        ctx = _context(scope)
        if ctx["done"]:
            return
        ctx["done"] = True
        state = scope["state"]
        duration = time.perf_counter() - ctx["start"]
        status = ctx["status"] if ctx["started"] else 499  # the client went away first
        route = scope.get("path_template") or ("<unmatched>" if status == 404 else "<none>")
        method = scope.get("method", "")
        if self.metrics is not None:
            try:
                self.metrics.observe_request(method, route, status, duration)
            except Exception:  # noqa: BLE001 - metrics never break a request
                pass
        client = scope.get("client") or ("", 0)
        fields = {
            "request_id": state[REQUEST_ID_KEY], "method": method, "path": scope.get("path", ""), "route": route,
            "status": status, "duration_ms": round(duration * 1000, 2),
            "generation_id": state.get(GENERATION_ID_KEY), "client": client[0] if client else "",
        }
        if state.get(KEY_ID_KEY):
            fields["key"] = state[KEY_ID_KEY]
        principal = state.get(PRINCIPAL_KEY)
        if principal is not None:  # the audit trail: who (key id, never the key), with which role
            fields["principal"] = principal.key_id or "open-mode"
            fields["role"] = principal.role
        if state.get(QUERY_LOG_KEY):
            fields.update(state[QUERY_LOG_KEY])
        if state.get(USER_ID_KEY):
            fields["user_id"] = state[USER_ID_KEY]
        access_log.log(logging.WARNING if status >= 500 else logging.INFO, "request", extra=fields)


class _Arrival(ASGIMiddleware):
    """Routed requests: the clock starts when they arrive, and the line is written even if nothing was sent."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, log: RequestLog):
        self.log = log

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        _context(scope)
        try:
            await next_app(scope, receive, send)
        finally:
            self.log.finish(scope)
