"""`PublishedSnapshot`: the snapshot the `CURRENT` pointer names, followed as it changes.

`PublishedSnapshot.current()` returns the Snapshot named by the pointer, re-reading the pointer at most every
`poll_s`. A caller keeps the object it got for the whole request: the swap only changes what the *next*
request gets, and the old snapshot stays open until its last user drops it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from rag import snapshot_files
from rag.config import Settings
from rag.errors import Unavailable
from rag.snapshot import Snapshot

log = logging.getLogger(__name__)


class NoSnapshot(Unavailable):
    """No index has been published yet under this data home."""

    code = "no_index"

    def __init__(self, message: str):
        super().__init__(message, hint="build one: `rag index build SOURCE`, or POST /v1/admin/index/rebuild",
                         retry_after_s=30)


class PublishedSnapshot:
    def __init__(self, settings: Settings, poll_s: float | None = None):
        self.settings = settings
        self.home = settings.home_path
        self.poll_s = settings.service.generation_poll_s if poll_s is None else poll_s
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.swaps = 0

    def _open(self, snapshot_id: str) -> Snapshot:
        path = snapshot_files.snapshot_dir(self.home, snapshot_id)
        index = self.settings.index
        queries = self.settings.retrieval
        return Snapshot(path, self.settings.models_dir, hnsw_ef_search=index.hnsw_ef_search,
                        ivf_nprobe=index.ivf_nprobe, search_threads=index.search_threads,
                        query_window_ms=queries.query_batch_window_ms, query_batch_max=queries.query_batch_max,
                        query_cache_size=queries.query_cache_size)

    def current(self) -> Snapshot:
        now = time.monotonic()
        snapshot = self._snapshot
        if snapshot is not None and now - self._checked < self.poll_s:
            return snapshot
        with self._lock:
            snapshot = self._snapshot
            if snapshot is not None and time.monotonic() - self._checked < self.poll_s:
                return snapshot
            self._checked = time.monotonic()
            snapshot_id = snapshot_files.read_pointer(self.home)
            if snapshot_id is None:
                raise NoSnapshot(f"no index generation is published under {self.home}; "
                                   "run `rag index build SOURCE` first")
            if snapshot is not None and snapshot.id == snapshot_id:
                return snapshot
            try:
                new = self._open(snapshot_id)
                _ = new.embedder  # load (or reuse) the embedder before anyone is routed here
            except Exception:
                if snapshot is not None:
                    log.exception("could not open published generation %s; still serving %s", snapshot_id, snapshot.id)
                    return snapshot
                raise
            if snapshot is not None:
                log.info("switched from generation %s to %s", snapshot.id, snapshot_id)
                self.swaps += 1
            self._snapshot = new
            return new

    def refresh(self) -> Snapshot:
        self._checked = 0.0
        return self.current()

    @property
    def loaded(self) -> Snapshot | None:
        """The snapshot this process holds now (without checking the pointer), or None."""
        return self._snapshot

    @property
    def loaded_id(self) -> str | None:
        return self._snapshot.id if self._snapshot is not None else None

    @staticmethod
    def exists(home: Path) -> bool:
        return snapshot_files.read_pointer(home) is not None
