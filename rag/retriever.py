"""Hybrid retrieval: dense (FAISS) and keyword (BM25) legs under the same filters, fused (standardized scores by
default, with a third leg for the question's phrases: BM25 over adjacent term pairs; Reciprocal Rank Fusion on
request), the fused candidates re-ranked by their neighbourhood (the cluster hypothesis), optionally re-ranked by a
cross-encoder and diversified with MMR, at most N chunks per document."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.config import RetrievalSettings
from rag.errors import InvalidInput
from rag.grounding import embedder_fits
from rag.snapshot import Snapshot
from rag.text import detect_language
from rag.types import SEARCH_MODES, Filters, Hit

log = logging.getLogger(__name__)

MODES = SEARCH_MODES
ABSENT_GAP = 0.5  # in standard deviations; 0.0-1.0 all beat both legs on the three BEIR sets
# Neighbourhood re-ranking (neighbourhood_rerank): the first NEIGHBOURHOOD_DEPTH fused candidates are re-scored,
# with neighbours among the first NEIGHBOURHOOD_MAX (3 legs x 100; re-scoring all 300 gave the same nDCG@10 within
# 0.0005 at three times the cost); the centroid is of the best CENTROID_SIZE; the best passages of the first
# KEEP_HEAD_DOCS documents keep their places (1-3 measured: 2 kept the most of NFCorpus' gain for the least of
# TAT-QA's loss).
NEIGHBOURHOOD_DEPTH = 100
NEIGHBOURHOOD_MAX = 300
CENTROID_SIZE = 3
KEEP_HEAD_DOCS = 2
HEAD_STEP = 1e-3


@dataclass
class SearchResult:
    query: str
    mode: str
    hits: list[Hit]
    generation_id: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    reranked: bool = False
    # Best dense cosine seen for the query under the filters: the abstention rule reads it.
    top_dense_score: float | None = None
    # The query's vector from the generation's embedder (dense and hybrid modes): answer selection reuses it.
    query_vector: np.ndarray | None = None


class Reranker:
    """A local cross-encoder, by configured path (none ships offline, so this is opt-in)."""

    def __init__(self, path: str):
        if not Path(path).expanduser().is_dir():
            raise FileNotFoundError(f"reranker model folder not found: {path}")
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(Path(path).expanduser()), local_files_only=True)
        self._lock = threading.Lock()

    def scores(self, query: str, passages: list[str]) -> list[float]:
        with self._lock:
            return [float(s) for s in self.model.predict([(query, p) for p in passages])]


def rrf(rankings: list[list[int]], k: int = 60) -> dict[int, float]:
    """Reciprocal Rank Fusion: robust to the legs' incomparable score scales (cosine vs BM25)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking):
            fused[row] = fused.get(row, 0.0) + 1.0 / (k + rank + 1)
    return fused


def zscore_fuse(legs: list[list[tuple[int, float]]], weights: list[float]) -> dict[int, float]:
    """Weighted sum of per-leg standardized scores. A row absent from a leg gets a value below that leg's
    weakest hit: not found there is weak evidence, not no evidence."""
    fused: dict[int, float] = {}
    normalized = []
    for leg in legs:
        if not leg:
            normalized.append(({}, 0.0))
            continue
        v = np.array([s for _, s in leg], dtype=np.float64)
        z = (v - v.mean()) / (v.std() or 1.0)
        # Absent sits half a standard deviation below the weakest hit, so a leg's last hit still counts for it.
        normalized.append(({row: float(x) for (row, _), x in zip(leg, z)}, float(z.min()) - ABSENT_GAP))
    rows = set().union(*(n for n, _ in normalized))
    for row in rows:
        fused[row] = sum(w * n.get(row, floor) for w, (n, floor) in zip(weights, normalized))
    return fused


def feedback_query(qvec: np.ndarray, evidence: np.ndarray, weight: float) -> np.ndarray:
    """Dense pseudo-relevance feedback (Rocchio with one document): the query moved toward the vector of the
    passage both legs ranked first, renormalized. It finds the passages that complete that one (QASC's second
    fact) which the query alone does not reach."""
    q = np.asarray(qvec, dtype=np.float32) + weight * np.asarray(evidence, dtype=np.float32)
    return q / (np.linalg.norm(q) or 1.0)


