"""`Snapshot`: one index generation, opened read-only: the one object retrieval reads from.

In code an index generation is a *snapshot* (text generation is the generators' business); on disk and on the
wire it keeps its name: `generations/<id>/`, `generation_id`, `X-Generation-Id`.

Everything a request needs (vectors, keyword postings, chunk text, the embedder that made the vectors) hangs
off one `Snapshot`, so a request that grabbed it runs entirely on that snapshot even if another one is
published meanwhile.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import duckdb
import faiss
import numpy as np

from rag import text as textmod
from rag.errors import Unavailable
from rag.models.embedders import Embedder, load_embedder
from rag.query_vectors import batcher_for
from rag.snapshot_files import DOC_VECTORS_FILE, FAISS_FILE, META_DB, VECTORS_FILE, Manifest, read_manifest
from rag.types import Filters

# BM25 parameters, chosen on the three BEIR dev sets (bench/vs_txtai.py; README, Retrieval): term frequency
# saturates early (k1 0.3) because chunks are short and TAT-QA's tables repeat a year or label in every row; with
# Lucene's k1 1.2 hybrid nDCG@10 was 0.02 lower on TAT-QA, 0.003 lower on QASC, 0.003 higher on NFCorpus.
# Applied when a snapshot opens (the postings store raw term frequencies): no rebuild needed.
BM25_K1 = 0.3
BM25_B = 0.75
# Below this many allowed rows, exact search over the subset beats asking an ANN index to skip the rest.
EXACT_SUBSET_MAX = 20_000
# Chunk rows (text and document metadata) kept in memory once read: a search's DuckDB fetch was its largest
# cost after the encoder (4 ms of 36 in-process on data/). ~1-2 KB a row.
CHUNK_CACHE_ROWS = 20_000


class EmbedderMismatch(Unavailable):
    """The snapshot's embedder now resolves to other weights: its vectors cannot be queried; rebuild."""


class _Lru:
    """A bounded, thread-safe map that forgets the least recently used entry (per-filter row sets, selectors)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def top_scored(scores: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(row, score) of the `k` best of `rows` by `scores`, best first, ties by row: a partial sort, not a full one."""
    kk = min(k, len(rows))
    if kk <= 0:
        return []
    top = rows[np.argpartition(-scores[rows], kk - 1)[:kk]]
    top = top[np.lexsort((top, -scores[top]))]
    return [(int(r), float(scores[r])) for r in top]


def filter_sql(filters: Filters | None, alias: str = "c") -> tuple[str, list[Any]]:
    """SQL predicate over the denormalized filter columns of `chunks` (or `documents`)."""
    if filters is None or filters.is_empty():
        return "TRUE", []
    conditions = [
        *((f"{alias}.{col} IN (SELECT unnest(?::VARCHAR[]))", getattr(filters, name))
          for col, name in (("domain", "domain"), ("language", "language"), ("audience", "audience"),
                            ("doc_id", "doc_ids"))),
        (f"list_has_any({alias}.tags, ?::VARCHAR[])", filters.tags),
        (f"{alias}.date >= ?::DATE", filters.date_from),
        (f"{alias}.date <= ?::DATE", filters.date_to),
    ]
    given = [(sql, value) for sql, value in conditions if value]
    if filters.access is not None:  # rag.access: public documents, or one of the caller's groups
        given.append((f"(len({alias}.access) = 0 OR list_has_any({alias}.access, ?::VARCHAR[]))",
                      list(filters.access)))
    return " AND ".join(sql for sql, _ in given), [value for _, value in given]


