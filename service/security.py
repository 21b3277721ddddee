"""API-key auth: a Litestar guard with two roles.

Keys come from ``settings.service.api_keys`` (key -> "reader" | "admin"); a key is sent as ``X-API-Key: KEY``
or ``Authorization: Bearer KEY``. ``admin`` can do everything ``reader`` can. A handler asks for a role
with ``opt={"role": "admin"}`` (default reader). No keys configured and ``open_mode`` off means every guarded
request is refused (401, with a message saying how to configure keys); ``open_mode`` (explicit, for local demos)
lets everyone in as admin.
"""

from __future__ import annotations

import hashlib
import hmac
import typing
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from rag.config import ConfigError, Role, ServiceSettings
from service.request_log import KEY_ID_KEY, ROLE_KEY

ROLES: tuple[str, ...] = typing.get_args(Role)
_RANK = {"reader": 1, "admin": 2}


def key_id(key: str) -> str:
    """What logs and the rate limiter call a key: a short hash, never the key itself."""
    return "k:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:10]


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


@dataclass
class Principal:
    key_id: str | None
    role: str


class ApiKeyAuth:
    def __init__(self, settings: ServiceSettings):
        self.open_mode = bool(settings.open_mode)
        bad = {k: r for k, r in settings.api_keys.items() if r not in ROLES}
        if bad:  # settings loaded by load_settings never have one; settings built in code might
            raise ConfigError(f"service.api_keys: unknown role(s) {sorted(set(bad.values()))}; use reader or admin",
                              field="service.api_keys")
        # Digests, compared in constant time: a timing side channel never tells how much of a key matched.
        self._keys = [(hashlib.sha256(k.encode()).digest(), role) for k, role in settings.api_keys.items()]

    def __deepcopy__(self, memo) -> "ApiKeyAuth":
        return self  # Litestar deep-copies routers on registration; the key table is shared, not copied

    def authenticate(self, headers) -> Principal | None:
        key = presented_key(headers)
        if key is None:
            return Principal(None, "admin") if self.open_mode else None
        digest = hashlib.sha256(key.encode("utf-8", "replace")).digest()
        role = None
        for d, r in self._keys:
            if hmac.compare_digest(d, digest):
                role = r
        if role is None:
            if self.open_mode:
                return Principal(None, "admin")
            return None
        return Principal(key_id(key), role)

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
        if principal.key_id:
            state[KEY_ID_KEY] = principal.key_id
        if _RANK[principal.role] < _RANK.get(need, 2):
            raise PermissionDeniedException(f"this endpoint needs the {need} role; the key has {principal.role}")
