"""Offline evaluation of recommendations on a RecBole atomic-file folder (MovieLens-100K and the like), against
baselines.

Protocol (leave-latest-out, full ranking over the catalog):
- items = the .item rows; each becomes a document "<title> (<year>). Genres: <g1>, <g2>." indexed into a real
  generation with the real embedder, built once per catalogue: cached under
  <cache_dir>/eval/movielens-<fingerprint of the item texts and the embedder>, reused by every later run;
- ratings = `rating` events with their values and timestamps, ingested in bulk through `rag.events.ingest` on
  the data's rating scale: `--rating-scale MIN,MAX`, else the min and max of the rating column (0.5-5 for half
  stars). Profiles see them normalized (rag.events.RatingScale: -1 at the bottom, 0 at the midpoint, +1 at the
  top); a file whose ratings are all equal (or that has none) gives a "like" per row;
- a row that cannot be used (a wrong number of fields, an id missing, a rating or timestamp that is not a number,
  a rating outside the given scale, an item the .item file lacks) is skipped and counted per reason in the
  report; only a folder with nothing usable left stops the run (EvaluationError, one line);
- per user, interactions sorted by (timestamp, file order); the latest `holdout` are the test items, the rest
  is training data. Every system recommends 10 items per user among the items the user has not rated in
  training, and is scored on the held-out items: nDCG@10, recall@10 (= hit rate with one held-out item),
  MRR@10 and catalog coverage (share of items in at least one top-10 list).
- Systems, all in the same run on the same split: `ours` (the same `rag.recommend.Recommender` the service
  runs), `popularity` (most rated in training), `als` (implicit's ALS), `itemknn` (implicit's item-item
  cosine kNN), `bpr` (implicit's Bayesian Personalized Ranking).
- Tuning is honest: from the training data, the latest `holdout` interactions of each user are held out again
  as a validation set; every system's knobs (our blend weights and order decay; ALS factors, alpha and matrix
  weighting; kNN K and weighting; BPR factors, learning rate, epochs) are chosen on validation nDCG@10 by
  fitting on the rest, then refit on the full training data and scored once on the test items. The test
  holdout is never used to choose anything.
- Tuning time is bounded: above MAX_TUNE_USERS validation users a fixed sample of them is scored, and above
  LARGE_ITEMS items (or LARGE_INTERACTIONS training interactions) smaller grids are searched.
- Wall time per phase is reported: load (read and check the files), index (open or build the item generation),
  tune, fit (every system on the training data) and score (lists for every test user, and the metrics).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgspec
import numpy as np

from evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from indexer.build import build
from rag.config import RecommendSettings, Settings
from rag.errors import InvalidInput

log = logging.getLogger(__name__)

ITEM_TEXT_VERSION = "1"  # bump when the item text template changes (it is part of the cache fingerprint)
K = 10


class EvaluationError(InvalidInput):
    """Nothing usable is left to evaluate; the message is one line for the user."""


@dataclass
class Interactions:
    users: np.ndarray  # str user ids, sorted by (user, ts, file order)
    items: np.ndarray  # str item ids
    ratings: np.ndarray  # normalized to [-1, 1] by the data's rating scale (rag.events.RatingScale.normalize)
    ts: np.ndarray  # unix seconds
    values: np.ndarray | None = None  # the ratings as the file gives them (what the events carry)

    def subset(self, mask: np.ndarray) -> "Interactions":
        return Interactions(self.users[mask], self.items[mask], self.ratings[mask], self.ts[mask],
                            None if self.values is None else self.values[mask])

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Skipped:
    """Rows left out of an evaluation, counted per reason (the reason without the row's own value)."""

    rows: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first few: {"file", "line", "field", "reason"}

    def add(self, file: str, line: int, field_name: str, reason: str) -> None:
        self.rows += 1
        key = f"{field_name}: {reason.split(', got ')[0]}"
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        if len(self.examples) < 5:
            self.examples.append({"file": file, "line": line, "field": field_name, "reason": reason})

    def summary(self) -> str:
        return "; ".join(f"{n} {why}" for why, n in sorted(self.by_reason.items(), key=lambda kv: -kv[1]))

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "by_reason": self.by_reason, "examples": self.examples}