class Snapshot:
    def __init__(self, path: Path, models_dir: Path, *, hnsw_ef_search: int = 96, ivf_nprobe: int = 16,
                 search_threads: int = 0, embedder: Embedder | None = None, query_window_ms: float = 0.0,
                 query_batch_max: int = 32, query_cache_size: int = 0):
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        # Term pairs are looked up only where the keyword index holds them (generations since KEYWORD_TERMS).
        self.holds_pairs = self.manifest.keyword_terms == textmod.KEYWORD_TERMS
        self.models_dir = Path(models_dir)
        self._con = duckdb.connect(str(self.path / META_DB), read_only=True)
        self.faiss_index = faiss.read_index(str(self.path / FAISS_FILE))
        self.vectors = np.load(self.path / VECTORS_FILE, mmap_mode="r")
        self.doc_vectors = np.load(self.path / DOC_VECTORS_FILE, mmap_mode="r")
        self.hnsw_ef_search = hnsw_ef_search
        self.ivf_nprobe = ivf_nprobe
        self.search_threads = search_threads
        self._embedder = embedder
        self._query_batching = {"window_ms": query_window_ms, "max_batch": query_batch_max,
                                "cache_size": query_cache_size}
        self._lock = threading.Lock()
        self._allowed_cache = _Lru(256)
        self._selector_cache = _Lru(64)
        self._chunk_cache = _Lru(CHUNK_CACHE_ROWS)
        stats = self.sql("SELECT n, avgdl FROM kw_stats").fetchone()
        self.kw_n, self.kw_avgdl = (int(stats[0]), float(stats[1])) if stats else (0, 1.0)
        self.doc_ids: list[str] = [r[0] for r in self.sql("SELECT doc_id FROM documents ORDER BY doc_row").fetchall()]
        self.doc_row_of: dict[str, int] = {d: i for i, d in enumerate(self.doc_ids)}
        # Each chunk row's document row (4 bytes a chunk): retrieval compares the legs' best documents with it.
        self.chunk_doc_rows: np.ndarray = np.asarray(self.sql(
            "SELECT d.doc_row FROM chunks c JOIN documents d USING (doc_id) ORDER BY c.row").fetchnumpy()["doc_row"],
            dtype=np.int32)
        self.doc_access: list[tuple[str, ...]] | None = self._doc_access()
        self._label_sets = {labels for labels in self.doc_access or () if labels}  # the distinct ones: few
        self._kw = _KeywordIndex(self)

    # -- identity ---------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def embedder(self) -> Embedder:
        """The generation's own embedder: a query is never embedded into another model's vector space."""
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    emb = load_embedder(self.manifest.embedder.spec, self.models_dir, self.manifest.embedder.backend)
                    if emb.identity != self.manifest.embedder.identity:
                        raise EmbedderMismatch(
                            f"generation {self.id} was built with {self.manifest.embedder.identity} but "
                            f"{self.manifest.embedder.spec!r} now resolves to {emb.identity}; rebuild the index")
                    self._embedder = emb
        return self._embedder

    def sql(self, query: str, params: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        # A cursor per call: DuckDB connections are not safe to share between threads, cursors are cheap.
        cur = self._con.cursor()
        return cur.execute(query, params or [])

    def close(self) -> None:
        try:
            self._con.close()
        except duckdb.Error:
            pass

    # -- access labels (rag.access) ----------------------------------------------------------------------
    def _doc_access(self) -> list[tuple[str, ...]] | None:
        """Each document's access groups by doc row; None when no document has any (or the generation predates
        labels): then every visibility sees everything and no query pays for the check."""
        cols = {r[0] for r in self.sql("SELECT column_name FROM information_schema.columns "
                                       "WHERE table_name = 'documents'").fetchall()}
        if "access" not in cols:
            return None
        labels = [tuple(r[0] or ()) for r in self.sql("SELECT access FROM documents ORDER BY doc_row").fetchall()]
        return labels if any(labels) else None

    def _sees_all(self, groups: tuple[str, ...]) -> bool:
        return self.doc_access is None or ("*" in groups) or all(
            not set(labels).isdisjoint(groups) for labels in self._label_sets)

    def visible_doc_rows(self, groups: tuple[str, ...] | None) -> np.ndarray | None:
        """Doc rows a caller with these groups (Filters.access) may see, sorted; None = all of them."""
        if groups is None or self._sees_all(groups):
            return None
        g = set(groups)
        return np.asarray([i for i, labels in enumerate(self.doc_access) if not labels or not g.isdisjoint(labels)],
                          dtype=np.int64)

    def visible_counts(self, groups: tuple[str, ...] | None) -> tuple[int, int]:
        """(documents, chunks) a caller with these groups sees: what an unauthenticated route may report without
        telling how much is kept from it."""
        docs = self.visible_doc_rows(groups)
        if docs is None:
            return self.manifest.counts.documents, self.manifest.counts.chunks
        chunks = self.allowed_rows(Filters(access=groups))
        return len(docs), (self.manifest.counts.chunks if chunks is None else len(chunks))

    def term_idf(self, terms, filters: Filters | None = None) -> tuple[dict[str, float], int]:
        """(BM25 idf of each of `terms` that a visible chunk holds, how many chunks are visible): with the
        visible chunks' statistics for a restricted caller, as the keyword leg scores."""
        visible = self._visible(filters)
        if visible is None:
            return {t: self._kw.slices[t][2] for t in terms if t in self._kw.slices}, self.kw_n
        out = {}
        for t in terms:
            if t in self._kw.slices:
                a, b, _ = self._kw.slices[t]
                df = int(visible.mask[self._kw.rows[a:b]].sum())
                if df:
                    out[t] = bm25_idf(visible.n, df)
        return out, visible.n

    def _visible(self, filters: Filters | None) -> "_VisibleChunks | None":
        """The keyword statistics of the chunks the caller may see (the access part of `filters` only: the
        metadata filters are the caller's own choice, not a secret), or None when it sees every chunk."""
        filters = self._effective(filters)
        if filters is None or filters.access is None:
            return None
        key = ("visible",) + tuple(filters.access)
        hit = self._allowed_cache.get(key)
        if hit is None:
            hit = self._allowed_cache.put(key, self._kw.visible(self.allowed_rows(Filters(access=filters.access))))
        return hit

    def doc_visible(self, doc_id: str, groups: tuple[str, ...] | None) -> bool:
        """Whether the document exists and a caller with these groups may see it."""
        row = self.doc_row_of.get(doc_id)
        if row is None:
            return False
        if groups is None or self.doc_access is None or "*" in groups:
            return True
        labels = self.doc_access[row]
        return not labels or not set(labels).isdisjoint(groups)

    def _effective(self, filters: Filters | None) -> Filters | None:
        """`filters` without an access restriction that lets everything through on this generation."""
        if filters is not None and filters.access is not None and self._sees_all(filters.access):
            return dataclasses.replace(filters, access=None)
        return filters

    # -- filters ----------------------------------------------------------------------------------------
    def allowed_rows(self, filters: Filters | None) -> np.ndarray | None:
        """Sorted chunk rows that pass `filters`; None means every row."""
        filters = self._effective(filters)
        if filters is None or filters.is_empty():
            return None
        key = filters.key()
        hit = self._allowed_cache.get(key)
        if hit is not None:
            return hit
        where, params = filter_sql(filters)
        rows = self.sql(f"SELECT row FROM chunks c WHERE {where} ORDER BY row", params).fetchnumpy()["row"]
        return self._allowed_cache.put(key, np.asarray(rows, dtype=np.int64))

    # -- legs -------------------------------------------------------------------------------------------
    def embed_query(self, query: str) -> np.ndarray:
        # Shared with concurrent requests and remembered by (encoder identity, text): rag.query_vectors.
        return batcher_for(self.embedder, **self._query_batching).vector(query)

    def dense(self, qvec: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        """(row, cosine) best first; the filter restricts the search itself, not its output."""
        allowed = self.allowed_rows(filters)
        q = np.ascontiguousarray(qvec, dtype=np.float32).reshape(1, -1)
        if allowed is not None:
            if len(allowed) == 0:
                return []
            if len(allowed) <= EXACT_SUBSET_MAX or self.faiss_index.ntotal <= EXACT_SUBSET_MAX:
                scores = np.asarray(self.vectors[allowed]) @ q[0]
                top = np.argsort(-scores)[:k]
                return [(int(allowed[i]), float(scores[i])) for i in top]
        params = self._search_params(self._selector(filters, allowed) if allowed is not None else None)
        k = min(k, self.faiss_index.ntotal)
        if k <= 0:
            return []
        if self.search_threads > 0:
            faiss.omp_set_num_threads(self.search_threads)  # OpenMP's setting is per calling thread
        scores, rows = (self.faiss_index.search(q, k, params=params) if params is not None
                        else self.faiss_index.search(q, k))
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def _selector(self, filters: Filters, allowed: np.ndarray):
        """A FAISS selector for the rows a filter lets through, cached with the filter. A bitmap (one bit per
        row: 125 KB at 1M chunks) answers each membership test with a shift; IDSelectorBatch would build a
        hash set of every allowed id on each query."""
        key = filters.key()
        sel = self._selector_cache.get(key)
        if sel is not None:
            return sel
        mask = np.zeros(self.faiss_index.ntotal, dtype=bool)
        mask[allowed] = True
        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(self.faiss_index.ntotal, faiss.swig_ptr(bits))
        sel._bits = bits  # the selector reads this buffer: keep it alive as long as the selector
        return self._selector_cache.put(key, sel)

    def _search_params(self, sel):
        kind = self.manifest.index_type
        if kind == "hnsw":
            p = faiss.SearchParametersHNSW()
            p.efSearch = self.hnsw_ef_search
        elif kind == "ivf":
            p = faiss.SearchParametersIVF()
            p.nprobe = self.ivf_nprobe
        else:
            if sel is None:
                return None
            p = faiss.SearchParameters()
        if sel is not None:
            p.sel = sel
            p._sel_ref = sel  # keep the selector alive as long as the parameters
        return p

    def keyword(self, query: str, k: int, filters: Filters | None = None, *, pairs: bool = False
                ) -> list[tuple[int, float]]:
        """BM25 over the generation's postings (held in memory, see _KeywordIndex), filters before the top k: of
        the query's terms, or with `pairs` of its adjacent term pairs (none in a generation that holds none)."""
        if pairs:
            query_terms = textmod.phrase_terms(query) if self.holds_pairs else []
        else:
            query_terms = textmod.tokenize(query)
        terms: dict[str, int] = {}
        for t in query_terms:
            terms[t] = terms.get(t, 0) + 1
        if not terms or k <= 0:
            return []
        scores, rows = self._kw.scores(terms, self._visible(filters))
        if rows is None:
            return []
        allowed = self.allowed_rows(filters)
        return top_scored(scores, np.flatnonzero(scores) if allowed is None else allowed[scores[allowed] > 0], k)

    # -- lookups ----------------------------------------------------------------------------------------
    def chunks(self, rows: list[int]) -> dict[int, dict[str, Any]]:
        """Each row's chunk with its document's metadata; recently read rows from memory (the snapshot is
        immutable), the others in one query."""
        out: dict[int, dict[str, Any]] = {}
        missing = []
        for r in rows:
            item = self._chunk_cache.get(int(r))
            if item is None:
                missing.append(int(r))
            else:
                out[int(r)] = dict(item)  # the caller's own copy: the cached row stays as read
        if not missing:
            return out
        for row, item in self._fetch_chunks(missing).items():
            self._chunk_cache.put(row, item)
            out[row] = dict(item)
        return out

    def _fetch_chunks(self, rows: list[int]) -> dict[int, dict[str, Any]]:
        cur = self.sql(
            """SELECT c.row, c.chunk_id, c.doc_id, c.ordinal, c.text, c.heading_path, c.kind, c.start_char,
                      c.end_char, d.title, d.domain, d.tags, d.audience, d.language, d.date, d.source
               FROM chunks c JOIN documents d USING (doc_id)
               WHERE c.row IN (SELECT unnest(string_split(?, ',')::INTEGER[]))""",
            [",".join(str(int(r)) for r in rows)])
        cols = [d[0] for d in cur.description]
        out = {}
        for rec in cur.fetchall():
            item = dict(zip(cols, rec))
            if item["date"] is not None:
                item["date"] = item["date"].isoformat()
            out[item["row"]] = item
        return out

    def document(self, doc_id: str, with_text: bool = True) -> dict[str, Any] | None:
        cols = "doc_id, doc_row, title, domain, tags, audience, language, date, source, format, metadata, " \
               "content_hash, n_chunks, n_chars" + (", text" if with_text else "")
        cur = self.sql(f"SELECT {cols} FROM documents WHERE doc_id = ?", [doc_id])
        rec = cur.fetchone()
        if rec is None:
            return None
        item = dict(zip([d[0] for d in cur.description], rec))
        item["access"] = list(self.doc_access[item["doc_row"]]) if self.doc_access is not None else []
        item["metadata"] = json.loads(item["metadata"] or "{}")
        if item["date"] is not None:
            item["date"] = item["date"].isoformat()
        return item

    def list_documents(self, *, domain: str | None = None, limit: int = 50, offset: int = 0,
                       access: tuple[str, ...] | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(how many documents, one page of their summaries by id); `access`: only what those groups see."""
        where, params = filter_sql(self._effective(Filters(domain=[domain] if domain else None, access=access)),
                                   alias="documents")
        where = "" if where == "TRUE" else f"WHERE {where}"
        total = int(self.sql(f"SELECT count(*) FROM documents {where}", params).fetchone()[0])
        cur = self.sql(f"SELECT doc_id, title, domain, tags, audience, language, date, n_chunks, n_chars "
                       f"FROM documents {where} ORDER BY doc_id LIMIT ? OFFSET ?", [*params, limit, offset])
        rows = []
        for rec in cur.fetchall():
            d = dict(zip([c[0] for c in cur.description], rec))
            d["date"] = d["date"].isoformat() if d["date"] is not None else None
            d["tags"] = list(d["tags"] or [])
            d["title"] = d["title"] or ""
            rows.append(d)
        return total, rows

    def document_chunks(self, doc_id: str) -> list[dict[str, Any]]:
        rows = [r[0] for r in self.sql("SELECT row FROM chunks WHERE doc_id = ? ORDER BY ordinal", [doc_id]).fetchall()]
        by_row = self.chunks(rows)
        return [by_row[r] for r in rows]

    def chunk_vector(self, row: int) -> np.ndarray:
        return np.asarray(self.vectors[row])

    def doc_vector(self, doc_id: str) -> np.ndarray | None:
        i = self.doc_row_of.get(doc_id)
        return None if i is None else np.asarray(self.doc_vectors[i])


def bm25_idf(n: int, df: int) -> float:
    """BM25's idf of a term that `df` of `n` chunks hold, as the writer stores it (indexer/writer.py)."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


@dataclasses.dataclass(frozen=True)
class _VisibleChunks:
    """What a restricted caller's keyword scores are computed over: its visible chunk rows (a mask), how many,
    and each row's BM25 length norm under their mean length."""

    mask: np.ndarray
    n: int
    norm: np.ndarray


class _KeywordIndex:
    """The generation's BM25 postings as in-memory CSR arrays: one slice of chunk rows per term, with the BM25
    weight idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * n_terms / avgdl)) precomputed (it depends only on the
    generation). A query is a few slices, one bincount and a partial sort: no per-query SQL, joins or scans.

    Memory: 12 bytes per posting (int32 row + float64 weight): ~104 MB at 100k chunks on the eval corpora with
    term pairs (~45 MB without them; ~450 MB at 1M without). float32 weights would halve that at ~1e-7 relative
    score noise."""

    def __init__(self, snapshot: "Snapshot"):
        terms = snapshot.sql("SELECT term, df, idf FROM terms ORDER BY term").fetchnumpy()
        df = np.asarray(terms["df"], dtype=np.int64)
        ends = np.cumsum(df)
        # The writer stores postings ORDER BY term, row and DuckDB scans in insertion order, so a plain scan is
        # already in CSR order (no sort at open); checked below, with the sorted query as the fallback.
        post = snapshot.sql("SELECT row, tf FROM postings").fetchnumpy()
        rows = np.asarray(post["row"], dtype=np.int32)
        if len(rows) != int(ends[-1] if len(ends) else 0):
            raise RuntimeError(f"generation {snapshot.id}: {len(rows)} postings but terms.df sums to {int(df.sum())}")
        step = np.diff(rows.astype(np.int64))
        step[ends[:-1] - 1] = 1  # a new term may restart at any row
        if len(step) and step.min() <= 0:
            post = snapshot.sql("SELECT row, tf FROM postings ORDER BY term, row").fetchnumpy()
            rows = np.asarray(post["row"], dtype=np.int32)
        n_terms = snapshot.sql("SELECT n_terms FROM chunks ORDER BY row").fetchnumpy()["n_terms"]
        self.rows = rows
        tf = np.asarray(post["tf"], dtype=np.float64)
        del post
        norm = 1 - BM25_B + BM25_B * np.asarray(n_terms, dtype=np.float64) / snapshot.kw_avgdl
        self.weights = np.repeat(np.asarray(terms["idf"], dtype=np.float64), df) * tf * (BM25_K1 + 1) \
            / (tf + BM25_K1 * norm[self.rows])
        # term -> (start, end) of its postings and its idf (a restricted caller's scores recompute from it)
        self.slices = {str(t): (int(e - d), int(e), float(i)) for t, d, e, i in zip(terms["term"], df, ends,
                                                                                   terms["idf"])}
        self.n_terms = np.asarray(n_terms, dtype=np.float64)
        self.norm = norm
        self.n = len(n_terms)

    def visible(self, rows: np.ndarray) -> "_VisibleChunks":
        """The statistics of the chunk `rows` a restricted caller may see (Snapshot caches them per visibility)."""
        mask = np.zeros(self.n, dtype=bool)
        mask[rows] = True
        n_vis = int(mask.sum())
        avgdl = float(self.n_terms[mask].mean()) if n_vis else 1.0
        return _VisibleChunks(mask, n_vis, 1 - BM25_B + BM25_B * self.n_terms / (avgdl or 1.0))

    def scores(self, terms: dict[str, int], visible: "_VisibleChunks | None" = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """BM25 per chunk row. `visible` (rag.access): the collection statistics (N, each term's df, avgdl) are
        those of the visible chunks, so a score never depends on what a hidden document holds (with the
        generation's statistics, a term's score would tell how many hidden chunks contain it)."""
        parts = [(self.slices[t], q) for t, q in terms.items() if t in self.slices]
        if not parts:
            return np.zeros(0), None
        if visible is not None:
            return self._visible_scores(parts, visible)
        rows = np.concatenate([self.rows[a:b] for (a, b, _), _ in parts])
        w = np.concatenate([self.weights[a:b] * q for (a, b, _), q in parts])
        return np.bincount(rows, weights=w, minlength=self.n), rows

    def _visible_scores(self, parts, visible: "_VisibleChunks") -> tuple[np.ndarray, np.ndarray | None]:
        if visible.n == 0:
            return np.zeros(0), None
        k1 = BM25_K1
        all_rows, all_w = [], []
        for (a, b, idf), q in parts:
            r = self.rows[a:b]
            keep = visible.mask[r]
            r, w = r[keep], self.weights[a:b][keep]
            if not len(r):
                continue
            # The term frequency back from the stored weight (w = idf * tf * (k1 + 1) / (tf + k1 * norm)), then
            # the weight again with the visible statistics.
            nrm = self.norm[r]
            tf = w * k1 * nrm / (idf * (k1 + 1) - w)
            all_rows.append(r)
            all_w.append(q * bm25_idf(visible.n, len(r)) * tf * (k1 + 1) / (tf + k1 * visible.norm[r]))
        if not all_rows:
            return np.zeros(0), None
        rows = np.concatenate(all_rows)
        return np.bincount(rows, weights=np.concatenate(all_w), minlength=self.n), rows
