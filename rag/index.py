"""The published generation, followed as it changes.

`IndexHandle.current()` returns the Generation named by the pointer, re-reading the pointer at most every
`poll_s`. A caller keeps the object it got for the whole request: the swap only changes what the *next*
request gets, and the old generation stays open until its last user drops it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from rag import store
from rag.config import Settings
from rag.generation import Generation

log = logging.getLogger(__name__)


class NoGeneration(LookupError):
    """No index has been published yet under this data home."""


class IndexHandle:
    def __init__(self, settings: Settings, poll_s: float | None = None):
        self.settings = settings
        self.home = settings.home_path
        self.poll_s = settings.service.generation_poll_s if poll_s is None else poll_s
        self._gen: Generation | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.swaps = 0

    def _open(self, gen_id: str) -> Generation:
        path = store.generation_dir(self.home, gen_id)
        return Generation(path, self.settings.models_dir, hnsw_ef_search=self.settings.index.hnsw_ef_search,
                          ivf_nprobe=self.settings.index.ivf_nprobe, search_threads=self.settings.index.search_threads)

    def current(self) -> Generation:
        now = time.monotonic()
        gen = self._gen
        if gen is not None and now - self._checked < self.poll_s:
            return gen
        with self._lock:
            gen = self._gen
            if gen is not None and time.monotonic() - self._checked < self.poll_s:
                return gen
            self._checked = time.monotonic()
            gen_id = store.read_pointer(self.home)
            if gen_id is None:
                raise NoGeneration(f"no index generation is published under {self.home}; "
                                   "run `rag index build SOURCE` first")
            if gen is not None and gen.id == gen_id:
                return gen
            try:
                new = self._open(gen_id)
                _ = new.embedder  # load (or reuse) the embedder before anyone is routed here
            except Exception:
                if gen is not None:
                    log.exception("could not open published generation %s; still serving %s", gen_id, gen.id)
                    return gen
                raise
            if gen is not None:
                log.info("switched from generation %s to %s", gen.id, gen_id)
                self.swaps += 1
            self._gen = new
            return new

    def refresh(self) -> Generation:
        self._checked = 0.0
        return self.current()

    @property
    def loaded_id(self) -> str | None:
        return self._gen.id if self._gen is not None else None

    @staticmethod
    def exists(home: Path) -> bool:
        return store.read_pointer(home) is not None
