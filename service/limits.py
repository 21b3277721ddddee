"""Limits that keep one process healthy under load.

- `RateLimitMiddleware`: a token bucket per API key (per client address for requests without a valid key),
  ``settings.service.rate_limit_per_minute`` tokens a minute with that many as burst; an empty bucket is a 429
  with ``Retry-After`` (seconds until the next token). Health, readiness, metrics and the API document are
  exempt (``opt={"rate_limit_exempt": True}`` exempts any handler).
- Body size: Litestar's ``request_max_body_size`` (``settings.service.max_body_bytes``) -> 413, checked on the
  Content-Length before reading and while reading a chunked body (wired in `service.app`).
- `GenerationSlots`: at most ``settings.generator.max_concurrent`` generations at once; a request waits up to
  ``settings.service.queue_timeout_s`` for a slot, then gets 503 + ``Retry-After``. The blocking work runs in a
  worker thread; a slot is released when that thread finishes (even if the request was given up on by then),
  so a timed-out generation never lets more run than configured.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError

T = TypeVar("T")


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


# --- generation slots -------------------------------------------------------------------------------------

class _Lease:
    """One slot: released exactly once, by the worker thread when it ran, by the caller when it never will."""

    def __init__(self, slots: "GenerationSlots", loop: asyncio.AbstractEventLoop):
        self.slots = slots
        self.loop = loop
        self._lock = threading.Lock()
        self._state = "pending"  # pending -> running -> released | pending -> cancelled(released)

    def start(self) -> bool:
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "running"
            return True

    def release_from_thread(self) -> None:
        with self._lock:
            if self._state == "released":
                return
            self._state = "released"
        self.loop.call_soon_threadsafe(self.slots._release)

    def release(self) -> None:
        """From the event loop."""
        with self._lock:
            if self._state == "released":
                return
            self._state = "released"
        self.slots._release()

    def __del__(self) -> None:
        # Safety net: a streamed response whose body never started (client gone) drops its lease unreleased.
        try:
            if self._state != "released":
                self._state = "released"
                self.loop.call_soon_threadsafe(self.slots._release)
        except Exception:  # noqa: BLE001 - interpreter shutdown, closed loop
            pass

    def cancel_if_pending(self) -> None:
        with self._lock:
            if self._state != "pending":
                return
            self._state = "released"
        self.slots._release()


class GenerationSlots:
    def __init__(self, max_concurrent: int, queue_timeout_s: float, run_timeout_s: float | None = None):
        self.max_concurrent = max(1, int(max_concurrent))
        self.queue_timeout_s = float(queue_timeout_s)
        self.run_timeout_s = run_timeout_s
        self.in_use = 0
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:  # bound to the loop that serves (one per app run)
            self._sem = asyncio.Semaphore(self.max_concurrent)
            self._loop = loop
            self.in_use = 0
        return self._sem

    def _release(self) -> None:
        self.in_use -= 1
        if self._sem is not None:
            self._sem.release()

    def retry_after(self) -> int:
        return max(1, math.ceil(self.queue_timeout_s))

    async def acquire(self) -> _Lease:
        sem = self._semaphore()
        self.waiting += 1
        try:
            await asyncio.wait_for(sem.acquire(), timeout=self.queue_timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise ServiceError(503, f"all {self.max_concurrent} generation slots are busy; waited "
                                    f"{self.queue_timeout_s:g} s", code="busy",
                               headers={"Retry-After": str(self.retry_after())}) from None
        finally:
            self.waiting -= 1
        self.in_use += 1
        return _Lease(self, asyncio.get_running_loop())

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run the blocking `fn` in a worker thread inside a slot. TimeoutError after `timeout` seconds."""
        lease = await self.acquire()

        def work() -> T:
            if not lease.start():
                raise RuntimeError("cancelled before it started")
            try:
                return fn(*args, **kwargs)
            finally:
                lease.release_from_thread()

        timeout = self.run_timeout_s if timeout is None else timeout
        try:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        finally:
            lease.cancel_if_pending()

    async def iterate(self, make_iter: Callable[[], Iterator[T]], *, lease: "_Lease | None" = None,
                      deadline_s: float | None = None):
        """Iterate a blocking iterator, one `next()` per worker-thread call, yielding items on the loop.

        `lease` (from `acquire`, or None for work that needs no slot) is released when the iteration ends,
        however it ends. TimeoutError when the whole iteration passes `deadline_s` (default: run timeout).
        """
        if lease is not None:
            lease.start()
        sentinel = object()
        it: Iterator[T] | None = None
        deadline_s = self.run_timeout_s if deadline_s is None else deadline_s
        deadline = None if deadline_s is None else time.monotonic() + deadline_s

        def step():
            nonlocal it
            if it is None:
                it = iter(make_iter())
            return next(it, sentinel)

        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("stream deadline passed")
                with anyio.fail_after(remaining):
                    item = await anyio.to_thread.run_sync(step)
                if item is sentinel:
                    return
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    await anyio.to_thread.run_sync(close)
                except Exception:  # noqa: BLE001 - closing a generator after a client went away
                    pass
            if lease is not None:
                lease.release()