@dataclass
class Dataset:
    name: str
    items: list[dict[str, Any]]
    data: Interactions
    scale: Any  # rag.events.RatingScale, or None when the file has no ratings to tell apart (every row a like)
    scale_source: str  # "data" | "given" | "none"
    rows: int  # data rows in the .inter file
    skipped: Skipped  # .inter rows left out
    skipped_items: Skipped  # .item rows left out


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines:
        raise EvaluationError(f"{path} is empty")
    header = [h.split(":")[0].strip() for h in lines[0].split("\t")]
    return header, [ln.split("\t") for ln in lines[1:] if ln.strip()]


def _first(col: dict[str, int], *names: str) -> int | None:
    return next((col[n] for n in names if n in col), None)


MAX_ID_CHARS = 256  # as rag.events
MAX_FUTURE_S = 86400.0  # as rag.events: timestamps up to a day ahead (clock skew)


def load_recbole(folder: str | Path, rating_scale: tuple[float, float] | None = None) -> Dataset:
    """A RecBole atomic-file folder (<name>.inter, <name>.item) -> items and interactions.

    The rating scale is `rating_scale` when given, else the data's own (min and max of the rating column).
    A row that cannot be used is skipped and counted with its reason, never fatal: a wrong number of fields, a
    missing id, a rating or timestamp that is not a number, a rating outside the scale (the reason the events
    API gives), an item the .item file does not have. Only a folder with nothing usable left is an error."""
    from rag.events import RatingScale

    folder = Path(folder)
    inter = sorted(folder.glob("*.inter"))
    item = sorted(folder.glob("*.item"))
    if not inter or not item:
        raise EvaluationError(f"{folder}: expected RecBole atomic files <name>.inter and <name>.item")
    name = inter[0].stem
    skipped_items = Skipped()
    header, rows = _read_atomic(item[0])
    col = {h: i for i, h in enumerate(header)}
    if "item_id" not in col:
        raise EvaluationError(f"{item[0]}: no item_id column in the header ({', '.join(header)})")
    c_title = _first(col, "movie_title", "title", "name")
    c_year = _first(col, "release_year", "year")
    c_genres = _first(col, "class", "genres", "genre", "categories")
    items: list[dict[str, Any]] = []
    known: set[str] = set()
    for line, r in enumerate(rows, 2):
        get = lambda c: r[c].strip() if c is not None and c < len(r) else ""  # noqa: E731
        iid = get(col["item_id"])
        if not iid or len(iid) > MAX_ID_CHARS:
            skipped_items.add(item[0].name, line, "item_id", "missing" if not iid else "too long")
            continue
        if iid in known:
            skipped_items.add(item[0].name, line, "item_id", f"a second row for item {iid}")
            continue
        known.add(iid)
        items.append({"item_id": iid, "title": get(c_title) or f"item {iid}", "year": get(c_year),
                      "genres": get(c_genres).split()})
    if not items:
        raise EvaluationError(f"{item[0]}: no usable item rows")

    header, rows = _read_atomic(inter[0])
    col = {h: i for i, h in enumerate(header)}
    for need in ("user_id", "item_id"):
        if need not in col:
            raise EvaluationError(f"{inter[0]}: no {need} column in the header ({', '.join(header)})")
    c_rating, c_ts = col.get("rating"), col.get("timestamp")
    width = max(i for c, i in col.items() if c in ("user_id", "item_id", "rating", "timestamp")) + 1
    fname = inter[0].name
    skipped = Skipped()
    us, its, vals, tss, lines = [], [], [], [], []
    now = time.time()
    for line, r in enumerate(rows, 2):
        if len(r) < width:
            skipped.add(fname, line, "line", f"expected {len(header)} tab-separated fields, got {len(r)}")
            continue
        u, i = r[col["user_id"]].strip(), r[col["item_id"]].strip()
        if not u or len(u) > MAX_ID_CHARS:
            skipped.add(fname, line, "user_id", "missing" if not u else "too long")
            continue
        if i not in known:
            skipped.add(fname, line, "item_id", f"not in {item[0].name}" if i else "missing")
            continue
        try:
            v = float(r[c_rating]) if c_rating is not None else 1.0
        except ValueError:
            v = float("nan")
        if not math.isfinite(v):
            skipped.add(fname, line, "rating", f"not a number, got {r[c_rating].strip()!r}")
            continue
        if c_ts is not None:
            try:
                t = float(r[c_ts])
            except ValueError:
                t = float("nan")
            if not math.isfinite(t) or t < 0 or t > now + MAX_FUTURE_S:
                skipped.add(fname, line, "timestamp", f"not Unix seconds in the past, got {r[c_ts].strip()!r}")
                continue
        else:
            t = float(line)  # no timestamps: the file's order is the order of events
        us.append(u)
        its.append(i)
        vals.append(v)
        tss.append(t)
        lines.append(line)

    values = np.asarray(vals, dtype=np.float64)
    if rating_scale is not None:
        scale, source = RatingScale(float(rating_scale[0]), float(rating_scale[1])), "given"
        ok = (values >= scale.low) & (values <= scale.high)
        for n in np.nonzero(~ok)[0]:
            skipped.add(fname, lines[n], "rating", scale.problem(float(values[n])))
    else:
        ok = np.ones(len(values), dtype=bool)
        if len(values) and c_rating is not None and values.min() < values.max():
            scale, source = RatingScale(float(values.min()), float(values.max())), "data"
        else:
            scale, source = None, "none"  # nothing to tell apart: every interaction is a like
    n_rows = len(rows)
    if not ok.any():
        why = skipped.summary() or "the file has no data rows"
        raise EvaluationError(f"{inter[0]}: nothing usable: {skipped.rows} of {n_rows} rows skipped ({why})")
    u = np.asarray(us, dtype=object)[ok].astype(str)
    i = np.asarray(its, dtype=object)[ok].astype(str)
    values, ts = values[ok], np.asarray(tss, dtype=np.float64)[ok]
    ratings = scale.normalize(values) if scale is not None else np.ones(len(values))
    order = np.lexsort((np.arange(len(u)), ts, u))
    data = Interactions(u[order], i[order], np.asarray(ratings)[order], ts[order], values[order])
    return Dataset(name, items, data, scale, source, n_rows, skipped, skipped_items)


