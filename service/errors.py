"""One error shape for every failure: ``{"error": {"code", "message", "field"?, "hint"?, "request_id"}}``.

The library's error tree (rag.errors) maps to HTTP here, once:

    InvalidInput 400 (TooLarge 413)   NotFound 404   Conflict 409   Busy 503 + Retry-After   Unavailable 503

with the error's own `code`, `field`, `hint` and details. Litestar's own failures (validation of path and query
parameters, unknown routes, methods, bodies too large or not JSON) get the same shape; `ServiceError` is for what
only HTTP has (the rate limit). Anything unexpected is a 500 whose body carries only the request id; the stack
trace goes to the log, never the client.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from rag.errors import Busy, Conflict, InvalidInput, NotFound, RagError, TooLarge, Unavailable
from service.request_log import request_id_of
from service.schemas import ErrorBody

log = logging.getLogger("service.errors")

_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable",
    429: "rate_limited", 500: "internal_error", 503: "unavailable",
}

# The library's error kinds, most specific first.
STATUS: tuple[tuple[type[RagError], int], ...] = (
    (TooLarge, 413), (InvalidInput, 400), (NotFound, 404), (Conflict, 409), (Busy, 503), (Unavailable, 503))


def http_status(e: RagError) -> int:
    return next((status for kind, status in STATUS if isinstance(e, kind)), 500)


def http_headers(e: RagError) -> dict[str, str]:
    """Retry-After (whole seconds) for an error that says when to try again (Busy, no snapshot yet)."""
    retry = getattr(e, "retry_after_s", None)
    return {"Retry-After": str(max(1, math.ceil(retry)))} if retry else {}


class ServiceError(Exception):
    """A failure only HTTP has (the rate limit), with its status."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")
        self.headers = headers or {}


def error_body(status: int, message: str, *, request_id: str = "", code: str | None = None,
               field: str | None = None, hint: str | None = None, extra: dict[str, Any] | None = None) -> dict:
    err: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": message}
    if field:
        err["field"] = field
    if hint:
        err["hint"] = hint
    if extra:
        err.update(msgspec.to_builtins(extra))
    err["request_id"] = request_id
    return {"error": err}


def _response(request: Request, status: int, message: str, *, headers: dict[str, str] | None = None,
              **fields: Any) -> Response:
    body = error_body(status, message, request_id=request_id_of(request), **fields)
    return Response(content=body, status_code=status, headers=headers or {}, media_type="application/json")


# --- handlers ---------------------------------------------------------------------------------------------

def handle_rag_error(request: Request, exc: RagError) -> Response:
    status = http_status(exc)
    if status >= 500 and not isinstance(exc, (Busy, Unavailable)):
        return handle_internal(request, exc)
    return _response(request, status, exc.message, code=exc.code, field=exc.field, hint=exc.hint,
                     extra=exc.details, headers=http_headers(exc))


def handle_service_error(request: Request, exc: ServiceError) -> Response:
    return _response(request, exc.status, exc.message, code=exc.code, headers=exc.headers)


def handle_validation(request: Request, exc: ValidationException) -> Response:
    """Litestar's ValidationException (path and query parameters; bodies are checked before, by `strict_body`)
    -> 400 naming the first offending parameter (all listed in `errors`)."""
    problems = [{"field": item.get("key") or None, "message": str(item.get("message", "invalid value")),
                 "source": item.get("source")}
                for item in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(item, dict)]
    if problems:
        first = problems[0]
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return _response(request, 400, message, code="validation_error", field=first["field"],
                         extra={"errors": problems} if len(problems) > 1 else None)
    if _malformed(exc):
        return _response(request, 400, f"malformed JSON body: {exc.detail}", code="malformed_body")
    return _response(request, 400, exc.detail or "invalid request", code="bad_request")


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    headers = dict(exc.headers or {})
    message = exc.detail or _CODES.get(status, "error")
    hint = None
    code = "malformed_body" if status == 400 and _malformed(exc) else _CODES.get(status, "error")
    if status == 404 and (not exc.detail or exc.detail == "Not Found"):
        message = f"no route {request.method} {request.url.path}"
        hint = "see the API document at /schema"
    if code == "malformed_body":
        message = f"malformed JSON body: {exc.detail}"
    if status == 413:
        try:
            message = f"request body too large: the limit is {request.app.state.settings.service.max_body_bytes} bytes"
        except AttributeError:
            message = "request body too large"
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="rag", ApiKey header="X-API-Key"')
    if status >= 500:
        log.error("HTTP %s on %s %s: %s", status, request.method, request.url.path, exc.detail)
        message = "internal error" if status == 500 else message
    return _response(request, status, message, code=code, hint=hint, headers=headers)


def _malformed(exc: BaseException) -> bool:
    """Whether `exc` stems from an undecodable body (msgspec DecodeError / Litestar SerializationException)."""
    seen = 0
    cur: BaseException | None = exc.__cause__ or exc.__context__
    while cur is not None and seen < 5:
        if isinstance(cur, SerializationException) or (
                isinstance(cur, msgspec.DecodeError) and not isinstance(cur, msgspec.ValidationError)):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def handle_malformed(request: Request, exc: Exception) -> Response:
    return _response(request, 400, f"malformed request body: {exc}", code="malformed_body")


def handle_internal(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s (request %s)", request.method, request.url.path, request_id_of(request),
              exc_info=exc)
    return _response(request, 500, "internal error; quote the request id when reporting it", code="internal_error")


def exception_handlers() -> dict:
    return {
        RagError: handle_rag_error,
        ServiceError: handle_service_error,
        ValidationException: handle_validation,
        HTTPException: handle_http_exception,
        SerializationException: handle_malformed,
        msgspec.DecodeError: handle_malformed,
        Exception: handle_internal,
    }


_DESCRIPTIONS = {
    400: "Invalid input; `error.field` names the offending field.",
    401: "Missing or invalid API key.",
    403: "The key's role may not use this endpoint.",
    404: "Unknown id or route.",
    409: "Conflict (the id exists, a job is running, a read-only source).",
    413: "Request body or document too large.",
    429: "Rate limit exceeded; see Retry-After.",
    503: "No index published yet, or all generator slots busy; see Retry-After.",
}


def error_responses(*codes: int) -> dict:
    """OpenAPI `responses=` for the error statuses a handler can return, all with the `ErrorBody` shape."""
    return {c: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS.get(c, "Error."),
                            generate_examples=False) for c in codes}
