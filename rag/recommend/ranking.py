"""Blending candidate signals, the MMR diversity re-rank, and reasons.

Score of a candidate (each signal min-max normalized over the candidate pool, so weights are comparable):

    personalized:  weight_profile * cos(profile, doc)         (default 0.15)
                 + weight_coengagement * co-engagement score  (default 1.0)
                 + weight_popularity * log1p(trending)        (default 0.05)
                 + weight_domain * share of the user's positive engagement in the doc's domain (default 0.1)
                 + weight_language * the same for the doc's language, half of it the declared language (0.3)
    interests:     1.0 * max cos(interest, doc) + 0.2 * log1p(trending)   (new user with declared interests)
    trending:      log1p(trending), newest documents when nobody engaged with anything yet
    similar:       0.6 * cos(doc, candidate) + 0.4 * co-engagement with the doc

The personalized weights were chosen on a validation split of MovieLens-100K *training* data (the latest
training interaction of each user held out; the test holdout is never looked at): see
`evaluation.recommend` (`rag eval recommend --tune` reruns the search). On that data co-engagement carries
most of the signal; the embedding profile and popularity each add a little and, more importantly, keep the
list sensible where co-engagement is thin (new documents, users with one or two events).

MMR: greedily pick argmax  lambda * relevance - (1 - lambda) * max cos(candidate, already picked), with
relevance the blended score normalized to [0, 1] over the pool; near-duplicates of an already picked item
(cosine > near_duplicate_cosine, or the same title) are skipped outright.
"""

from __future__ import annotations

import numpy as np

INTEREST_WEIGHTS = {"interest": 1.0, "popularity": 0.2}
SIMILAR_WEIGHTS = {"similarity": 0.6, "coengagement": 0.4}


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def blend(signals: dict[str, np.ndarray], weights: dict[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted sum of min-max normalized signals; returns the score and each signal's contribution."""
    parts: dict[str, np.ndarray] = {}
    total = None
    for name, w in weights.items():
        if w == 0 or name not in signals:
            continue
        c = w * minmax(signals[name])
        parts[name] = c
        total = c if total is None else total + c
    if total is None:
        n = len(next(iter(signals.values()))) if signals else 0
        total = np.zeros(n)
    return total, parts


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, lam: float, *, dup_cos: float = 0.98,
        title_keys: list[str] | None = None) -> list[int]:
    """Indices into `scores` / `vectors` (the pool), in MMR order; near-duplicates of picked items skipped."""
    n = len(scores)
    if n == 0 or k <= 0:
        return []
    rel = minmax(scores) if n > 1 else np.ones(1)
    sims = vectors @ vectors.T if n > 1 else np.ones((1, 1), dtype=np.float32)
    picked: list[int] = []
    max_sim = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    seen_titles: set[str] = set()
    while len(picked) < k and available.any():
        if picked and lam < 1.0:
            value = lam * rel - (1.0 - lam) * np.maximum(max_sim, 0.0)
        else:
            value = rel.copy() if lam >= 1.0 or not picked else rel
        value = np.where(available, value, -np.inf)
        i = int(np.argmax(value))
        available[i] = False
        if title_keys is not None and title_keys[i]:
            if title_keys[i] in seen_titles:
                continue
        if picked and max_sim[i] > dup_cos:
            continue
        picked.append(i)
        if title_keys is not None and title_keys[i]:
            seen_titles.add(title_keys[i])
        max_sim = np.maximum(max_sim, sims[i])
    return picked


def popularity_reason(domain: str | None, this_week: bool) -> str:
    if this_week:
        return f"popular in {domain} this week" if domain else "popular this week"
    return f"popular in {domain}" if domain else "popular with other readers"