def split_latest(data: Interactions, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, holdout mask): the latest `n` interactions of each user with more than n + 1 of them."""
    users = data.users
    starts = np.r_[0, np.nonzero(users[1:] != users[:-1])[0] + 1]
    ends = np.r_[starts[1:], len(users)]
    hold = np.zeros(len(users), dtype=bool)
    for a, b in zip(starts, ends):
        if b - a > n + 1:
            hold[b - n:b] = True
    return ~hold, hold


def item_text(it: dict[str, Any]) -> str:
    year = f" ({it['year']})" if it["year"] else ""
    genres = ", ".join(g.replace("_", " ") for g in it["genres"])
    return f"{it['title']}{year}. Genres: {genres}." if genres else f"{it['title']}{year}."


def fingerprint(items: list[dict[str, Any]], embedder: str) -> str:
    h = hashlib.sha256(f"{ITEM_TEXT_VERSION}\x00{embedder}\x00".encode())
    for it in items:
        h.update(f"{it['item_id']}\x00{item_text(it)}\n".encode())
    return h.hexdigest()[:16]


def item_generation(items: list[dict[str, Any]], settings: Settings, show_progress: bool = True):
    """Build (or reuse) the generation of the items under a cache home keyed by their fingerprint."""
    from rag import snapshot_files
    from rag.snapshot import Snapshot

    fp = fingerprint(items, settings.embedder)
    home = settings.cache_dir / "eval" / f"movielens-{fp}"
    eval_settings = msgspec.structs.replace(settings, home=str(home), model_cache=str(settings.models_dir),
                                            source_dirs=[])
    snapshot_id = snapshot_files.read_pointer(home) if home.exists() else None
    if snapshot_id is None:
        home.mkdir(parents=True, exist_ok=True)
        src = home / "items" / "items.jsonl"
        src.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "w", encoding="utf-8") as f:
            for it in items:
                f.write(json.dumps({"id": it["item_id"], "title": it["title"], "text": item_text(it),
                                    "tags": it["genres"], "domain": "movies", "language": "en",
                                    "date": f"{it['year']}-01-01" if it["year"].isdigit() else None},
                                   ensure_ascii=False) + "\n")
        report = build(eval_settings, [src], show_progress=show_progress)
        snapshot_id = report.generation_id
        log.info("built item generation %s in %.1fs", snapshot_id, report.seconds)
    return Snapshot(snapshot_files.snapshot_dir(home, snapshot_id), eval_settings.models_dir), eval_settings, fp


# --- scoring -----------------------------------------------------------------------------------------------

def score_lists(lists: dict[str, list[str]], truth: dict[str, list[str]], n_items: int) -> dict[str, float]:
    nd, rc, mr = [], [], []
    shown: set[str] = set()
    for user, relevant in truth.items():
        ranked = lists.get(user, [])[:K]
        shown.update(ranked)
        qrels = {i: 1 for i in relevant}
        nd.append(ndcg_at_k(ranked, qrels, K))
        rc.append(recall_at_k(ranked, qrels, K))
        mr.append(mrr_at_k(ranked, qrels, K))
    n = max(1, len(truth))
    return {"ndcg@10": round(sum(nd) / n, 4), "recall@10": round(sum(rc) / n, 4), "mrr": round(sum(mr) / n, 4),
            "coverage": round(len(shown) / max(1, n_items), 4), "users": len(truth)}


def truth_of(data: Interactions) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for u, i in zip(data.users, data.items):
        out.setdefault(u, []).append(i)
    return out


# --- systems -----------------------------------------------------------------------------------------------

class _Matrix:
    """User-item matrix of a training set, with id maps. weighting "binary": every rated item 1 (the usual
    implicit-feedback view); "rating": 2 ** the normalized rating (0.5 at the bottom of the scale, 1 at the
    neutral point, 2 at the top), the latest rating of a re-rated item."""

    def __init__(self, train: Interactions, item_ids: list[str], weighting: str = "binary"):
        import scipy.sparse as sp

        self.item_ids = item_ids
        self.item_index = {i: n for n, i in enumerate(item_ids)}
        self.user_ids = sorted(set(train.users.tolist()))
        self.user_index = {u: n for n, u in enumerate(self.user_ids)}
        rows = np.asarray([self.user_index[u] for u in train.users], dtype=np.int64)
        cols = np.asarray([self.item_index[i] for i in train.items], dtype=np.int64)
        keys = rows * len(item_ids) + cols
        _, last = np.unique(keys[::-1], return_index=True)  # train is in time order: keep each pair's latest
        last = len(keys) - 1 - last
        vals = np.ones(len(last), dtype=np.float32) if weighting == "binary" else \
            np.power(2.0, train.ratings[last]).astype(np.float32)
        self.m = sp.csr_matrix((vals, (rows[last], cols[last])), shape=(len(self.user_ids), len(item_ids)))


def popularity_lists(train: Interactions, users: list[str], item_ids: list[str]) -> dict[str, list[str]]:
    counts: dict[str, int] = {}
    for i in train.items:
        counts[i] = counts.get(i, 0) + 1
    ranked = sorted(item_ids, key=lambda i: (-counts.get(i, 0), i))
    seen = truth_of(train)
    out = {}
    for u in users:
        s = set(seen.get(u, ()))
        out[u] = [i for i in ranked[:K + len(s)] if i not in s][:K]
    return out


def _quiet_single_blas():
    import contextlib
    import warnings

    from threadpoolctl import threadpool_limits

    stack = contextlib.ExitStack()
    # implicit asks for a single-threaded BLAS (its own threads do the work); its notices are not results.
    stack.enter_context(threadpool_limits(1, "blas"))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


class ImplicitRunner:
    """One of implicit's models fitted on a training set; `lists` recommends K unseen items per user."""

    def __init__(self, model_factory: Callable[[], Any], train: Interactions, item_ids: list[str],
                 weighting: str = "binary"):
        t = time.perf_counter()
        self.mat = _Matrix(train, item_ids, weighting)
        with _quiet_single_blas():
            self.model = model_factory()
            self.model.fit(self.mat.m, show_progress=False)
        self.fit_s = time.perf_counter() - t

    def lists(self, users: list[str]) -> dict[str, list[str]]:
        mat = self.mat
        idx = np.asarray([mat.user_index[u] for u in users if u in mat.user_index], dtype=np.int64)
        out: dict[str, list[str]] = {u: [] for u in users}
        if not len(idx):
            return out
        with _quiet_single_blas():
            ids, _ = self.model.recommend(idx, mat.m[idx], N=K, filter_already_liked_items=True)
        for row, u in zip(ids, [mat.user_ids[i] for i in idx]):
            out[u] = [mat.item_ids[j] for j in row if j >= 0]
        return out


