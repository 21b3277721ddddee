"""Query vectors under concurrency (rag.query_vectors) with the real MiniLM: concurrent callers share encoder
calls and each gets its own query's vector; recent vectors are reused per (encoder identity, text) only."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rag.models.embedders import load_embedder
from rag.query_vectors import QueryBatcher, QueryVectorCache

QUERIES = [f"question number {i} about {topic}" for i, topic in
           enumerate(["mortgages", "insulin", "photosynthesis", "index funds", "vaccines", "fractions", "taxes",
                      "asthma"])]


@pytest.fixture(scope="module")
def minilm(models_dir):
    return load_embedder("minilm", models_dir)


def test_concurrent_queries_share_one_encoder_call_and_get_their_own_vectors(minilm):
    calls: list[list[str]] = []
    batcher: QueryBatcher

    def embed(texts):
        if not calls:  # hold the first call until every other caller is queued behind it
            deadline = time.monotonic() + 10
            while len(batcher._pending) < len(QUERIES) - 1 and time.monotonic() < deadline:
                time.sleep(0.005)
        calls.append(list(texts))
        return minilm.embed_queries(texts)

    batcher = QueryBatcher(minilm.identity, embed, QueryVectorCache(100), window_ms=0, max_batch=32)
    out: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda q=q: out.__setitem__(q, batcher.vector(q))) for q in QUERIES]
    threads[0].start()
    while not calls and not batcher._busy:
        time.sleep(0.001)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(30)
    assert [len(c) for c in calls] == [1, len(QUERIES) - 1]
    alone = minilm.embed_queries(QUERIES)
    for i, q in enumerate(QUERIES):
        assert float(out[q] @ alone[i]) > 0.9999  # its own vector, not a neighbour's row


def test_recent_vectors_are_reused_by_identity_and_text_only(minilm):
    cache = QueryVectorCache(2)
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return minilm.embed_queries(texts)

    a = QueryBatcher("encoder-a", embed, cache)
    b = QueryBatcher("encoder-b", embed, cache)
    first = a.vector(QUERIES[0])
    assert a.vector(QUERIES[0]) is first and len(calls) == 1
    b.vector(QUERIES[0])  # another encoder identity never gets a's vector
    assert len(calls) == 2
    a.vector(QUERIES[1])
    a.vector(QUERIES[2])  # the LRU holds two: QUERIES[0] under encoder-a is gone
    a.vector(QUERIES[0])
    assert len(calls) == 5
    with pytest.raises(ValueError):
        first[0] = 1.0  # shared between requests: read-only


def test_a_lone_caller_never_waits_for_the_window(minilm):
    batcher = QueryBatcher(minilm.identity, minilm.embed_queries, QueryVectorCache(0), window_ms=60_000)
    started = time.monotonic()
    for q in QUERIES[:3]:
        batcher.vector(q)
    assert time.monotonic() - started < 30  # one window alone would be 60 s
    assert batcher.batches == 3


def test_an_encoder_error_reaches_every_caller_of_its_batch(minilm):
    def embed(texts):
        raise RuntimeError("encoder down")

    batcher = QueryBatcher(minilm.identity, embed, QueryVectorCache(10))
    with pytest.raises(RuntimeError, match="encoder down"):
        batcher.vector("anything")