def neighbourhood_rerank(fused: list[tuple[int, float]], vectors: np.ndarray, *, weight: float, neighbours: int,
                         centroid_weight: float, keep_docs: list[int], depth: int) -> list[tuple[int, float]]:
    """The fused candidates (best first) re-scored by the company they keep: relevant passages resemble each
    other more than they resemble the rest (the cluster hypothesis), so each of the first `depth` candidates gains
    `weight` times the similarity-weighted mean fused score of its `neighbours` nearest fellow candidates (among
    those `vectors` covers), and `centroid_weight` times its standardized cosine to the centroid of the
    CENTROID_SIZE best. The candidates at `keep_docs` (indices into `fused`: the best of the first documents) keep
    their places at the head, their scores lifted just above the rest: the legs' agreement on the very top is the
    strongest evidence there is, and on a question with one answer the neighbourhood can only pull a look-alike
    past it.
    Candidates beyond `depth` follow in their fused order, below every re-scored one.

    `vectors` are the unit vectors of the first candidates of `fused`, in order: the pool neighbours are drawn
    from. Returns (row, score) best first."""
    n = len(vectors)
    r = min(depth, n)
    if r <= len(keep_docs) + 1:
        return fused
    base = np.array([sc for _, sc in fused[:n]], dtype=np.float64)
    vecs = np.asarray(vectors, dtype=np.float32)
    sims = vecs[:r] @ vecs.T
    sims[np.arange(r), np.arange(r)] = -np.inf  # a candidate is not its own neighbour
    k = min(max(neighbours, 1), n - 1)
    near = np.argpartition(sims, n - k, axis=1)[:, n - k:]
    w = np.maximum(np.take_along_axis(sims, near, axis=1), 0.0)
    support = (w * base[near]).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)
    centre = vecs[:CENTROID_SIZE].mean(axis=0)
    to_centre = vecs @ (centre / (np.linalg.norm(centre) or 1.0))
    to_centre = (to_centre - to_centre.mean()) / (to_centre.std() or 1.0)
    score = base[:r] + weight * support + centroid_weight * to_centre[:r]
    head = set(keep_docs)
    rest = sorted((i for i in range(r) if i not in head), key=lambda i: (-score[i], fused[i][0]))
    floor = float(score[rest[0]]) if rest else -np.inf
    lifted = []
    for i in reversed(keep_docs):  # from the last kept upward, each just above what follows it
        floor = max(float(score[i]), floor + HEAD_STEP)
        lifted.append((fused[i][0], floor))
    ranked = lifted[::-1] + [(fused[i][0], float(score[i])) for i in rest]
    lowest = ranked[-1][1]
    return ranked + [(row, min(sc, lowest)) for row, sc in fused[r:]]


