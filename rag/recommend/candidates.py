"""Candidate sources and the per-generation data they read.

- `CatalogView`: a generation's documents as arrays (vectors, titles, domains, ...) plus cached filter masks.
- `CoEngagement`: item-item co-engagement and popularity, from the whole events table.
  Two documents co-occur when the same user engaged with both (any event but dismiss), weighted by how close
  the two engagements are in that user's history: exp(-(distance - 1) / tau) for distance <= window
  ("users who read X, and around then Y"). The counts are normalized like a cosine,
  c_ij / (n_i ** alpha * n_j ** (1 - alpha)) with n = users engaged with the document, and only the
  `coengagement_neighbors` strongest neighbours per document are kept (sparse, bounded memory).
  Popularity ("trending") is the number of users engaged with a document, each decayed by
  0.5 ** (age / trending_half_life) from the newest event in the log.
  The model is rebuilt from the events table when the log changed and the model is older than
  `coengagement_ttl_s` (in a background thread when a model is already there, so requests never wait for it).
- Profile neighbours: exact inner products of the profile with every document vector (numpy; the document
  matrix of a generation is n_docs x dim floats, a few ms even at 100k documents).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from rag.config import RecommendSettings
from rag.state import StateDB

log = logging.getLogger(__name__)

DAY_S = 86400.0


def _as_list(v) -> list[str] | None:
    if v is None or v == "" or v == []:
        return None
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v]


class _SingleThreadBLAS:
    """Run a block with numpy's BLAS on one thread.

    The matrices here are small (a pool of ~40 vectors, one matrix-vector product over the catalog); a
    multi-threaded BLAS spends more on waking threads than on the work, and under concurrent requests it
    oversubscribes the cores (measured: 2.4 ms vs 0.3 ms for a 40x384 Gram matrix on a busy 2-core box).
    OpenBLAS' thread count is process-wide, so nested and concurrent users share one reference count and the
    previous setting comes back when the last one leaves.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: list[tuple[object, int]] = []
        self._libs = None

    def _controllers(self):
        if self._libs is None:
            try:
                from threadpoolctl import ThreadpoolController

                self._libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
            except Exception:  # noqa: BLE001 - no threadpoolctl, or an unknown BLAS: just run multi-threaded
                self._libs = []
        return self._libs

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._saved = []
                for lib in self._controllers():
                    try:
                        self._saved.append((lib, lib.get_num_threads()))
                        lib.set_num_threads(1)
                    except Exception:  # noqa: BLE001
                        pass
            self._depth += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, n in self._saved:
                    try:
                        lib.set_num_threads(n)
                    except Exception:  # noqa: BLE001
                        pass
                self._saved = []


single_thread_blas = _SingleThreadBLAS()


class CatalogView:
    """The documents of one generation, as arrays indexed by doc row; with `visible` (rag.access: the doc rows a
    caller may see) only those, renumbered, so that everything computed on the catalogue (profiles, co-engagement,
    popularity, trending, reasons) is computed over the visible documents alone: an event on a hidden document
    joins nothing here, and no score or count a caller reads back carries it. `key` names the catalogue in caches."""

    def __init__(self, snapshot, visible: np.ndarray | None = None, key=None):
        self.snapshot_id: str = snapshot.id
        self.key = key if key is not None else snapshot.id
        self.embedder: str = snapshot.manifest.embedder.name  # its name picks calibrated cosine thresholds
        rows = np.arange(len(snapshot.doc_ids), dtype=np.int64) if visible is None else np.asarray(visible, np.int64)
        self.doc_ids: list[str] = [snapshot.doc_ids[r] for r in rows]
        self.row_of: dict[str, int] = {d: i for i, d in enumerate(self.doc_ids)}
        n = len(self.doc_ids)
        every = np.asarray(snapshot.doc_vectors[:len(snapshot.doc_ids)], dtype=np.float32)
        # All of them: the generation's (memory-mapped) array as it is; a visible subset: a copy of those rows.
        self.vectors = np.ascontiguousarray(every if visible is None else every[rows])
        cur = snapshot.sql("SELECT doc_row, title, domain, language, audience, date FROM documents ORDER BY doc_row")
        recs = cur.fetchall()
        if visible is not None:
            recs = [recs[r] for r in rows]
        self.titles: list[str] = [r[1] or self.doc_ids[i] for i, r in enumerate(recs)]
        self.title_keys: list[str] = [" ".join((r[1] or "").casefold().split()) for r in recs]
        self.domains = np.asarray([r[2] for r in recs], dtype=object)
        self.languages = np.asarray([r[3] for r in recs], dtype=object)
        self.audiences = np.asarray([r[4] for r in recs], dtype=object)
        dates = [r[5] for r in recs]
        self.date_order = np.asarray(sorted(range(n), key=lambda i: (dates[i] is None, -(
            dates[i].toordinal() if dates[i] is not None else 0), i)), dtype=np.int64)
        self.n = n
        self._centered: np.ndarray | None = None
        self.mean_vector: np.ndarray | None = None
        self._masks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def rank_vectors(self, center: bool) -> np.ndarray:
        """The vectors profiles and profile candidates are scored with: the generation's own, or (center=True)
        each minus the catalogue's mean vector, renormalized. Sentence encoders such as e5 are anisotropic (all
        cosines of unrelated texts ~0.75): centring removes the shared direction so cosines spread over what
        tells items apart. Reasons and near-duplicate checks keep the raw vectors (their thresholds are
        calibrated on raw cosines)."""
        if not center or self.n == 0:
            return self.vectors
        if self._centered is None:
            mean = self.vectors.mean(axis=0)
            c = self.vectors - mean
            c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-9)
            self.mean_vector = mean.astype(np.float32)
            self._centered = np.ascontiguousarray(c, dtype=np.float32)
        return self._centered

    def mask(self, domain=None, language=None, audience=None) -> np.ndarray:
        """Boolean allow-mask over doc rows for the filters (each a value or a list of values)."""
        key = tuple(tuple(_as_list(v) or ()) for v in (domain, language, audience))
        with self._lock:
            m = self._masks.get(key)
            if m is not None:
                self._masks.move_to_end(key)
                return m
        m = np.ones(self.n, dtype=bool)
        for values, col in zip(key, (self.domains, self.languages, self.audiences)):
            if values:
                m &= np.isin(col, np.asarray(values, dtype=object))
        m.setflags(write=False)
        with self._lock:
            self._masks[key] = m
            while len(self._masks) > 128:
                self._masks.popitem(last=False)
        return m