def als_factory(factors: int, regularization: float, alpha: float, iterations: int = 15):
    def make():
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                       iterations=iterations, random_state=0, num_threads=0)
    return make


def bpr_factory(factors: int, learning_rate: float, regularization: float, iterations: int = 100):
    def make():
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        # One thread: BPR's parallel SGD updates race, and the same run must give the same figures.
        return BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate,
                                           regularization=regularization, iterations=iterations, random_state=0,
                                           num_threads=1)
    return make


def knn_factory(k: int):
    def make():
        from implicit.nearest_neighbours import CosineRecommender

        return CosineRecommender(K=k)
    return make


def to_events(data: Interactions, rated: bool = True) -> list[dict[str, Any]]:
    """Rating events with the file's values (a "like" per row when the data has no ratings to tell apart)."""
    values = data.values if data.values is not None else data.ratings
    if not rated:
        return [{"user_id": u, "doc_id": i, "type": "like", "timestamp": float(t)}
                for u, i, t in zip(data.users, data.items, data.ts)]
    return [{"user_id": u, "doc_id": i, "type": "rating", "value": float(r), "timestamp": float(t)}
            for u, i, r, t in zip(data.users, data.items, values, data.ts)]


class OursRunner:
    """Our Recommender over a fresh state database holding `train` as rating events (validated and stored by
    the same rag.events.ingest the service uses, on the data's rating scale)."""

    def __init__(self, settings: Settings, snapshot, train: Interactions, workdir: Path, rated: bool = True):
        from rag.events import ingest
        from rag.recommend import Recommender
        from rag.state import StateDB

        self.snapshot = snapshot
        self.state = StateDB(workdir / f"state-{time.monotonic_ns()}.duckdb")
        t = time.perf_counter()
        report = ingest(self.state, to_events(train, rated), rating_scale=settings.events)
        # The loader already left out what the events API would reject; should anything still be refused, it is
        # counted, not fatal.
        self.rejected = report.rejected_events
        if self.rejected:
            log.warning("%d training events were rejected: %s", self.rejected, report.rejected[:3])
        self.ingest_s = time.perf_counter() - t
        self.rec = Recommender(settings, self.state)

    def fit(self, users: list[str], cfg: RecommendSettings) -> float:
        """Profiles of `users` and the co-engagement model for `cfg`; returns seconds."""
        t = time.perf_counter()
        self.rec.cfg = cfg
        self.rec.warm(self.snapshot, users)
        return time.perf_counter() - t

    def lists(self, users: list[str], cfg: RecommendSettings | None = None) -> tuple[dict[str, list[str]], float]:
        if cfg is not None:
            self.fit(users, cfg)
        t = time.perf_counter()
        out = {u: [it.doc_id for it in self.rec.recommend(self.snapshot, u, k=K).items] for u in users}
        return out, (time.perf_counter() - t) / max(1, len(users)) * 1e3

    def close(self) -> None:
        self.state.close()


