"""HTTP limits that keep one process healthy under load. (The limit on text generation is the application's own:
rag.generators.slots, for the CLI and HTTP alike.)

- `RateLimitMiddleware`: a token bucket per API key (per client address for requests without a valid key),
  ``settings.service.rate_limit_per_minute`` tokens a minute with that many as burst; an empty bucket is a 429
  with ``Retry-After`` (seconds until the next token). Health, readiness, metrics and the API document are
  exempt (``opt={"rate_limit_exempt": True}`` exempts any handler).
- Body size: Litestar's ``request_max_body_size`` (``settings.service.max_body_bytes``) -> 413, checked on the
  Content-Length before reading and while reading a chunked body (wired in `service.app`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError


# --- rate limit -------------------------------------------------------------------------------------------

class TokenBuckets:
    """Thread-safe token buckets keyed by identity."""

    def __init__(self, per_minute: int, burst: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0  # tokens per second
        self.capacity = float(burst if burst is not None else max(1, per_minute))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # identity -> (tokens, last refill time)
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> "TokenBuckets":
        return self  # shared state: Litestar deep-copies routers (and their middleware) on registration

    def take(self, identity: str) -> tuple[bool, float, float]:
        """(allowed, tokens left, seconds until one token is available)."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(identity, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                self._buckets[identity] = (tokens, now)
                allowed, wait = True, 0.0
            else:
                self._buckets[identity] = (tokens, now)
                allowed, wait = False, (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
            if len(self._buckets) > 10_000:
                self._prune(now)
            return allowed, tokens, wait

    def _prune(self, now: float) -> None:
        full_after = self.capacity / self.rate if self.rate > 0 else 60.0
        for k, (_, last) in list(self._buckets.items()):
            if now - last > full_after:
                del self._buckets[k]


class RateLimitMiddleware(ASGIMiddleware):
    exclude_opt_key = "rate_limit_exempt"

    def __init__(self, buckets: TokenBuckets, identify: Callable[[Any, str], str], on_limited=None):
        self.buckets = buckets
        self.identify = identify
        self.on_limited = on_limited

    def __deepcopy__(self, memo) -> "RateLimitMiddleware":
        return self

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        from litestar.datastructures import Headers

        client = scope.get("client") or ("", 0)
        identity = self.identify(Headers.from_scope(scope), client[0] if client else "")
        allowed, left, wait = self.buckets.take(identity)
        limit = int(self.buckets.capacity)
        if not allowed:
            if self.on_limited:
                self.on_limited()
            retry = max(1, math.ceil(wait))
            raise ServiceError(429, f"rate limit exceeded ({limit} requests a minute for this key); "
                                    f"retry in {retry} s", code="rate_limited",
                               headers={"Retry-After": str(retry), "RateLimit-Limit": str(limit),
                                        "RateLimit-Remaining": "0"})

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"ratelimit-limit", str(limit).encode()))
                headers.append((b"ratelimit-remaining", str(int(left)).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await next_app(scope, receive, send_with_headers)


# --- rate limit shared by replicas --------------------------------------------------------------------------

SHARED_STORE = "rate_limit"  # the Litestar store name the shared limiter uses


def shared_rate_limit(url: str, per_minute: int, identify: Callable[[Any, str], str]):
    """Litestar's own rate-limit middleware over a store every replica shares (`service.rate_limit_store`, a
    `redis://` or `valkey://` URL): (middleware, {store name: store}) for the app. Counted per identity (API key,
    else client address) in a fixed one-minute window, so N replicas together let `per_minute` requests through.
    (Litestar reads and writes a window without a cross-process lock: under bursts spread over replicas a few
    requests past the limit may get through.)"""
    from litestar.middleware.rate_limit import RateLimitConfig

    if url.startswith(("redis://", "rediss://", "unix://")):
        from litestar.stores.redis import RedisStore

        store = RedisStore.with_client(url=url, namespace="rag-rate-limit")
    elif url.startswith("valkey://"):
        from litestar.stores.valkey import ValkeyStore

        store = ValkeyStore.with_client(url="redis://" + url[len("valkey://"):], namespace="rag-rate-limit")
    else:
        raise ValueError(f"service.rate_limit_store: expected a redis:// or valkey:// URL, got {url[:80]!r}")

    def identifier(request) -> str:
        client = request.client
        return identify(request.headers, client.host if client else "")

    config = RateLimitConfig(rate_limit=("minute", per_minute), identifier_for_request=identifier,
                             exclude_opt_key="rate_limit_exempt", store=SHARED_STORE)
    return config.middleware, {SHARED_STORE: store}
