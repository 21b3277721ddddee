"""API-key auth: a Litestar guard with two roles, and the principal each key stands for (rag.access).

Keys come from ``settings.service.api_keys`` (key -> "reader" | "admin", or a table {role, groups, id}); a key is
sent as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. ``admin`` can do everything ``reader`` can. A handler
asks for a role with ``opt={"role": "admin"}`` (default reader). No keys configured and ``open_mode`` off means
every guarded request is refused (401, with a message saying how to configure keys); ``open_mode`` (explicit, for
local demos) lets everyone in as admin, seeing public documents and those of ``service.open_groups`` only. The
guard leaves the principal in the request scope (``PRINCIPAL_KEY``): routes hand its visibility to the application.
"""

from __future__ import annotations

import hashlib
import hmac
import typing

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from rag.access import Principal, key_principals
from rag.access import key_id as _key_id
from rag.config import ConfigError, Role, ServiceSettings
from service.request_log import KEY_ID_KEY, PRINCIPAL_KEY, ROLE_KEY

ROLES: tuple[str, ...] = typing.get_args(Role)
_RANK = {"reader": 1, "admin": 2}


def key_id(key: str) -> str:
    """What logs and the rate limiter call a key: a short hash, never the key itself."""
    return _key_id(key)


def presented_key(headers) -> str | None:
    """The key a request presents (X-API-Key wins over Authorization: Bearer), or None."""
    key = headers.get("x-api-key")
    if key:
        return key.strip() or None
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class ApiKeyAuth:
    def __init__(self, settings: ServiceSettings):
        self.open_mode = bool(settings.open_mode)
        roles = [r if isinstance(r, str) else r.role for r in settings.api_keys.values()]
        bad = [r for r in roles if r not in ROLES]
        if bad:  # settings loaded by load_settings never have one; settings built in code might
            raise ConfigError(f"service.api_keys: unknown or missing role(s) {sorted(set(map(str, bad)))}; "
                              "use reader or admin", field="service.api_keys")
        # Digests, compared in constant time: a timing side channel never tells how much of a key matched.
        self._principals = key_principals(settings.api_keys)
        self._keys = [(d, p.role) for d, p in self._principals]
        self.open_principal = Principal(None, "admin", tuple(settings.open_groups))

    @property
    def principals(self) -> list[Principal]:
        """The configured keys' principals (for the admin's key list)."""
        return [p for _, p in self._principals]

    def __deepcopy__(self, memo) -> "ApiKeyAuth":
        return self  # Litestar deep-copies routers on registration; the key table is shared, not copied

    def authenticate(self, headers) -> Principal | None:
        key = presented_key(headers)
        if key is None:
            return self.open_principal if self.open_mode else None
        digest = hashlib.sha256(key.encode("utf-8", "replace")).digest()
        found = None
        for d, p in self._principals:
            if hmac.compare_digest(d, digest):
                found = p
        if found is None:
            if self.open_mode:
                return self.open_principal
            return None
        return found

    def identity(self, headers, client_host: str) -> str:
        """Rate-limit bucket: the key when it is a valid one, else the client address."""
        key = presented_key(headers)
        if key is not None:
            digest = hashlib.sha256(key.encode("utf-8", "replace")).digest()
            if any(hmac.compare_digest(d, digest) for d, _ in self._keys):
                return key_id(key)
        return "ip:" + (client_host or "?")

    def guard(self, connection: ASGIConnection, route_handler: BaseRouteHandler) -> None:
        if connection.scope.get("method") == "OPTIONS":
            return  # capability discovery (Allow) is not guarded; CORS preflights never reach guards anyway
        need = (route_handler.opt or {}).get("role", "reader")
        principal = self.authenticate(connection.headers)
        if principal is None:
            if not self._keys and not self.open_mode:
                raise NotAuthorizedException(
                    "no API keys are configured: set service.api_keys (e.g. RAG_SERVICE__API_KEYS="
                    "'{\"KEY\": \"admin\"}'), or start with `rag serve --open` for a local demo")
            if presented_key(connection.headers) is None:
                raise NotAuthorizedException("missing API key: send X-API-Key: KEY or Authorization: Bearer KEY")
            raise NotAuthorizedException("invalid API key")
        state = connection.scope.setdefault("state", {})
        state[ROLE_KEY] = principal.role
        state[PRINCIPAL_KEY] = principal
        if principal.key_id:
            state[KEY_ID_KEY] = principal.key_id
            application = getattr(connection.app.state, "application", None)
            if application is not None:
                application.note_key_use(principal.key_id)
        if _RANK[principal.role] < _RANK.get(need, 2):
            raise PermissionDeniedException(f"this endpoint needs the {need} role; the key has {principal.role}")