@dataclass
class CoModel:
    sim: sp.csr_matrix  # n_docs x n_docs, normalized co-engagement, top neighbours per row
    users: np.ndarray  # engaged users per doc (all time)
    trending: np.ndarray  # decayed popularity per doc
    week: np.ndarray  # users engaged in the last 7 days (wall clock) per doc: for "this week" reasons
    version: int  # state.version it was built from
    built_at: float  # time.monotonic()
    seconds: float
    n_events: int

    @property
    def has_events(self) -> bool:
        return self.n_events > 0


def co_params(cfg: RecommendSettings) -> tuple:
    return (cfg.coengagement_window, cfg.coengagement_tau, cfg.coengagement_alpha, cfg.coengagement_neighbors,
            cfg.trending_half_life_days)


def build_comodel(state: StateDB, cat: CatalogView, cfg: RecommendSettings) -> CoModel:
    started = time.perf_counter()
    version = state.version
    n = cat.n
    with state.reader() as cur:  # own cursor: the registered table is per connection
        cur.register("rec_docs", pa.table({"doc_id": pa.array(cat.doc_ids, pa.string()),
                                           "doc_row": pa.array(np.arange(n, dtype=np.int32))}))
        res = cur.execute("""
            SELECT dense_rank() OVER (ORDER BY e.user_id) AS u, g.doc_row AS d,
                   CAST(extract(epoch FROM min(e.ts)) AS DOUBLE PRECISION) AS first_s,
                   CAST(extract(epoch FROM max(e.ts)) AS DOUBLE PRECISION) AS last_s
            FROM events e JOIN rec_docs g ON g.doc_id = e.doc_id
            WHERE e.type <> 'dismiss'
            GROUP BY e.user_id, g.doc_row
            ORDER BY u, first_s, d""").fetchnumpy()
    u = np.asarray(res["u"], dtype=np.int64)
    d = np.asarray(res["d"], dtype=np.int64)
    last_s = np.asarray(res["last_s"], dtype=np.float64)
    m_pairs = len(u)

    users = np.bincount(d, minlength=n).astype(np.float64)
    trending = np.zeros(n)
    week = np.zeros(n)
    if m_pairs:
        ref = last_s.max()
        hl = max(cfg.trending_half_life_days, 1e-6) * DAY_S
        np.add.at(trending, d, np.power(0.5, (ref - last_s) / hl))
        now_s = (datetime.now(timezone.utc).replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
        recent = last_s >= now_s - 7 * DAY_S
        np.add.at(week, d[recent], 1.0)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    tau = max(cfg.coengagement_tau, 1e-6)
    for dist in range(1, max(1, cfg.coengagement_window) + 1):
        if dist >= m_pairs:
            break
        same = u[dist:] == u[:-dist]
        if not same.any():
            break
        a = d[:-dist][same]
        b = d[dist:][same]
        w = np.full(len(a), np.exp(-(dist - 1) / tau), dtype=np.float32)
        rows += [a, b]
        cols += [b, a]
        vals += [w, w]
    if rows:
        coo = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        # Sums duplicates. No diagonal: a (user, doc) pair is one row of the query, so a != b in every pair.
        c = coo.tocsr()
        nn = np.maximum(users, 1.0)
        alpha = cfg.coengagement_alpha
        row_of_entry = np.repeat(np.arange(n), np.diff(c.indptr))
        c.data = (c.data / (nn[row_of_entry] ** alpha * nn[c.indices] ** (1 - alpha))).astype(np.float32)
        sim = _top_per_row(c, cfg.coengagement_neighbors)
    else:
        sim = sp.csr_matrix((n, n), dtype=np.float32)
    return CoModel(sim=sim, users=users, trending=trending, week=week, version=version,
                   built_at=time.monotonic(), seconds=time.perf_counter() - started, n_events=m_pairs)


def _top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    if k <= 0:
        return m
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= k:
        return m
    keep = np.ones(len(m.data), dtype=bool)
    for r in np.nonzero(counts > k)[0]:
        a, b = m.indptr[r], m.indptr[r + 1]
        drop = np.argpartition(-m.data[a:b], k)[k:]
        keep[a + drop] = False
    m = m.copy()
    m.data[~keep] = 0
    m.eliminate_zeros()
    return m


class CoEngagementIndex:
    """The co-engagement model per generation, rebuilt when the event log changes (at most every TTL)."""

    def __init__(self, state: StateDB, keep: int = 2):
        self.state = state
        self.keep = keep
        self._models: OrderedDict[tuple, CoModel] = OrderedDict()
        self._lock = threading.Lock()
        self._build_locks: dict[tuple, threading.Lock] = {}
        self._refreshing: set[tuple] = set()

    def get(self, cat: CatalogView, cfg: RecommendSettings) -> CoModel:
        key = (cat.key, co_params(cfg))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
        if model is None:
            return self._build(key, cat, cfg)
        stale = model.version != self.state.version
        if stale and time.monotonic() - model.built_at >= cfg.coengagement_ttl_s:
            if cfg.coengagement_ttl_s <= 0:
                return self._build(key, cat, cfg)
            with self._lock:
                if key in self._refreshing:
                    return model
                self._refreshing.add(key)
            threading.Thread(target=self._refresh, args=(key, cat, cfg), daemon=True,
                             name="rag-coengagement-refresh").start()
        return model

    def invalidate(self) -> None:
        """Forget every model (a user was forgotten): the next request builds from the event log as it is now."""
        with self._lock:
            self._models.clear()

    def _refresh(self, key, cat, cfg) -> None:
        try:
            self._build(key, cat, cfg)
        except Exception:  # noqa: BLE001 - keep serving the previous model
            log.exception("co-engagement refresh failed for generation %s", cat.snapshot_id)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def _build(self, key, cat, cfg) -> CoModel:
        with self._lock:
            lock = self._build_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                current = self._models.get(key)
            if current is not None and current.version == self.state.version:
                return current  # somebody else just built it
            model = build_comodel(self.state, cat, cfg)
            log.info("co-engagement model for %s: %d user-doc pairs, %d links, %.2fs", cat.snapshot_id,
                     model.n_events, model.sim.nnz, model.seconds)
            with self._lock:
                self._models[key] = model
                self._models.move_to_end(key)
                while len(self._models) > self.keep * 2:
                    old = next(iter(self._models))
                    self._models.pop(old)
                    self._build_locks.pop(old, None)
            return model


# --- candidate helpers -------------------------------------------------------------------------------------

def top_rows(scores: np.ndarray, allowed: np.ndarray, n: int, min_score: float | None = None) -> np.ndarray:
    """Rows of the `n` best `scores` among `allowed` (a boolean mask), best first."""
    s = np.where(allowed, scores, -np.inf)
    if min_score is not None:
        s = np.where(s > min_score, s, -np.inf)
    n = min(n, int(np.isfinite(s).sum()))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.argpartition(-s, n - 1)[:n] if n < len(s) else np.arange(len(s))
    idx = idx[np.isfinite(s[idx])]
    return idx[np.argsort(-s[idx], kind="stable")].astype(np.int64)


def _gather_rows(sim: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in sim.data/indices of the given rows' entries, and which of `rows` each belongs to.
    (Plain index arithmetic: scipy's fancy row indexing costs ~0.5 ms of overhead per call.)"""
    rows = np.asarray(rows, dtype=np.int64)
    starts = sim.indptr[rows].astype(np.int64)
    lens = sim.indptr[rows + 1].astype(np.int64) - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(rows)), lens)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return offsets + np.arange(total), owner


def coengagement_scores(model: CoModel, seeds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_s w_s * sim[s, :] over the seeds, dense over doc rows."""
    n = model.sim.shape[1]
    if len(seeds) == 0 or model.sim.nnz == 0:
        return np.zeros(n, dtype=np.float64)
    pos, owner = _gather_rows(model.sim, seeds)
    return np.bincount(model.sim.indices[pos], weights=model.sim.data[pos] * np.asarray(weights)[owner],
                       minlength=n)


def coengagement_block(model: CoModel, seeds: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Dense sim[seeds][:, rows]."""
    out = np.zeros((len(seeds), len(rows)), dtype=np.float64)
    if len(seeds) == 0 or len(rows) == 0 or model.sim.nnz == 0:
        return out
    pos, owner = _gather_rows(model.sim, seeds)
    col = np.full(model.sim.shape[1], -1, dtype=np.int64)
    col[rows] = np.arange(len(rows))
    c = col[model.sim.indices[pos]]
    hit = c >= 0
    out[owner[hit], c[hit]] = model.sim.data[pos][hit]
    return out
