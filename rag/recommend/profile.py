"""User profiles: what a user engaged with, turned into vectors and seeds.

Per event, a weight (settings.recommend): view 1, click 1.5, like 3, share 3, bookmark 3, dismiss -4,
rating `rating_weight` (3) x the rating's place on its scale (settings.events.rating_scale, rag.events.RatingScale:
-1 at the minimum, 0 at the neutral point, +1 at the maximum; on 1-5 stars (value - 3) * 1.5, so 1 and 2 count
against), plus a dwell bonus of 1 per minute of `dwell_s` up to 2. A rating in the top quarter of the scale (4 of 5
stars and up) is a "like" for reasons.
Each event is decayed by 0.5 ** (age / half_life) with the age measured from the user's latest event: the
profile vector is normalized, so its direction is the same as with ages from "now", and a user who comes back
after a year still has one (ages from now would underflow to zero). The share of declared interests is fixed
(`interest_share`) instead of growing as the events age.

- `vector`: normalized sum over documents of (decayed net weight x document vector), blended with the mean of
  the declared-interest vectors. Per domain on request: only events on that domain's documents.
- `seeds`: the documents the user engaged with (any event but dismiss), most recent first, weighted by time
  decay x `order_decay` ** (steps back from the latest engagement); they drive co-engagement candidates.
- `seen` (any event) and `dismissed` (any dismiss) rows, for exclusion.
Events on documents the generation does not hold are skipped here (and kept in the state database).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import numpy as np

from rag.config import RecommendSettings
from rag.events import DEFAULT_SCALE, RatingScale

DAY_S = 86400.0


@dataclass
class UserProfile:
    user_id: str
    known_user: bool = False
    name: str | None = None
    interests: list[str] = field(default_factory=list)
    declared_domains: list[str] = field(default_factory=list)
    language: str | None = None
    vector: np.ndarray | None = None  # events + interests, normalized
    event_vector: np.ndarray | None = None
    interest_vectors: np.ndarray | None = None  # one row per interest
    seeds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # doc rows, most recent first
    seed_weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    seed_positive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # net weight > 0, per seed
    liked: set[int] = field(default_factory=set)  # rows with a like/share/bookmark or a rating >= 4
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dismissed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    n_events: int = 0  # all of the user's events
    n_events_here: int = 0  # those on documents of this generation
    top_domains: list[str] = field(default_factory=list)
    domain_share: dict[str, float] = field(default_factory=dict)  # share of positive decayed weight per domain
    language_share: dict[str, float] = field(default_factory=dict)  # the same per language, blended with declared
    cache: dict[str, Any] = field(default_factory=dict)  # derived data the recommender memoizes per profile

    @property
    def has_history(self) -> bool:
        return len(self.seeds) > 0 or self.event_vector is not None

    def summary(self, titles: list[str]) -> dict[str, Any]:
        """What an explainer gets to know about the user: no ids of other users, no raw events."""
        return {"user_id": self.user_id, "name": self.name, "interests": list(self.interests),
                "domains": list(self.declared_domains) or list(self.top_domains),
                "recent_titles": [titles[int(r)] for r in self.seeds[:5]], "events": self.n_events_here}


LIKED_RATING = 0.5  # normalized rating (rag.events.RatingScale.normalize) from which a rating counts as a like


def event_weight(etype: str, value: float | None, dwell_s: float | None, cfg: RecommendSettings,
                 scale: RatingScale = DEFAULT_SCALE) -> float:
    if etype == "rating":
        w = (scale.normalize(value) if value is not None else 0.0) * cfg.rating_weight
    else:
        w = float(cfg.event_weights.get(etype, 0.0))
    if dwell_s and etype != "dismiss":
        w += min(cfg.dwell_bonus_max, dwell_s / 60.0 * cfg.dwell_bonus_per_minute)
    return w


def _ts_seconds(ts: Any) -> float:
    if isinstance(ts, datetime):
        return ts.timestamp() if ts.tzinfo else (ts - datetime(1970, 1, 1)).total_seconds()
    return float(ts)


def build_profile(user_id: str, user: dict[str, Any] | None, events: dict[str, list], *, row_of: dict[str, int],
                  vectors: np.ndarray, doc_domains: np.ndarray, cfg: RecommendSettings,
                  doc_languages: np.ndarray | None = None,
                  embed_interests: Callable[[list[str]], np.ndarray] | None,
                  domain: list[str] | None = None, scale: RatingScale = DEFAULT_SCALE,
                  vector_mean: np.ndarray | None = None) -> UserProfile:
    """`events`: the user's events as columns (doc_id, type, value, dwell_s, ts), any order. `vectors` are
    the vectors the profile is scored with; when they are centred (CatalogView.rank_vectors), `vector_mean` is
    the mean they were centred by, and the declared interests are moved the same way before they blend in."""
    p = UserProfile(user_id=user_id, known_user=user is not None)
    if user:
        p.name = user.get("name")
        p.interests = list(user.get("interests") or [])
        p.declared_domains = list(user.get("domains") or [])
        p.language = user.get("language")
    doc_ids = events.get("doc_id") or []
    p.n_events = len(doc_ids)

    rows: list[int] = []
    weights: list[float] = []
    times: list[float] = []
    types: list[str] = []
    rated: list[float] = []  # normalized rating, 0 for other events
    for doc_id, etype, value, dwell, ts in zip(doc_ids, events["type"], events["value"], events["dwell_s"],
                                               events["ts"]):
        r = row_of.get(doc_id)
        if r is None:
            continue  # a document this generation does not have
        rows.append(r)
        weights.append(event_weight(etype, value, dwell, cfg, scale))
        rated.append(scale.normalize(value) if etype == "rating" and value is not None else 0.0)
        times.append(_ts_seconds(ts))
        types.append(etype)
    p.n_events_here = len(rows)

    if rows:
        r_arr = np.asarray(rows, dtype=np.int64)
        w_arr = np.asarray(weights, dtype=np.float64)
        t_arr = np.asarray(times, dtype=np.float64)
        ty_arr = np.asarray(types)
        half_life = max(cfg.half_life_days, 1e-6) * DAY_S
        decay = np.power(0.5, (t_arr.max() - t_arr) / half_life)

        p.seen = np.unique(r_arr)
        dis = ty_arr == "dismiss"
        p.dismissed = np.unique(r_arr[dis])
        liked = np.isin(ty_arr, ("like", "share", "bookmark")) | (
            (ty_arr == "rating") & (np.asarray(rated) >= LIKED_RATING))
        p.liked = set(int(x) for x in np.unique(r_arr[liked]))

        # Net decayed weight per document.
        uniq, inv = np.unique(r_arr, return_inverse=True)
        net = np.zeros(len(uniq))
        np.add.at(net, inv, w_arr * decay)

        # Domains the user engages with most (for summaries and cold-ish fallbacks).
        pos = net > 0
        if pos.any():
            doms: dict[str, float] = {}
            for r, w in zip(uniq[pos], net[pos]):
                d = doc_domains[r]
                if d:
                    doms[d] = doms.get(d, 0.0) + float(w)
            p.top_domains = [d for d, _ in sorted(doms.items(), key=lambda kv: -kv[1])]
            total = sum(doms.values())
            if total > 0:
                p.domain_share = {d: w / total for d, w in doms.items()}
            if doc_languages is not None:
                langs: dict[str, float] = {}
                for r, w in zip(uniq[pos], net[pos]):
                    lang = doc_languages[r]
                    if lang:
                        langs[lang] = langs.get(lang, 0.0) + float(w)
                total = sum(langs.values())
                if total > 0:
                    p.language_share = {k: w / total for k, w in langs.items()}

        use = np.ones(len(uniq), dtype=bool)
        if domain:
            in_domain = np.isin(doc_domains[uniq].astype(object), domain)
            if (in_domain & (net != 0)).any():  # per-domain profile when the user has history there
                use = in_domain
        if (net[use] != 0).any():
            v = net[use].astype(np.float32) @ vectors[uniq[use]]
            n = float(np.linalg.norm(v))
            if n > 1e-9:
                p.event_vector = (v / n).astype(np.float32)

        # Co-engagement seeds: engaged (non-dismiss) and not dismissed, most recent engagement first.
        eng = ~dis
        if eng.any():
            last_t: dict[int, float] = {}
            for r, t in zip(r_arr[eng], t_arr[eng]):
                if t >= last_t.get(int(r), -np.inf):
                    last_t[int(r)] = t
            dismissed = set(int(x) for x in p.dismissed)
            order = sorted((r for r in last_t if r not in dismissed), key=lambda r: -last_t[r])[:cfg.max_seeds]
            if order:
                seeds = np.asarray(order, dtype=np.int64)
                st = np.asarray([last_t[r] for r in order])
                w = np.power(0.5, (st[0] - st) / half_life) * np.power(cfg.order_decay, np.arange(len(order)))
                p.seeds = seeds
                p.seed_weights = w.astype(np.float32)
                net_of = dict(zip(uniq.tolist(), net.tolist()))
                p.seed_positive = np.asarray([net_of.get(r, 0.0) > 0 for r in order], dtype=bool)

    if p.language:  # a declared language counts as much as everything read
        declared = {p.language: 1.0}
        p.language_share = {k: 0.5 * declared.get(k, 0.0) + 0.5 * p.language_share.get(k, 0.0)
                            for k in set(declared) | set(p.language_share)} if p.language_share else declared
    if p.interests and embed_interests is not None:
        iv = embed_interests(p.interests)
        if len(iv):
            p.interest_vectors = iv
    parts: list[tuple[np.ndarray, float]] = []
    if p.event_vector is not None:
        parts.append((p.event_vector, 1.0 - cfg.interest_share if p.interest_vectors is not None else 1.0))
    if p.interest_vectors is not None:
        mean = p.interest_vectors.mean(axis=0)
        if vector_mean is not None:
            mean = mean - vector_mean
        mean = mean / (np.linalg.norm(mean) or 1.0)
        parts.append((mean, cfg.interest_share if p.event_vector is not None else 1.0))
    if parts:
        v = sum(w * vec for vec, w in parts)
        n = float(np.linalg.norm(v))
        if n > 1e-9:
            p.vector = (v / n).astype(np.float32)
    return p
