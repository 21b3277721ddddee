"""`Engine`: the library's one core object. The CLI and the HTTP service are thin layers over it.

It owns the settings, the handle on the published generation (hot-swapped), the retriever, and lazily the
answerer, summarizer and recommender. Every call resolves the generation once and runs entirely on it.
"""

from __future__ import annotations

import threading
from functools import cached_property

from rag.config import Settings, load_settings
from rag.snapshot import Snapshot
from rag.published import PublishedSnapshot
from rag.retriever import Retriever, SearchResult
from rag.types import Filters


class Engine:
    def __init__(self, settings: Settings | None = None, index: PublishedSnapshot | None = None):
        self.settings = settings or load_settings()
        self.published = index or PublishedSnapshot(self.settings)
        self.retriever = Retriever(self.settings.retrieval)
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        return self.published.current()

    # -- retrieval --------------------------------------------------------------------------------------
    def search(self, query: str, *, mode: str = "hybrid", filters: Filters | None = None, top_k: int | None = None,
               rerank: bool | None = None, mmr_lambda: float | None = None, snapshot: Snapshot | None = None
               ) -> SearchResult:
        snapshot = snapshot or self.snapshot()
        return self.retriever.search(snapshot, query, mode=mode, filters=filters, top_k=top_k, rerank=rerank,
                                     mmr_lambda=mmr_lambda)

    # -- answers and summaries (rag.answering, rag.summarize) -------------------------------------------
    @cached_property
    def answerer(self):
        from rag.answering import Answerer

        return Answerer(self.settings, self.retriever)

    @cached_property
    def summarizer(self):
        from rag.summarize import Summarizer

        return Summarizer(self.settings, self.retriever, self.answerer.generators)

    # -- recommendations (rag.recommend) ----------------------------------------------------------------
    @cached_property
    def state(self):
        from rag.state import StateDB

        return StateDB(self.settings.state_db)

    @cached_property
    def recommender(self):
        from rag.recommend import Recommender

        return Recommender(self.settings, self.state)

    def blurb_writer(self, snapshot: Snapshot | None = None, backend: str | None = None):
        """The explainer for `explain=true`: grounded one-sentence blurbs from the generator `backend`
        (default: the configured one)."""
        from rag.recommend.blurbs import BlurbWriter

        snapshot = snapshot or self.snapshot()
        return BlurbWriter(self.answerer.generators, embedder=snapshot.embedder, backend=backend)

    def recommend(self, user_id: str, *, explain: bool = False, explain_backend: str | None = None,
                  snapshot: Snapshot | None = None, **options):
        snapshot = snapshot or self.snapshot()
        explainer = self.blurb_writer(snapshot, explain_backend) if explain else None
        return self.recommender.recommend(snapshot, user_id, explain=explain, explainer=explainer, **options)