# A change of a knob must beat the current best by more than this on validation nDCG@10 (one user's hit at
# rank 1 is worth 1/943 = 0.00106 on ML-100K): differences below it are noise, and the configured value stays.
MIN_GAIN = 0.001
# Coordinate search for our knobs, one at a time, starting from the configured values.
SEQUENTIAL_START = dict(weight_profile=0.15, weight_coengagement=1.0, weight_popularity=0.05, weight_domain=0.1,
                        order_decay=0.8)
# order_decay 1.0 with many seeds is the whole history at equal weight: what pays on data without an order
# (the synthetic catalogue of bench/recommend_scale.py: nDCG@10 0.0015 at 0.8 / 50 seeds, 0.043 at 1.0 / 200).
OURS_GRID: list[tuple[str, list[Any]]] = [
    ("order_decay", [0.7, 0.8, 0.9, 1.0]),
    ("max_seeds", [50, 200]),
    ("weight_profile", [0.0, 0.05, 0.15, 0.3]),
    ("weight_popularity", [0.0, 0.05, 0.15]),
]
# Baselines: each point is a model's parameters plus `weighting` of the user-item matrix ("binary": every rated
# item 1; "rating": 2 ** the normalized rating, see _Matrix). BPR only reads which items a user rated.
ALS_GRID = [dict(factors=f, regularization=0.05, alpha=a, weighting=w) for w in ("binary", "rating")
            for f in (32, 64, 128) for a in (1.0, 5.0)]
KNN_GRID = [dict(k=k, weighting=w) for w in ("binary", "rating") for k in (20, 50, 100, 200)]
# BPR's SGD is sensitive to the learning rate x epochs: the four points span the best region of a 36-point sweep
# on ML-100K validation (factors 32-128, learning rate 0.003-0.01, 100-300 epochs, regularization 0.01/0.001).
BPR_GRID = [dict(factors=32, learning_rate=0.003, regularization=0.001, iterations=300),
            dict(factors=128, learning_rate=0.003, regularization=0.001, iterations=300),
            dict(factors=32, learning_rate=0.01, regularization=0.001, iterations=100),
            dict(factors=64, learning_rate=0.01, regularization=0.01, iterations=100)]
