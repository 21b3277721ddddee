"""One error shape for every failure: ``{"error": {"code", "message", "field"?, "hint"?, "request_id"}}``.

Validation errors name the offending field (``filters.domain``, ``mode``, ``events``); library exceptions map to
statuses (no index -> 503 with a hint, an unknown id -> 404, a busy generator -> 503 + Retry-After); anything
unexpected is a 500 whose body carries only the request id; the stack trace goes to the log, never the client.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    ValidationException,
)
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_504_GATEWAY_TIMEOUT,
)

log = logging.getLogger("service.errors")

REQUEST_ID_KEY = "rag.request_id"
GENERATION_ID_KEY = "rag.generation_id"

_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable",
    429: "rate_limited", 500: "internal_error", 503: "unavailable", 504: "timeout",
}


class ServiceError(Exception):
    """A failure with an HTTP status, raised anywhere in the service and rendered by `handle_service_error`."""

    def __init__(self, status: int, message: str, *, code: str | None = None, field: str | None = None,
                 hint: str | None = None, headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")
        self.field = field
        self.hint = hint
        self.headers = headers or {}
        self.extra = extra or {}


def bad_request(message: str, field: str | None = None, code: str = "validation_error") -> ServiceError:
    return ServiceError(HTTP_400_BAD_REQUEST, message, code=code, field=field)


def request_id_of(scope_or_request: Any) -> str:
    scope = getattr(scope_or_request, "scope", scope_or_request)
    try:
        return str(scope.get("state", {}).get(REQUEST_ID_KEY, ""))
    except AttributeError:
        return ""


def error_body(status: int, message: str, *, request_id: str = "", code: str | None = None,
               field: str | None = None, hint: str | None = None, extra: dict[str, Any] | None = None) -> dict:
    err: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": message}
    if field:
        err["field"] = field
    if hint:
        err["hint"] = hint
    if extra:
        err.update(extra)
    err["request_id"] = request_id
    return {"error": err}


def _response(request: Request, status: int, message: str, *, code: str | None = None, field: str | None = None,
              hint: str | None = None, headers: dict[str, str] | None = None,
              extra: dict[str, Any] | None = None) -> Response:
    body = error_body(status, message, request_id=request_id_of(request), code=code, field=field, hint=hint,
                      extra=extra)
    return Response(content=body, status_code=status, headers=headers or {}, media_type="application/json")


# --- handlers ---------------------------------------------------------------------------------------------

_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]*)`")
_MSGSPEC_PATH = re.compile(r"\s*-\s*at `\$(?P<path>[^`]*)`\s*$")


def _field_from_msgspec(path: str) -> str:
    # "$.filters.domain[0]" -> "filters.domain[0]"; "$[3].type" -> "[3].type"
    return path.lstrip(".")


def handle_service_error(request: Request, exc: ServiceError) -> Response:
    return _response(request, exc.status, exc.message, code=exc.code, field=exc.field, hint=exc.hint,
                     headers=exc.headers, extra=exc.extra)


def handle_validation(request: Request, exc: ValidationException) -> Response:
    """Litestar's ValidationException -> 400 naming the first offending field (all listed in `errors`)."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    problems = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        msg = str(item.get("message", "invalid value"))
        key = item.get("key")
        if key == "data" and item.get("source") == "body" and msg == "'data'":
            return _response(request, 400, "a JSON request body is required", code="missing_body")
        m = _MSGSPEC_PATH.search(msg)
        if m:  # msgspec names the nested location inside the message
            nested = _field_from_msgspec(m.group("path"))
            msg = msg[: m.start()]
            key = f"{key}.{nested}" if key and nested and not nested.startswith("[") else (
                f"{key}{nested}" if key else nested)
        if key in (None, "", "data") and item.get("source") == "body":
            key = None
        u = _UNKNOWN_FIELD.search(msg)
        if u:  # "Object contains unknown field `topk`": the field is the unknown one
            key = f"{key}.{u.group(1)}" if key else u.group(1)
            msg = f"unknown field `{u.group(1)}`"
        mf = _MISSING_FIELD.search(msg)
        if mf:  # "Object missing required field `title`"
            key = f"{key}.{mf.group(1)}" if key else mf.group(1)
            msg = "required field missing"
        problems.append({"field": key, "message": msg, "source": item.get("source")})
    if problems:
        first = problems[0]
        field = first["field"]
        message = f"{field}: {first['message']}" if field else first["message"]
        return _response(request, 400, message, code="validation_error", field=field,
                         extra={"errors": problems} if len(problems) > 1 else None)
    detail = exc.detail or "invalid request"
    if _malformed(exc):
        return _response(request, 400, f"malformed JSON body: {detail}", code="malformed_body")
    return _response(request, 400, detail, code="bad_request")


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    headers = dict(exc.headers or {})
    message = exc.detail or _CODES.get(status, "error")
    hint = None
    if status == HTTP_404_NOT_FOUND and (not exc.detail or exc.detail == "Not Found"):
        message = f"no route {request.method} {request.url.path}"
        hint = "see the API document at /schema"
    if _code_for(exc, status) == "malformed_body":
        message = f"malformed JSON body: {exc.detail}"
    if status == 413:
        try:
            limit = request.app.state.settings.service.max_body_bytes
            message = f"request body too large: the limit is {limit} bytes"
        except AttributeError:
            message = "request body too large"
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="rag", ApiKey header="X-API-Key"')
    if status >= 500:
        log.error("HTTP %s on %s %s: %s", status, request.method, request.url.path, exc.detail)
        message = "internal error" if status == 500 else message
    return _response(request, status, message, code=_code_for(exc, status), hint=hint, headers=headers)


