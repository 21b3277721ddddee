"""The generation policy's limit and clock: the one place that bounds text generation in a process.

- At most `max_concurrent` generations run at once. `reserve()` takes a slot, waiting up to `queue_timeout_s`;
  when none frees up it raises `GeneratorBusy` (a `rag.errors.Busy`: HTTP 503 with Retry-After).
- Each generation gets `timeout_s`. `run(fn)` calls `fn` in a worker thread inside a slot and waits that long
  for it; `stream(make_iter)` does the same for a token iterator (the whole iteration has `timeout_s`). Past it
  they raise `GeneratorTimeout`, a `GeneratorError`: the caller falls back to the extractive result and says so.
  The slot stays taken until the abandoned work really ends, so a timed-out generation never lets more run
  than configured.

A caller that must know before it starts (an HTTP stream answers 503 before its status line, not an error
event after it) reserves a `Lease` first and hands it to `run` or `stream`, which release it when they end.

The same clock reaches the backend: inside `run` and `stream` the work's thread sees `current_deadline()`, the
moment its caller stops waiting, so a backend that can stop early (the transformers backend's batch scheduler)
ends the abandoned work then and frees its slot, instead of decoding for nobody.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rag.errors import Busy

T = TypeVar("T")

_clock = threading.local()


def current_deadline() -> float | None:
    """The `time.monotonic()` by which the generation running in this thread must end (set inside `run` and
    `stream`), or None: outside them, or with no timeout."""
    return getattr(_clock, "deadline", None)


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


class GeneratorError(RuntimeError):
    """A backend could not produce text (model failed to load, server error, timeout)."""


class GeneratorTimeout(GeneratorError):
    def __init__(self, seconds: float | None):
        super().__init__(f"the generator timed out after {seconds:g} s")
        self.seconds = seconds


class GeneratorBusy(Busy):
    """Every generator slot stayed taken for the whole queue timeout."""


class Lease:
    """One slot, released exactly once: by the work that used it, or by whoever reserved it and gave up."""

    def __init__(self, slots: "GeneratorSlots"):
        self._slots = slots
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._slots._release()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a reserved stream that was never read (the client went away first)
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class GeneratorSlots:
    def __init__(self, max_concurrent: int, queue_timeout_s: float, timeout_s: float | None):
        self.max_concurrent = max(1, int(max_concurrent))
        self.queue_timeout_s = float(queue_timeout_s)
        self.timeout_s = timeout_s
        self.in_use = 0
        self.waiting = 0
        self._sem = threading.BoundedSemaphore(self.max_concurrent)
        self._count = threading.Lock()

    def reserve(self) -> Lease:
        with self._count:
            self.waiting += 1
        try:
            free = self._sem.acquire(timeout=self.queue_timeout_s)
        finally:
            with self._count:
                self.waiting -= 1
        if not free:
            raise GeneratorBusy(f"all {self.max_concurrent} generator slots are busy (waited "
                                f"{self.queue_timeout_s:.1f} s); retry later",
                                retry_after_s=max(1, math.ceil(self.queue_timeout_s)))
        with self._count:
            self.in_use += 1
        return Lease(self)

    def _release(self) -> None:
        with self._count:
            self.in_use -= 1
        self._sem.release()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a slot in the caller's own thread (no clock)."""
        with self.reserve():
            yield

    def run(self, fn: Callable[[], T], *, lease: Lease | None = None) -> T:
        lease = lease or self.reserve()
        box: dict = {}
        done = threading.Event()
        deadline = _deadline(self.timeout_s)

        def work() -> None:
            _clock.deadline = deadline
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e
            finally:
                lease.release()
                done.set()

        threading.Thread(target=work, name="generate", daemon=True).start()
        if not done.wait(self.timeout_s):
            raise GeneratorTimeout(self.timeout_s)
        if "error" in box:
            raise box["error"]
        return box["value"]

    def stream(self, make_iter: Callable[[], Iterator[T]], *, lease: Lease | None = None) -> Iterator[T]:
        lease = lease or self.reserve()
        items: queue.Queue = queue.Queue()
        stop = threading.Event()
        deadline = _deadline(self.timeout_s)

        def produce() -> None:
            _clock.deadline = deadline
            try:
                for item in make_iter():
                    if stop.is_set():
                        break
                    items.put((True, item))
                items.put((False, None))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                items.put((False, e))
            finally:
                lease.release()

        threading.Thread(target=produce, name="generate-stream", daemon=True).start()
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    more, item = items.get(timeout=wait)
                except queue.Empty:
                    raise GeneratorTimeout(self.timeout_s) from None
                if not more:
                    if item is not None:
                        raise item
                    return
                yield item
        finally:
            stop.set()