DEFAULTS = {"als": ALS_GRID[2], "bpr": BPR_GRID[0], "itemknn": KNN_GRID[2]}
# Bounded tuning: above MAX_TUNE_USERS validation users a fixed random sample of that many is scored (the fits
# still use every training interaction), and a catalogue of more than LARGE_ITEMS items (or more than
# LARGE_INTERACTIONS training interactions) searches the smaller grids below, so that tuning grows with the data
# roughly linearly, not with grid size x data.
MAX_TUNE_USERS = 2000
LARGE_ITEMS = 5000
LARGE_INTERACTIONS = 1_000_000
ALS_GRID_LARGE = [dict(factors=f, regularization=0.05, alpha=1.0, weighting="binary") for f in (64, 128)]
BPR_GRID_LARGE = [dict(factors=64, learning_rate=0.01, regularization=0.01, iterations=100)]
KNN_GRID_LARGE = [dict(k=k, weighting="binary") for k in (50, 200)]
OURS_GRID_LARGE: list[tuple[str, list[Any]]] = [
    ("order_decay", [0.7, 0.9, 1.0]),
    ("max_seeds", [50, 200]),
    ("weight_profile", [0.0, 0.3]),
    ("weight_popularity", [0.0, 0.15]),
]


def _baseline(factory, params: dict[str, Any], train: Interactions, item_ids: list[str]) -> ImplicitRunner:
    model = {k: v for k, v in params.items() if k != "weighting"}
    return ImplicitRunner(factory(**model), train, item_ids, params.get("weighting", "binary"))


def _cfg_summary(cfg: RecommendSettings) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in ("weight_profile", "weight_coengagement", "weight_popularity",
                                         "weight_domain", "weight_language", "order_decay", "max_seeds", "mmr_lambda",
                                         "half_life_days", "coengagement_tau", "coengagement_window",
                                         "coengagement_alpha", "center_vectors")}


def _parse_scale(scale) -> tuple[float, float] | None:
    if scale is None:
        return None
    lo, hi = (float(x) for x in scale)
    return lo, hi


