"""`Recommender`: "for you", "more like this" and trending, on top of an index generation and the state store.

    rec = Recommender(settings, StateDB(settings.state_db))
    rec.ingest([{"user_id": "u1", "doc_id": "fin-etf", "type": "like"}])
    rec.recommend(gen, "u1", k=10, domain="finance")      # -> RecommendationList
    rec.similar(gen, "fin-etf", k=5)
    rec.trending(gen, domain="medical")

Caches (all in memory, per process):
- the generation's documents as arrays (`CatalogView`), per generation id;
- the co-engagement/popularity model per generation, rebuilt from the event log when it changed (TTL);
- user profiles per (generation, user, domain filter), dropped as soon as that user has new events or a new
  profile (`StateDB.user_version`), so the next request sees them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from rag import events as events_mod
from rag.config import RecommendSettings
from rag.errors import Busy, NotFound
from rag.models.calibration import threshold as calibrated
from rag.recommend.candidates import (CatalogView, CoEngagementIndex, CoModel, coengagement_block,
                                      coengagement_scores, single_thread_blas, top_rows)
from rag.recommend.profile import UserProfile, build_profile
from rag.recommend.ranking import INTEREST_WEIGHTS, SIMILAR_WEIGHTS, blend, mmr, popularity_reason
from rag.state import StateDB

log = logging.getLogger(__name__)

Explainer = Callable[[dict[str, Any], dict[str, Any]], "str | None"]
TRENDING_POOL = 50
# A content reason ("because you read X", "matches your interest in Y") needs a cosine between the item and X or
# Y of at least the embedder's "reason_min_cosine" (rag.models.calibration). With MiniLM, 0.1: on the test corpus
# related short documents scored 0.1-0.3, unrelated ones -0.05-0.1.
MAX_PROFILES = 50_000


@dataclass
class Recommendation:
    doc_id: str
    title: str
    domain: str | None
    score: float
    reason: str
    blurb: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RecommendationList:
    items: list[Recommendation]
    strategy: str  # personalized | interests | trending | similar
    generation_id: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    user_id: str | None = None
    doc_id: str | None = None  # for similar()
    backend: str | None = None  # with explain: the generator backend asked to write the blurbs
    fallback: str | None = None  # with explain: why opening sentences replaced generated blurbs, when they did

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_params(cfg: RecommendSettings) -> tuple:
    return (cfg.half_life_days, cfg.interest_share, tuple(sorted(cfg.event_weights.items())), cfg.rating_weight,
            cfg.dwell_bonus_per_minute, cfg.dwell_bonus_max, cfg.order_decay, cfg.max_seeds, cfg.center_vectors)


def _key_of(v) -> tuple:
    if v is None or v == "" or v == []:
        return ()
    return (v,) if isinstance(v, str) else tuple(v)


class Recommender:
    def __init__(self, settings, state: StateDB):
        self.settings = settings
        self.state = state
        # Read at call time: replace it (msgspec.structs.replace) to try other weights without losing caches.
        self.cfg: RecommendSettings = getattr(settings, "recommend", None) or RecommendSettings()
        # Ratings are validated against, and normalized from, the configured scale (settings.events).
        self.rating_scale = events_mod.RatingScale.of(getattr(settings, "events", None))
        self.co = CoEngagementIndex(state)
        self._catalogs: OrderedDict[str, CatalogView] = OrderedDict()
        self._profiles: OrderedDict[tuple, tuple[int, UserProfile]] = OrderedDict()
        self._interests: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    # -- state --------------------------------------------------------------------------------------------
    def ingest(self, events: list[dict]) -> events_mod.IngestReport:
        """Validate and store events; the users' cached profiles are rebuilt on their next request."""
        return events_mod.ingest(self.state, events, rating_scale=self.rating_scale)

    # -- per-generation data ------------------------------------------------------------------------------
    def forget(self, user_id: str) -> None:
        """After the state database forgot a user: drop their profiles and every co-engagement model."""
        with self._lock:
            for key in [k for k in self._profiles if k[1] == user_id]:
                self._profiles.pop(key, None)
        self.co.invalidate()

    def catalog(self, snapshot, access: tuple[str, ...] | None = None) -> CatalogView:
        """The generation's catalogue, or (rag.access) the part a caller with these groups may see."""
        visible = snapshot.visible_doc_rows(access) if access is not None else None
        key = snapshot.id if visible is None else (snapshot.id, access)
        with self._lock:
            cat = self._catalogs.get(key)
            if cat is not None:
                self._catalogs.move_to_end(key)
                return cat
        cat = CatalogView(snapshot, visible, key)
        with self._lock:
            self._catalogs[key] = cat
            while len(self._catalogs) > 8:  # a few visibilities per generation, and the previous generation
                old, _ = self._catalogs.popitem(last=False)
                for key in [k for k in self._profiles if k[0] == old]:
                    self._profiles.pop(key, None)
        return cat

    def _embed_interests(self, snapshot) -> Callable[[list[str]], np.ndarray]:
        try:
            ident = snapshot.manifest.embedder.identity
        except AttributeError:
            ident = snapshot.id

        def embed(texts: list[str]) -> np.ndarray:
            out: list[np.ndarray | None] = []
            missing: list[str] = []
            with self._lock:
                for t in texts:
                    v = self._interests.get((ident, t))
                    out.append(v)
                    if v is None:
                        missing.append(t)
            if missing:
                vecs = np.asarray(snapshot.embedder.embed_queries(missing), dtype=np.float32)
                with self._lock:
                    for t, v in zip(missing, vecs):
                        self._interests[(ident, t)] = v
                    while len(self._interests) > 10_000:
                        self._interests.popitem(last=False)
                found = dict(zip(missing, vecs))
                out = [v if v is not None else found[t] for v, t in zip(out, texts)]
            return np.stack(out) if out else np.zeros((0, 0), np.float32)

        return embed

    def profile(self, snapshot, user_id: str, domain=None, access: tuple[str, ...] | None = None) -> UserProfile:
        cat = self.catalog(snapshot, access)
        key = (cat.key, user_id, _key_of(domain), profile_params(self.cfg))
        version = self.state.user_version(user_id)
        with self._lock:
            hit = self._profiles.get(key)
            if hit is not None and hit[0] == version:
                self._profiles.move_to_end(key)
                return hit[1]
        user = self.state.get_user(user_id)
        evs = self.state.user_events(user_id)
        rank_vectors = cat.rank_vectors(self.cfg.center_vectors)
        prof = build_profile(user_id, user, evs, row_of=cat.row_of, vectors=rank_vectors, doc_domains=cat.domains,
                             doc_languages=cat.languages, cfg=self.cfg, embed_interests=self._embed_interests(snapshot),
                             domain=list(_key_of(domain)) or None, scale=self.rating_scale,
                             vector_mean=cat.mean_vector if self.cfg.center_vectors else None)
        self._remember(key, version, prof)
        return prof

    def _remember(self, key: tuple, version: int, prof: UserProfile) -> None:
        with self._lock:
            self._profiles[key] = (version, prof)
            self._profiles.move_to_end(key)
            while len(self._profiles) > MAX_PROFILES:
                self._profiles.popitem(last=False)

    def warm(self, snapshot, user_ids: list[str] | None = None) -> int:
        """Build profiles (no domain filter) for many users with one read of the event log; returns how many."""
        cat = self.catalog(snapshot)
        self.co.get(cat, self.cfg)
        with self.state.reader() as cur:
            where, params = ("WHERE user_id IN (SELECT unnest(?::VARCHAR[]))", [list(user_ids)]) if user_ids \
                else ("", [])
            users = {r[0]: dict(zip(("user_id", "name", "interests", "domains", "language"), r)) for r in cur.execute(
                f"SELECT user_id, name, interests, domains, language FROM users {where}", params).fetchall()}
            rows = cur.execute(f"SELECT user_id, doc_id, type, value, dwell_s, ts FROM events {where} "
                               "ORDER BY user_id, ts, received_at", params).fetchall()
        grouped: dict[str, dict[str, list]] = {}
        for uid, doc_id, etype, value, dwell, ts in rows:
            g = grouped.get(uid)
            if g is None:
                g = grouped[uid] = {"doc_id": [], "type": [], "value": [], "dwell_s": [], "ts": []}
            g["doc_id"].append(doc_id)
            g["type"].append(etype)
            g["value"].append(value)
            g["dwell_s"].append(dwell)
            g["ts"].append(ts)
        ids = list(user_ids) if user_ids else sorted(set(grouped) | set(users))
        embed = self._embed_interests(snapshot)
        params_key = profile_params(self.cfg)
        empty = {"doc_id": [], "type": [], "value": [], "dwell_s": [], "ts": []}
        rank_vectors = cat.rank_vectors(self.cfg.center_vectors)
        vector_mean = cat.mean_vector if self.cfg.center_vectors else None
        for uid in ids:
            version = self.state.user_version(uid)
            prof = build_profile(uid, users.get(uid), grouped.get(uid, empty), row_of=cat.row_of,
                                 vectors=rank_vectors, doc_domains=cat.domains, cfg=self.cfg,
                                 doc_languages=cat.languages, embed_interests=embed, scale=self.rating_scale,
                                 vector_mean=vector_mean)
            self._remember((snapshot.id, uid, (), params_key), version, prof)
        return len(ids)

    # -- "for you" ----------------------------------------------------------------------------------------
    def recommend(self, snapshot, user_id: str, *, k: int = 10, domain: str | list[str] | None = None,
                  language=None, audience=None, exclude_seen: bool | None = None, explain: bool = False,
                  explainer: Explainer | None = None, access: tuple[str, ...] | None = None) -> RecommendationList:
        """Top-k documents for a user. strategy: personalized (has events on this generation's documents),
        interests (declared interests only), trending (nothing known: per requested or declared domain).
        An unknown user id is a new user, not an error. `exclude_seen` defaults to settings."""
        t0 = time.perf_counter()
        with single_thread_blas:
            result, prof, cat = self._recommend(snapshot, str(user_id), k, domain, language, audience, exclude_seen,
                                                access)
        if explain and explainer is not None and result.items:
            t1 = time.perf_counter()
            summary = prof.summary(cat.titles)
            summary["strategy"] = result.strategy
            many = getattr(explainer, "explain_many", None)
            if many is not None:  # one generator batch for the whole list
                blurbs, failure = _call_explain_many(many, snapshot, result.items, summary)
                for item, blurb in zip(result.items, blurbs):
                    item.blurb = blurb
                result.fallback = failure or getattr(explainer, "fallback", None)
            else:
                for item in result.items:
                    item.blurb = _call_explainer(explainer, snapshot, item, summary)
            result.timings_ms["explain"] = round((time.perf_counter() - t1) * 1e3, 3)
        result.timings_ms["total"] = round((time.perf_counter() - t0) * 1e3, 3)
        return result

    def _recommend(self, snapshot, user_id: str, k: int, domain, language, audience, exclude_seen, access=None
                   ) -> tuple[RecommendationList, UserProfile, CatalogView]:
        t0 = time.perf_counter()
        cfg = self.cfg
        exclude_seen = cfg.exclude_seen if exclude_seen is None else exclude_seen
        k = max(0, int(k))
        cat = self.catalog(snapshot, access)
        co = self.co.get(cat, cfg)
        prof = self.profile(snapshot, str(user_id), domain, access)
        t1 = time.perf_counter()

        allowed = cat.mask(domain, language, audience).copy()
        allowed[prof.dismissed] = False
        if exclude_seen:
            allowed[prof.seen] = False
        popularity = np.log1p(co.trending)

        if prof.has_history:
            strategy = "personalized"
            n = cfg.candidates
            rank_vectors = cat.rank_vectors(cfg.center_vectors)
            prof_scores = rank_vectors @ prof.vector if prof.vector is not None else np.zeros(cat.n, np.float32)
            co_scores = coengagement_scores(co, prof.seeds, prof.seed_weights)
            parts = [top_rows(co_scores, allowed, n, min_score=0.0),
                     top_rows(popularity, allowed, TRENDING_POOL, min_score=0.0)]
            if prof.vector is not None:
                parts.append(top_rows(prof_scores, allowed, n))
            cands = _union(parts)
            signals = {"profile": prof_scores[cands], "coengagement": co_scores[cands],
                       "popularity": popularity[cands]}
            weights = {"profile": cfg.weight_profile, "coengagement": cfg.weight_coengagement,
                       "popularity": cfg.weight_popularity}
            if prof.domain_share and cfg.weight_domain:
                share = prof.domain_share
                signals["domain"] = np.asarray([share.get(d, 0.0) for d in cat.domains[cands]])
                weights["domain"] = cfg.weight_domain
            if prof.language_share and cfg.weight_language:
                share = prof.language_share
                signals["language"] = np.asarray([share.get(x, 0.0) for x in cat.languages[cands]])
                weights["language"] = cfg.weight_language
        elif prof.interest_vectors is not None:
            strategy = "interests"
            isims = cat.vectors @ prof.interest_vectors.T  # n_docs x n_interests
            best = isims.max(axis=1)
            per = max(cfg.candidates // max(1, len(prof.interests)), k)
            parts = [top_rows(isims[:, j], allowed, per) for j in range(isims.shape[1])]
            parts.append(top_rows(popularity, allowed, TRENDING_POOL, min_score=0.0))
            cands = _union(parts)
            signals = {"interest": best[cands], "popularity": popularity[cands]}
            weights = dict(INTEREST_WEIGHTS)
        else:
            strategy = "trending"
            if not _key_of(domain) and prof.declared_domains:
                declared = allowed & cat.mask(prof.declared_domains, None, None)
                if declared.any():
                    allowed = declared
            items = self._trending_items(cat, co, allowed, k)
            t2 = time.perf_counter()
            return self._finish(snapshot, cat, prof, items, strategy, user_id, t0, t1, t2)

        t2 = time.perf_counter()
        score, contrib = blend(signals, weights)
        pool_n = min(len(cands), max(4 * k, 40))
        order = np.argsort(-score, kind="stable")
        if exclude_seen and len(prof.seen):
            order = self._without_copies_of_seen(cat, prof, cands, order, pool_n)
        order = order[:pool_n]
        picked = mmr(score[order], cat.vectors[cands[order]], k, cfg.mmr_lambda, dup_cos=cfg.near_duplicate_cosine,
                     title_keys=[cat.title_keys[r] for r in cands[order]])
        sel = order[picked]
        rows = cands[sel]
        reasons = self._reasons(cat, co, prof, rows, {name: c[sel] for name, c in contrib.items()}, strategy)
        items = [Recommendation(doc_id=cat.doc_ids[r], title=cat.titles[r], domain=cat.domains[r],
                                score=round(float(score[i]), 4), reason=reason)
                 for r, i, reason in zip(rows, sel, reasons)]
        if len(items) < k:  # a thin pool: fill with what is popular (or new) among the allowed documents
            rest = allowed.copy()
            rest[rows] = False
            items += self._trending_items(cat, co, rest, k - len(items))
        return self._finish(snapshot, cat, prof, items, strategy, user_id, t0, t1, t2)

    def _without_copies_of_seen(self, cat: CatalogView, prof: UserProfile, cands: np.ndarray, order: np.ndarray,
                                pool_n: int) -> np.ndarray:
        """Drop candidates that are copies of something the user has seen (same title, or a cosine above
        near_duplicate_cosine with one of the recent engagements): a reprint of what you read is not new."""
        seen_titles = prof.cache.get("seen_titles")
        if seen_titles is None:
            seen_titles = prof.cache["seen_titles"] = {cat.title_keys[r] for r in prof.seen} - {""}
        head = order[:pool_n * 2]
        rows = cands[head]
        keep = np.asarray([cat.title_keys[r] not in seen_titles for r in rows], dtype=bool)
        if len(prof.seeds):
            keep &= (cat.vectors[rows] @ cat.vectors[prof.seeds].T).max(axis=1) <= self.cfg.near_duplicate_cosine
        return np.concatenate([head[keep], order[pool_n * 2:]])

    def _finish(self, snapshot, cat, prof, items, strategy, user_id, t0, t1, t2
                ) -> tuple[RecommendationList, UserProfile, CatalogView]:
        t3 = time.perf_counter()
        timings = {"profile": (t1 - t0) * 1e3, "candidates": (t2 - t1) * 1e3, "rank": (t3 - t2) * 1e3}
        result = RecommendationList(items=items, strategy=strategy, generation_id=snapshot.id,
                                    timings_ms={k: round(v, 3) for k, v in timings.items()}, user_id=user_id)
        return result, prof, cat

    def _reasons(self, cat: CatalogView, co: CoModel, prof: UserProfile, rows: np.ndarray,
                 contrib: dict[str, np.ndarray], strategy: str) -> list[str]:
        if len(rows) == 0:
            return []
        names = list(contrib)
        stacked = np.stack([contrib[n] for n in names]) if names else np.zeros((1, len(rows)))
        dominant = [names[i] if names else "popularity" for i in np.argmax(stacked, axis=0)]
        seeds = prof.seeds
        seed_co = None
        seed_cos = None
        if len(seeds):
            seed_co = coengagement_block(co, seeds, rows) * prof.seed_weights[:, None]
            seed_cos = cat.vectors[seeds] @ cat.vectors[rows].T
            # Content reasons point at something the user liked, preferably in the same domain.
            seed_cos = np.where(prof.seed_positive[:, None], seed_cos, seed_cos - 2.0) if \
                prof.seed_positive.any() else seed_cos
            seed_domains = cat.domains[seeds]
            seed_languages = cat.languages[seeds]
        int_cos = cat.vectors[rows] @ prof.interest_vectors.T if prof.interest_vectors is not None else None
        out = []
        for j, (r, dom) in enumerate(zip(rows, dominant)):
            if dom == "popularity" or (dom == "coengagement" and (seed_co is None or seed_co[:, j].max() <= 0)):
                out.append(popularity_reason(cat.domains[r], co.week[r] > 0))
                continue
            if dom != "coengagement":
                best = max(float(int_cos[j].max()) if int_cos is not None else -1.0,
                           float(seed_cos[:, j].max()) if seed_cos is not None else -1.0)
                if best < calibrated(cat.embedder, "reason_min_cosine"):  # no honest content link to name
                    if co.trending[r] > 0:
                        out.append(popularity_reason(cat.domains[r], co.week[r] > 0))
                    else:
                        out.append(f"more from {cat.domains[r]}" if cat.domains[r] else "something new for you")
                    continue
            if dom == "interest" or (dom in ("profile", "domain", "language") and int_cos is not None and (
                    seed_cos is None or int_cos[j].max() > seed_cos[:, j].max())):
                if int_cos is not None:
                    out.append(f"matches your interest in {prof.interests[int(np.argmax(int_cos[j]))]}")
                    continue
            if seed_co is not None and dom == "coengagement":
                s = int(seeds[int(np.argmax(seed_co[:, j]))])
            elif seed_cos is not None:
                col = seed_cos[:, j]
                same = seed_domains == cat.domains[r]
                if same.any():
                    col = np.where(same, col, col - 4.0)
                same = seed_languages == cat.languages[r]
                if same.any():
                    col = np.where(same, col, col - 2.0)
                s = int(seeds[int(np.argmax(col))])
            else:
                out.append(popularity_reason(cat.domains[r], co.week[r] > 0))
                continue
            verb = "liked" if s in prof.liked else "read"
            out.append(f"because you {verb} {cat.titles[s]}")
        return out

    def _trending_items(self, cat: CatalogView, co: CoModel, allowed: np.ndarray, k: int) -> list[Recommendation]:
        if k <= 0:
            return []
        rows = list(top_rows(co.trending, allowed, k, min_score=0.0))
        items = []
        top = float(co.trending[rows[0]]) if rows else 1.0
        for r in rows:
            items.append(Recommendation(doc_id=cat.doc_ids[r], title=cat.titles[r], domain=cat.domains[r],
                                        score=round(float(co.trending[r]) / (top or 1.0), 4),
                                        reason=popularity_reason(cat.domains[r], co.week[r] > 0)))
        if len(rows) < k:  # nobody engaged with enough of these yet: newest first
            have = set(rows)
            for r in cat.date_order:
                if len(items) >= k:
                    break
                if allowed[r] and int(r) not in have:
                    where = f" in {cat.domains[r]}" if cat.domains[r] else ""
                    items.append(Recommendation(doc_id=cat.doc_ids[r], title=cat.titles[r], domain=cat.domains[r],
                                                score=0.0, reason=f"new{where}"))
        return items

    # -- trending -----------------------------------------------------------------------------------------
    def trending(self, snapshot, *, domain=None, k: int = 10, language=None, audience=None,
                 access: tuple[str, ...] | None = None) -> RecommendationList:
        """Most engaged-with documents lately (decayed popularity), newest documents when there are no events."""
        with single_thread_blas:
            return self._trending(snapshot, domain, k, language, audience, access)

    def _trending(self, snapshot, domain, k, language, audience, access=None) -> RecommendationList:
        t0 = time.perf_counter()
        cat = self.catalog(snapshot, access)
        co = self.co.get(cat, self.cfg)
        t1 = time.perf_counter()
        items = self._trending_items(cat, co, cat.mask(domain, language, audience), max(0, int(k)))
        t2 = time.perf_counter()
        return RecommendationList(items=items, strategy="trending", generation_id=snapshot.id,
                                  timings_ms={"candidates": round((t1 - t0) * 1e3, 3),
                                              "rank": round((t2 - t1) * 1e3, 3),
                                              "total": round((t2 - t0) * 1e3, 3)})

    # -- "more like this" ---------------------------------------------------------------------------------
    def similar(self, snapshot, doc_id: str, *, k: int = 10, domain=None, language=None, audience=None,
                access: tuple[str, ...] | None = None) -> RecommendationList:
        """"More like this": embedding neighbours blended with co-engagement, without the document itself and
        its near-duplicates (cosine > near_duplicate_cosine or the same title). Unknown doc id: NotFound."""
        with single_thread_blas:
            return self._similar(snapshot, doc_id, k, domain, language, audience, access)

    def _similar(self, snapshot, doc_id, k, domain, language, audience, access=None) -> RecommendationList:
        t0 = time.perf_counter()
        cat = self.catalog(snapshot, access)  # a document the caller may not see is unknown here
        row = cat.row_of.get(doc_id)
        if row is None:
            raise NotFound(f"unknown document id {doc_id!r}: generation {snapshot.id} has no such document",
                           field="doc_id")
        cfg = self.cfg
        co = self.co.get(cat, cfg)
        v = cat.vectors[row]
        cos = cat.vectors @ v
        co_row = coengagement_scores(co, np.asarray([row]), np.ones(1))
        allowed = cat.mask(domain, language, audience).copy()
        allowed[row] = False
        allowed &= cos <= cfg.near_duplicate_cosine
        own_title = cat.title_keys[row]
        if own_title:
            allowed &= np.asarray([t != own_title for t in cat.title_keys])
        cands = _union([top_rows(cos, allowed, cfg.candidates), top_rows(co_row, allowed, cfg.candidates, 0.0)])
        t2 = time.perf_counter()
        score, contrib = blend({"similarity": cos[cands], "coengagement": co_row[cands]}, SIMILAR_WEIGHTS)
        k = max(0, int(k))
        pool_n = min(len(cands), max(4 * k, 40))
        order = np.argsort(-score, kind="stable")[:pool_n]
        picked = mmr(score[order], cat.vectors[cands[order]], k, cfg.mmr_lambda, dup_cos=cfg.near_duplicate_cosine,
                     title_keys=[cat.title_keys[r] for r in cands[order]])
        title = cat.titles[row]
        items = []
        for i in order[picked]:
            r = cands[i]
            # Said when co-engagement is strong for this item (at least half the strongest), which is
            # literally true and more telling than "similar" when both hold.
            by_co = "coengagement" in contrib and contrib["coengagement"][i] >= 0.5 * SIMILAR_WEIGHTS["coengagement"]
            reason = f"readers of {title} also read this" if by_co else f"similar to {title}"
            items.append(Recommendation(doc_id=cat.doc_ids[r], title=cat.titles[r], domain=cat.domains[r],
                                        score=round(float(score[i]), 4), reason=reason))
        t3 = time.perf_counter()
        return RecommendationList(items=items, strategy="similar", generation_id=snapshot.id, doc_id=doc_id,
                                  timings_ms={"candidates": round((t2 - t0) * 1e3, 3),
                                              "rank": round((t3 - t2) * 1e3, 3),
                                              "total": round((t3 - t0) * 1e3, 3)})


def _union(parts: list[np.ndarray]) -> np.ndarray:
    """Rows of several best-first lists, each row once, in first-seen order."""
    if not parts:
        return np.zeros(0, dtype=np.int64)
    allr = np.concatenate(parts) if len(parts) > 1 else parts[0]
    _, first = np.unique(allr, return_index=True)
    return allr[np.sort(first)].astype(np.int64)


def _explained_doc(snapshot, item: Recommendation) -> dict[str, Any]:
    doc = snapshot.document(item.doc_id) or {"doc_id": item.doc_id, "title": item.title, "domain": item.domain}
    return {**doc, "reason": item.reason}


def _call_explain_many(many, snapshot, items: list[Recommendation], summary: dict[str, Any]
                       ) -> tuple[list[str | None], str | None]:
    """(blurbs, why there are none)."""
    try:
        blurbs = list(many([_explained_doc(snapshot, it) for it in items], summary))
    except Busy:
        raise  # as for answers and summaries: all generator slots taken is the caller's 503, not a fallback
    except Exception as e:  # noqa: BLE001 - a blurb is decoration; the recommendations stand without it
        log.warning("explainer failed for %d items", len(items), exc_info=True)
        return [None] * len(items), f"blurbs failed: {type(e).__name__}: {e}"
    return [_clean_blurb(b) for b in blurbs], None


def _call_explainer(explainer: Explainer, snapshot, item: Recommendation, summary: dict[str, Any]) -> str | None:
    try:
        blurb = explainer(_explained_doc(snapshot, item), summary)
    except Busy:
        raise
    except Exception:  # noqa: BLE001 - a blurb is decoration; the recommendation stands without it
        log.warning("explainer failed for %s", item.doc_id, exc_info=True)
        return None
    return _clean_blurb(blurb)


def _clean_blurb(blurb) -> str | None:
    """One line of text, or None for a missing or blank blurb."""
    return (" ".join(str(blurb).split()) or None) if blurb is not None else None
