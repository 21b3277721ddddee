"""Ranking metrics with the conventions of trec_eval / BEIR (linear gains for nDCG), and answer-text metrics:
SQuAD v1.1's exact match and F1 (its official normalization), "the answer holds the gold span", and the figure
normalization that TAT-QA's numeric answers need."""

from __future__ import annotations

import collections
import math
import re
import string
import unicodedata


def ndcg_at_k(ranked: list[str], qrels: dict[str, int], k: int = 10) -> float:
    dcg = sum(qrels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: list[str], qrels: dict[str, int], k: int) -> float:
    relevant = {d for d, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: list[str], qrels: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if qrels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    xs = sorted(values)
    idx = min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))
    return xs[idx]


# --- SQuAD v1.1 metrics (the official evaluate-v1.1.py normalization) ---------------------------------------

def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def contains_answer(prediction: str, golds: list[str]) -> float:
    """Whether a gold answer occurs in the prediction, word-aligned after normalization. EM and F1 punish the
    whole-sentence answers of the extractive backend however right they are; this says whether the answer is
    in what the reader gets."""
    pred = f" {normalize_answer(prediction)} "
    return float(any(f" {g} " in pred for g in (normalize_answer(x) for x in golds) if g))


def f1_score(prediction: str, golds: list[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        common = sum((collections.Counter(p) & collections.Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(f1(prediction, g) for g in golds)


# --- answer text metrics -------------------------------------------------------------------------------------

_SCALE_WORDS = ("thousand", "million", "billion", "percent")
_PUNCT = (set(string.punctuation) | set("，。、；：？！「」『』（）《》【】“”‘’…～~")) - {"."}
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def normalize_figures(text: str) -> str:
    """For "does the answer hold this span": thousands separators, currency signs, %, scale words and the
    spacing around them do not matter ("$1,496.5 million" == "1496.5"); a trailing ".0" does not either; each
    Chinese character is a word of its own, so "5年以上2.6%" holds "2.6%"."""
    s = unicodedata.normalize("NFKC", text).lower().replace("−", "-").replace("–", "-").replace("—", "-")
    s = _CJK_CHAR.sub(lambda m: f" {m.group(0)} ", s)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    s = re.sub(r"[$€£¥%]", " ", s)
    s = re.sub(r"\b(" + "|".join(_SCALE_WORDS) + r")s?\b", " ", s)
    s = re.sub(r"(?<=\d)\.0+\b", "", s)
    s = re.sub(r"\(\s*(\d[\d.]*)\s*\)", r"-\1", s)  # (12.6) is how a report writes -12.6
    s = "".join(" " if ch in _PUNCT and ch not in "-" else ch for ch in s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def holds(answer: str, gold: str) -> bool:
    """Whether `answer` contains `gold`, word-aligned, after normalizing figures."""
    g = normalize_figures(gold)
    return bool(g) and f" {g} " in f" {normalize_figures(answer)} "