def mmr_order(vectors: np.ndarray, relevance: np.ndarray, lam: float, k: int) -> list[int]:
    """Maximal Marginal Relevance over candidates: indices in pick order.

    Similarities are min-max scaled over the candidates' pairs: embedders differ in cosine range (MiniLM puts
    unrelated passages near 0, e5 near 0.75), and the trade-off `lam` should mean the same for every one."""
    chosen: list[int] = []
    rest = list(range(len(relevance)))
    sims = vectors @ vectors.T
    if len(sims) > 1:
        off = sims[~np.eye(len(sims), dtype=bool)]
        lo, hi = float(off.min()), float(off.max())
        sims = np.clip((sims - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(sims)
    while rest and len(chosen) < k:
        if chosen:
            penalty = sims[np.ix_(rest, chosen)].max(axis=1)
        else:
            penalty = np.zeros(len(rest))
        scores = lam * relevance[rest] - (1 - lam) * penalty
        best = rest[int(np.argmax(scores))]
        chosen.append(best)
        rest.remove(best)
    return chosen


class Retriever:
    def __init__(self, settings: RetrievalSettings):
        self.settings = settings
        self._reranker: Reranker | None = None
        self._reranker_lock = threading.Lock()

    @property
    def can_rerank(self) -> bool:
        return bool(self.settings.reranker)

    def reranker(self) -> Reranker:
        with self._reranker_lock:
            if self._reranker is None:
                if not self.settings.reranker:
                    raise InvalidInput("no reranker configured (set retrieval.reranker to a cross-encoder folder)",
                                       field="rerank")
                self._reranker = Reranker(self.settings.reranker)
            return self._reranker

    def search(self, snapshot: Snapshot, query: str, *, mode: str = "hybrid", filters: Filters | None = None,
               top_k: int | None = None, rerank: bool | None = None, mmr_lambda: float | None = None,
               max_per_doc: int | None = None, candidates: int | None = None,
               neighbourhood: bool = True) -> SearchResult:
        """`neighbourhood=False` ranks by the fused score alone (the neighbourhood re-ranking is a search for the
        documents on a topic; an answer wants the one passage that states a fact)."""
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}, not {mode!r}", field="mode")
        s = self.settings
        top_k = top_k or s.top_k
        n_cand = max(candidates or s.candidates, top_k)
        max_per_doc = s.max_per_doc if max_per_doc is None else max_per_doc
        rerank = self.can_rerank if rerank is None else rerank
        mmr_lambda = s.mmr_lambda if mmr_lambda is None else mmr_lambda
        timings: dict[str, float] = {}

        dense: list[tuple[int, float]] = []
        keyword: list[tuple[int, float]] = []
        qvec = None
        if mode in ("dense", "hybrid"):
            t = time.perf_counter()
            qvec = snapshot.embed_query(query)
            timings["embed_ms"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            dense = snapshot.dense(qvec, n_cand, filters)
            timings["dense_ms"] = (time.perf_counter() - t) * 1000
        phrases: list[tuple[int, float]] = []
        if mode in ("keyword", "hybrid"):
            t = time.perf_counter()
            keyword = snapshot.keyword(query, n_cand, filters)
            if mode == "hybrid" and s.fusion == "zscore" and s.phrase_weight:
                phrases = snapshot.keyword(query, n_cand, filters, pairs=True)
            timings["keyword_ms"] = (time.perf_counter() - t) * 1000
        top_dense = dense[0][1] if dense else None
        if mode == "hybrid" and s.feedback_weight and self._legs_agree(snapshot, dense, keyword):
            t = time.perf_counter()
            dense = snapshot.dense(feedback_query(qvec, snapshot.chunk_vector(dense[0][0]), s.feedback_weight),
                                   n_cand, filters)
            timings["feedback_ms"] = (time.perf_counter() - t) * 1000

        d_rank = {row: (i + 1, sc) for i, (row, sc) in enumerate(dense)}
        k_rank = {row: (i + 1, sc) for i, (row, sc) in enumerate(keyword)}
        if mode == "dense":
            order = [(row, sc) for row, sc in dense]
        elif mode == "keyword":
            order = [(row, sc) for row, sc in keyword]
        else:
            # An English-only embedder's cosines for, say, Chinese text are noise (MiniLM scores any two Chinese
            # texts ~0.55-0.65): then the keyword leg, segmented with jieba, ranks alone.
            keywords_only = bool(keyword) and not embedder_fits(snapshot.manifest.embedder, detect_language(query))
            if s.fusion == "rrf":
                legs = [[r for r, _ in keyword]] if keywords_only else [[r for r, _ in dense], [r for r, _ in keyword]]
                fused = rrf(legs, s.rrf_k)
            else:
                w = 0.0 if keywords_only else s.fusion_dense_weight
                # The phrase leg joins only when the query has a pair that some passage holds: a leg with no hits
                # would put every passage at its floor and change nothing but the scale.
                legs, weights = [dense, keyword], [w, 1.0 - w]
                if phrases:
                    legs, weights = legs + [phrases], weights + [s.phrase_weight]
                fused = zscore_fuse(legs, weights)
            order = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
            if neighbourhood and s.fusion == "zscore" and (s.neighbour_weight or s.centroid_weight) \
                    and not keywords_only:
                t = time.perf_counter()
                order = self._neighbourhood(snapshot, order)
                timings["neighbourhood_ms"] = (time.perf_counter() - t) * 1000

        # Keep enough candidates for rerank / MMR / per-document capping to choose from.
        pool_size = max(top_k, s.rerank_top if rerank else 0, top_k * 4 if (mmr_lambda or max_per_doc) else 0)
        if max_per_doc == 1 and not rerank:
            # Documents, not passages: only each document's best passage is fetched, however many it has here.
            pool = [order[i] for i in self._firsts_of_documents(snapshot, order, pool_size)]
        else:
            pool = order[:pool_size]
        t = time.perf_counter()
        info = snapshot.chunks([row for row, _ in pool])
        timings["fetch_ms"] = (time.perf_counter() - t) * 1000
        hits = [self._hit(info[row], score, d_rank.get(row), k_rank.get(row)) for row, score in pool if row in info]

        did_rerank = False
        if rerank and hits:
            t = time.perf_counter()
            head = hits[: s.rerank_top]
            for h, sc in zip(head, self.reranker().scores(query, [h.text for h in head])):
                h.rerank_score = sc
                h.score = sc
            hits = sorted(head, key=lambda h: -h.score) + hits[s.rerank_top:]
            did_rerank = True
            timings["rerank_ms"] = (time.perf_counter() - t) * 1000

        if max_per_doc:
            per_doc: dict[str, int] = {}
            capped = []
            for h in hits:
                per_doc[h.doc_id] = per_doc.get(h.doc_id, 0) + 1
                if per_doc[h.doc_id] <= max_per_doc:
                    capped.append(h)
            hits = capped

        if mmr_lambda and len(hits) > top_k:
            vecs = np.stack([snapshot.chunk_vector(h.row) for h in hits])
            rel = np.linspace(1.0, 0.0, num=len(hits))  # rank-based relevance: comparable across modes
            hits = [hits[i] for i in mmr_order(vecs, rel, mmr_lambda, top_k)]

        return SearchResult(query=query, mode=mode, hits=hits[:top_k], generation_id=snapshot.id, timings_ms=timings,
                            reranked=did_rerank, top_dense_score=top_dense,
                            query_vector=qvec)

    def _neighbourhood(self, snapshot: Snapshot, order: list[tuple[int, float]]) -> list[tuple[int, float]]:
        s = self.settings
        if len(order) <= KEEP_HEAD_DOCS + 1:  # nothing to reorder below the head (an empty result included)
            return order
        pool = np.array([row for row, _ in order[:NEIGHBOURHOOD_MAX]])
        return neighbourhood_rerank(order, np.asarray(snapshot.vectors[pool]), weight=s.neighbour_weight,
                                    neighbours=s.neighbours, centroid_weight=s.centroid_weight,
                                    keep_docs=self._firsts_of_documents(snapshot, order, KEEP_HEAD_DOCS),
                                    depth=NEIGHBOURHOOD_DEPTH)

    @staticmethod
    def _firsts_of_documents(snapshot: Snapshot, order: list[tuple[int, float]], n: int) -> list[int]:
        """Indices into `order` of the first (best) passage of each of its first `n` documents."""
        seen: set[int] = set()
        out = []
        for i, (row, _) in enumerate(order):
            doc = int(snapshot.chunk_doc_rows[row])
            if doc not in seen:
                seen.add(doc)
                out.append(i)
                if len(out) == n:
                    break
        return out

    @staticmethod
    def _legs_agree(snapshot: Snapshot, dense: list[tuple[int, float]], keyword: list[tuple[int, float]]) -> bool:
        """Both legs put the same document first: then that document is very likely relevant, and feedback from
        it is safe (on a disagreement it as often drags the ranking toward a wrong document)."""
        return bool(dense and keyword) and \
            snapshot.chunk_doc_rows[dense[0][0]] == snapshot.chunk_doc_rows[keyword[0][0]]

    @staticmethod
    def _hit(c: dict, score: float, d: tuple[int, float] | None, k: tuple[int, float] | None) -> Hit:
        return Hit(row=c["row"], chunk_id=c["chunk_id"], doc_id=c["doc_id"], title=c["title"] or "",
                   text=c["text"], score=float(score), heading_path=list(c["heading_path"] or []),
                   metadata={"domain": c["domain"], "tags": list(c["tags"] or []), "language": c["language"],
                             "audience": c["audience"], "date": c["date"], "source": c["source"],
                             "kind": c["kind"], "ordinal": c["ordinal"]},
                   dense_rank=d[0] if d else None, dense_score=d[1] if d else None,
                   keyword_rank=k[0] if k else None, keyword_score=k[1] if k else None)
