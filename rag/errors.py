"""The one error tree every layer maps: the HTTP service to a status (service/errors.py), the CLI to an exit
code (service/cli/__init__.py). A use case of `rag.application.Application` fails with one of these or with a
bug; nothing else crosses its boundary.

    RagError                    anything the caller can act on; `field` names the offending input, `code` is
    ├── InvalidInput            the machine-readable reason ("validation_error", "exists", ...), `details`
    │   └── TooLarge            extra JSON-ready facts (the running job of a 409)
    ├── NotFound
    ├── Conflict
    ├── Busy                    every generator slot stayed taken; `retry_after_s` says when to try again
    └── Unavailable             no published snapshot, a locked state database, a snapshot that will not load

`InvalidInput` is also a `ValueError` and `NotFound` a `LookupError`, so a helper that raises one reads as
what it is to ordinary Python code too.
"""

from __future__ import annotations

from typing import Any


class RagError(Exception):
    code = "error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None,
                 hint: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.hint = hint
        self.details = details or {}
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidInput(RagError, ValueError):
    code = "validation_error"


class TooLarge(InvalidInput):
    code = "payload_too_large"


class NotFound(RagError, LookupError):
    code = "not_found"


class Conflict(RagError):
    code = "conflict"


class Busy(RagError):
    code = "busy"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class Unavailable(RagError):
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s