def evaluate(folder: str | Path, settings: Settings, *, holdout: int = 1, tune: bool = True,
             show_progress: bool = True, rating_scale: tuple[float, float] | None = None,
             max_tune_users: int = MAX_TUNE_USERS) -> dict[str, Any]:
    """Every system on the same leave-latest-out split; see the module docstring. Raises EvaluationError (one
    line) only when nothing usable remains."""
    from rag.config import EventsSettings

    started = time.perf_counter()
    phases: dict[str, float] = {}
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if show_progress else (lambda msg: None)

    t = time.perf_counter()
    ds = load_recbole(folder, _parse_scale(rating_scale))
    items, data, name = ds.items, ds.data, ds.name
    item_ids = [it["item_id"] for it in items]
    n_users = len(set(data.users.tolist()))
    phases["load"] = time.perf_counter() - t
    scale_txt = f"ratings {ds.scale.low:g}-{ds.scale.high:g} ({ds.scale_source})" if ds.scale else "no rating scale"
    say(f"[recommend-eval] {name}: {len(data)} interactions, {n_users} users, {len(items)} items, {scale_txt}")
    if ds.skipped.rows:
        say(f"[recommend-eval] skipped {ds.skipped.rows} of {ds.rows} rows: {ds.skipped.summary()}")
    if ds.skipped_items.rows:
        say(f"[recommend-eval] skipped {ds.skipped_items.rows} item rows: {ds.skipped_items.summary()}")

    train_mask, test_mask = split_latest(data, holdout)
    train, test = data.subset(train_mask), data.subset(test_mask)
    test_truth = truth_of(test)
    users = sorted(test_truth)
    if not users:
        raise EvaluationError(f"{name}: nothing usable: no user has more than {holdout + 1} usable interactions "
                              f"to hold out {holdout}")

    t = time.perf_counter()
    snapshot, eval_settings, fp = item_generation(items, settings, show_progress)
    phases["index"] = time.perf_counter() - t
    say(f"[recommend-eval] item generation {snapshot.id} ({phases['index']:.1f}s; cache key {fp})")
    rated = ds.scale is not None
    if rated:
        eval_settings = msgspec.structs.replace(eval_settings, events=EventsSettings(
            rating_scale=(ds.scale.low, ds.scale.high)))

    large = len(item_ids) > LARGE_ITEMS or len(train) > LARGE_INTERACTIONS
    grids = {"ours": OURS_GRID_LARGE if large else OURS_GRID, "als": ALS_GRID_LARGE if large else ALS_GRID,
             "bpr": BPR_GRID_LARGE if large else BPR_GRID, "itemknn": KNN_GRID_LARGE if large else KNN_GRID}
    # Tuning starts from the sequential profile below, not from the product defaults (tuned for a document
    # library): MovieLens' "latest rating" holdout rewards recency-weighted co-engagement.
    cfg = msgspec.structs.replace(eval_settings.recommend, **SEQUENTIAL_START) if tune else eval_settings.recommend
    validation: dict[str, Any] = {}
    params = dict(DEFAULTS)
    tuning: dict[str, Any] = {"grids": "reduced (large catalogue)" if large else "full"}

    with tempfile.TemporaryDirectory(prefix="rag-receval-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        fit_mask, val_mask = split_latest(train, holdout) if tune else (None, None)
        if tune and val_mask.any():
            fit, val = train.subset(fit_mask), train.subset(val_mask)
            val_truth = truth_of(val)
            val_users = sorted(val_truth)
            if len(val_users) > max_tune_users:
                rng = np.random.default_rng(0)
                val_users = sorted(rng.choice(np.asarray(val_users, dtype=object), max_tune_users,
                                              replace=False).tolist())
                val_truth = {u: val_truth[u] for u in val_users}
            tuning.update(validation_users=len(val_users), validation_users_sampled=len(val_users) < len(
                set(val.users.tolist())))
            say(f"[recommend-eval] validation: {len(val)} held-out interactions; scoring {len(val_users)} users")
            runner = OursRunner(eval_settings, snapshot, fit, work, rated)
            trials = []
            best_cfg = cfg
            best = score_lists(runner.lists(val_users, cfg)[0], val_truth, len(item_ids))
            trials.append({**_cfg_summary(cfg), **best})
            for knob, values in grids["ours"]:
                for v in values:
                    if getattr(best_cfg, knob) == v:
                        continue
                    trial = msgspec.structs.replace(best_cfg, **{knob: v})
                    res = score_lists(runner.lists(val_users, trial)[0], val_truth, len(item_ids))
                    trials.append({**_cfg_summary(trial), **res})
                    if res["ndcg@10"] > best["ndcg@10"] + MIN_GAIN:
                        best, best_cfg = res, trial
                say(f"[recommend-eval] ours: {knob} -> {getattr(best_cfg, knob)} (val nDCG@10 {best['ndcg@10']})")
            # For transparency: what the diversity re-rank costs on this metric (not used to choose it).
            no_mmr = msgspec.structs.replace(best_cfg, mmr_lambda=1.0)
            res = score_lists(runner.lists(val_users, no_mmr)[0], val_truth, len(item_ids))
            trials.append({**_cfg_summary(no_mmr), **res, "note": "without MMR, for reference only"})
            runner.close()
            cfg = best_cfg
            validation["ours"] = trials

            for label, factory in (("als", als_factory), ("itemknn", knn_factory), ("bpr", bpr_factory)):
                results = []
                for p in grids[label]:
                    lists = _baseline(factory, p, fit, item_ids).lists(val_users)
                    results.append({**p, **score_lists(lists, val_truth, len(item_ids))})
                validation[label] = results
                top = max(results, key=lambda r: r["ndcg@10"])
                params[label] = {k: top[k] for k in grids[label][0]}
                say(f"[recommend-eval] {label}: {params[label]} (val nDCG@10 {top['ndcg@10']})")
        elif tune:
            tuning["note"] = "no user has enough training interactions for a validation holdout: configured values"
        phases["tune"] = time.perf_counter() - t

        say("[recommend-eval] test")
        fit_s: dict[str, float] = {}
        score_s: dict[str, float] = {}
        systems: dict[str, dict[str, Any]] = {}
        t = time.perf_counter()
        runner = OursRunner(eval_settings, snapshot, train, work, rated)
        fit_s["ours"] = runner.ingest_s + runner.fit(users, cfg)
        t1 = time.perf_counter()
        ours_lists, ms_per_user = runner.lists(users)
        systems["ours"] = {**score_lists(ours_lists, test_truth, len(item_ids)), "ms_per_user": round(ms_per_user, 2)}
        score_s["ours"] = time.perf_counter() - t1
        rejected_by_ingest = runner.rejected
        runner.close()

        t1 = time.perf_counter()
        systems["popularity"] = score_lists(popularity_lists(train, users, item_ids), test_truth, len(item_ids))
        score_s["popularity"] = time.perf_counter() - t1
        fit_s["popularity"] = 0.0
        for label, factory in (("als", als_factory), ("itemknn", knn_factory), ("bpr", bpr_factory)):
            model = _baseline(factory, params[label], train, item_ids)
            fit_s[label] = model.fit_s
            t1 = time.perf_counter()
            systems[label] = score_lists(model.lists(users), test_truth, len(item_ids))
            score_s[label] = time.perf_counter() - t1
        phases["fit"] = sum(fit_s.values())
        phases["score"] = sum(score_s.values())
    for label in systems:
        systems[label]["fit_s"] = round(fit_s[label], 2)
        systems[label]["score_s"] = round(score_s[label], 2)
    chosen = {"ours": _cfg_summary(cfg), **{k: params[k] for k in ("als", "itemknn", "bpr")}}
    best_baseline = max((k for k in systems if k != "ours"), key=lambda k: systems[k]["ndcg@10"])
    b = systems[best_baseline]["ndcg@10"]
    return {
        "dataset": name,
        "data": {"rows": ds.rows, "used": len(data), "skipped": ds.skipped.as_dict(),
                 "items_skipped": ds.skipped_items.as_dict(), "rejected_by_ingest": rejected_by_ingest,
                 "rating_scale": [ds.scale.low, ds.scale.high] if ds.scale else None,
                 "rating_neutral": ds.scale.mid if ds.scale else None, "rating_scale_source": ds.scale_source},
        "protocol": {"split": f"latest {holdout} interaction(s) per user held out (by timestamp)",
                     "candidates": "all items not rated by the user in training", "k": K,
                     "tuning": "validation split of the training data (latest interaction(s) held out again)"
                     if tune else "none (configured values)",
                     "users": len(users), "items": len(item_ids), "train_interactions": len(train),
                     "test_interactions": len(test)},
        "systems": systems,
        "best_baseline": best_baseline,
        "ours_vs_best_baseline": round(systems["ours"]["ndcg@10"] / b, 3) if b > 0 else None,
        "chosen": chosen,
        "tuning": tuning,
        "validation": validation,
        "generation": {"id": snapshot.id, "cache_key": fp, "seconds_to_open_or_build": round(phases["index"], 1)},
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "ingest_seconds": round(fit_s["ours"], 2),
        "seconds": round(time.perf_counter() - started, 1),
    }


def format_table(report: dict[str, Any]) -> str:
    d = report.get("data", {})
    scale = d.get("rating_scale")
    lines = [f"{report['dataset']}: {report['protocol']['users']} users, {report['protocol']['items']} items, "
             f"{report['protocol']['split']}" + (f"; ratings {scale[0]:g}-{scale[1]:g} "
                                                 f"({d.get('rating_scale_source')})" if scale else "")]
    skipped = d.get("skipped") or {}
    if skipped.get("rows"):
        why = "; ".join(f"{n} {r}" for r, n in sorted(skipped["by_reason"].items(), key=lambda kv: -kv[1]))
        lines.append(f"skipped {skipped['rows']} of {d['rows']} rows: {why}")
    lines.append(f"{'system':<12}{'nDCG@10':>9}{'recall@10':>11}{'MRR@10':>9}{'coverage':>10}{'fit s':>8}"
                 f"{'score s':>9}")
    for name, m in report["systems"].items():
        lines.append(f"{name:<12}{m['ndcg@10']:>9.4f}{m['recall@10']:>11.4f}{m['mrr']:>9.4f}{m['coverage']:>10.4f}"
                     f"{m.get('fit_s', 0):>8.1f}{m.get('score_s', 0):>9.1f}")
    if report.get("ours_vs_best_baseline"):
        lines.append(f"ours / best baseline ({report['best_baseline']}) nDCG@10: "
                     f"{report['ours_vs_best_baseline']:.2f}x")
    tuned = report["protocol"]["tuning"] != "none (configured values)"
    lines.append(("chosen on validation: " if tuned else "configured: ") + json.dumps(report["chosen"]))
    phases = report.get("phases_s", {})
    lines.append("wall time: " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
                 + f" (total {report['seconds']:.0f}s)")
    return "\n".join(lines)