def _malformed(exc: BaseException) -> bool:
    """Whether `exc` stems from an undecodable body (msgspec DecodeError / Litestar SerializationException)."""
    from litestar.exceptions import SerializationException

    seen = 0
    cur: BaseException | None = exc.__cause__ or exc.__context__
    while cur is not None and seen < 5:
        if isinstance(cur, SerializationException) or (
                isinstance(cur, msgspec.DecodeError) and not isinstance(cur, msgspec.ValidationError)):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def _code_for(exc: HTTPException, status: int) -> str:
    if status == 400 and _malformed(exc):
        return "malformed_body"
    return _CODES.get(status, "error")


def handle_serialization(request: Request, exc: Exception) -> Response:
    return _response(request, 400, f"malformed request body: {exc}", code="malformed_body")


def handle_decode(request: Request, exc: msgspec.DecodeError) -> Response:
    return _response(request, 400, f"malformed JSON body: {exc}", code="malformed_body")


def handle_no_generation(request: Request, exc: Exception) -> Response:
    return _response(request, HTTP_503_SERVICE_UNAVAILABLE, str(exc) or "no index generation is published",
                     code="no_index", hint="build one: `rag index build SOURCE`, or POST /v1/admin/index/rebuild",
                     headers={"Retry-After": "30"})


class unknown_ids_are_404:  # noqa: N801 - used as a context manager
    """Around a library call that raises KeyError for an unknown id: that KeyError becomes a 404 naming `field`.

    Deliberately not a global KeyError handler: a KeyError from a bug must stay a 500, not pass for a 404.
    """

    def __init__(self, field: str | None = None):
        self.field = field

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, exc, tb) -> bool:
        if typ is not None and issubclass(typ, KeyError):
            if type(exc).__str__ is not KeyError.__str__:  # a library KeyError with a readable message
                what = str(exc)
            else:
                what = str(exc.args[0]) if exc.args else "unknown id"
            raise ServiceError(HTTP_404_NOT_FOUND, what, code="not_found", field=self.field) from exc
        return False


def handle_timeout(request: Request, exc: TimeoutError) -> Response:
    return _response(request, HTTP_504_GATEWAY_TIMEOUT, "the request took longer than the generation timeout",
                     code="timeout", hint="retry, or ask with backend=extractive")


def handle_busy(request: Request, exc: Exception) -> Response:
    retry = str(int(getattr(exc, "retry_after", 0) or 5))
    return _response(request, HTTP_503_SERVICE_UNAVAILABLE, str(exc) or "all generation slots are busy",
                     code="busy", headers={"Retry-After": retry})


def handle_internal(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s (request %s)", request.method, request.url.path, request_id_of(request),
              exc_info=exc)
    return _response(request, HTTP_500_INTERNAL_SERVER_ERROR,
                     "internal error; quote the request id when reporting it", code="internal_error")


def exception_handlers() -> dict:
    from litestar.exceptions import SerializationException

    from rag.published import NoSnapshot

    handlers: dict = {
        ServiceError: handle_service_error,
        ValidationException: handle_validation,
        HTTPException: handle_http_exception,
        SerializationException: handle_serialization,
        msgspec.DecodeError: handle_decode,
        NoSnapshot: handle_no_generation,
        TimeoutError: handle_timeout,
        Exception: handle_internal,
    }
    try:
        from rag.generators.base import GeneratorBusy

        handlers[GeneratorBusy] = handle_busy
    except ImportError:  # the generator package is optional for the HTTP layer's own tests
        pass
    return handlers


_DESCRIPTIONS = {
    400: "Invalid input; `error.field` names the offending field.",
    401: "Missing or invalid API key.",
    403: "The key's role may not use this endpoint.",
    404: "Unknown id or route.",
    409: "Conflict (the id exists, a job is running, a read-only source).",
    413: "Request body or document too large.",
    429: "Rate limit exceeded; see Retry-After.",
    503: "No index published yet, or all generation slots busy; see Retry-After.",
    504: "Generation timed out.",
}


def error_responses(*codes: int) -> dict:
    """OpenAPI `responses=` for the error statuses a handler can return, all with the `ErrorBody` shape."""
    from litestar.openapi.datastructures import ResponseSpec

    from service.schemas import ErrorBody

    return {c: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS.get(c, "Error."),
                            generate_examples=False) for c in codes}


def from_msgspec(exc: msgspec.ValidationError) -> ServiceError:
    """A msgspec ValidationError ("Expected `int` >= 1 - at `$.top_k`") -> 400 naming the field."""
    msg = str(exc)
    field = None
    m = _MSGSPEC_PATH.search(msg)
    if m:
        field = _field_from_msgspec(m.group("path")) or None
        msg = msg[: m.start()]
    u = _UNKNOWN_FIELD.search(msg)
    if u:
        field = f"{field}.{u.group(1)}" if field else u.group(1)
        msg = f"unknown field `{u.group(1)}`"
    mf = _MISSING_FIELD.search(msg)
    if mf:
        field = f"{field}.{mf.group(1)}" if field else mf.group(1)
        msg = "required field missing"
    return ServiceError(HTTP_400_BAD_REQUEST, f"{field}: {msg}" if field else msg, code="validation_error",
                        field=field)
