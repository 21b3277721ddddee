"""Query vectors for concurrent requests: recent ones remembered, new ones embedded together.

One encoder call for eight queries costs little more than for one on a CPU (the model's weights are read
once per call), so requests that arrive while the encoder is busy wait for it and then share one batch; each
gets its own row back. With `window_ms` > 0 the caller that starts a batch also waits up to that long for more
queries to join, but only after a batch of more than one query showed that requests overlap: a lone client
(c=1) never waits.

Vectors are remembered in an LRU keyed by (encoder identity, text): the identity names the weights and the
variant (rag.models.encoder_variants), so a vector is only ever reused for a generation made by the same one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class QueryVectorCache:
    """A bounded LRU of query vectors, shared by every embedder of the process."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            vec = self._items.get(key)
            if vec is not None:
                self._items.move_to_end(key)
            return vec

    def put(self, key: tuple[str, str], vec: np.ndarray) -> None:
        if self.size <= 0:
            return
        vec.setflags(write=False)  # shared between requests: nobody may change it in place
        with self._lock:
            self._items[key] = vec
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class _Slot:
    __slots__ = ("text", "vec", "error")

    def __init__(self, text: str):
        self.text = text
        self.vec: np.ndarray | None = None
        self.error: BaseException | None = None


class QueryBatcher:
    """Embeds the queries of concurrent callers of one encoder in shared batches."""

    def __init__(self, identity: str, embed: Callable[[list[str]], np.ndarray], cache: QueryVectorCache, *,
                 window_ms: float = 0.0, max_batch: int = 32):
        self.identity = identity
        self._embed = embed
        self.cache = cache
        self.window_s = max(0.0, window_ms) / 1000.0
        self.max_batch = max(1, max_batch)
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._busy = False
        self._overlapping = False  # the last batch held more than one query
        self.batches = 0  # encoder calls made (for benchmarks and tests)
        self.embedded = 0  # queries they held

    def vector(self, text: str) -> np.ndarray:
        key = (self.identity, text)
        vec = self.cache.get(key)
        if vec is not None:
            return vec
        slot = _Slot(text)
        with self._cond:
            self._pending.append(slot)
            while slot.vec is None and slot.error is None:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True  # this caller encodes the next batch
                try:
                    if self.window_s and self._overlapping:
                        deadline = time.monotonic() + self.window_s
                        while len(self._pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                            self._cond.wait(left)
                    batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                    self._cond.release()
                    try:
                        self._run(batch)
                    finally:
                        self._cond.acquire()
                    self._overlapping = len(batch) > 1
                finally:
                    self._busy = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.vec

    def _run(self, batch: list[_Slot]) -> None:
        texts = list(dict.fromkeys(s.text for s in batch))  # a text asked twice is embedded once
        try:
            vecs = np.asarray(self._embed(texts), dtype=np.float32)
        except BaseException as e:  # every caller in the batch sees the encoder's error, none hangs
            for s in batch:
                s.error = e
            return
        self.batches += 1
        self.embedded += len(texts)
        by_text = {}
        for t, v in zip(texts, vecs):
            by_text[t] = v = np.array(v)  # its own row: not a view that keeps the whole batch alive
            self.cache.put((self.identity, t), v)
        for s in batch:
            s.vec = by_text[s.text]


_CACHE = QueryVectorCache(0)
_batchers: dict[str, QueryBatcher] = {}
_registry_lock = threading.Lock()


def batcher_for(embedder, *, window_ms: float, max_batch: int, cache_size: int) -> QueryBatcher:
    """The process's batcher for this embedder (one per encoder identity, whichever snapshot asks)."""
    with _registry_lock:
        if cache_size > _CACHE.size:
            _CACHE.size = cache_size  # the largest configured size wins: one LRU serves every snapshot
        b = _batchers.get(embedder.identity)
        if b is None:
            b = _batchers[embedder.identity] = QueryBatcher(embedder.identity, embedder.embed_queries, _CACHE,
                                                            window_ms=window_ms, max_batch=max_batch)
        else:
            b.window_s, b.max_batch = max(0.0, window_ms) / 1000.0, max(1, max_batch)
        return b
