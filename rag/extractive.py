"""The extractive backend: answers and summaries made of units copied from the passages, with citations.

It needs no generative model, so it is always available: it is the fallback whenever a generator fails or
writes something the checks reject, and a backend of its own (the CPU default: see README, Answers).

Answers: the unit answer selection ranked first (rag.answer_select): one sentence, list item or table row (with
its header), cited. A list, steps or comparison question, or a unit that introduces a list ("... if:"), takes the
neighbouring items of the same list too, up to LIST_WORDS. Summaries: centroid selection (sentences closest to
the mean meaning of the text, earlier sentences slightly preferred, near-duplicates penalized MMR-style) within a
word budget.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import rjieba

from rag.answer_units import AnswerUnit
from rag.grounding import Evidence, Passage, content_terms

MMR_LAMBDA = 0.7
LIST_WORDS = 70  # a list answer stops adding items at this many words
SIBLING_MARGIN = 0.3  # selector logits: closer than this, two sibling rows both answer
SIBLING_WORDS = 45

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")


@dataclass
class Scored:
    n: int  # passage number
    index: int  # sentence position in its passage
    text: str
    score: float


@dataclass
class Extract:
    text: str
    picks: list[Scored]


def count_words(text: str) -> int:
    """Words as a reader counts them: Latin words, and jieba words inside Chinese runs."""
    cjk = _CJK_RUN.findall(text)
    latin = _LATIN_WORD.findall(_CJK_RUN.sub(" ", text))
    return len(latin) + sum(len(rjieba.cut(run)) for run in cjk)


def cite(sentence: str, n: int) -> str:
    """`sentence [n].`: the marker goes before the final punctuation, as a reader expects it."""
    m = re.search(r"[.!?。！？；]+$", sentence)  # after a closing quote the marker simply follows
    sep = "" if _CJK_RUN.search(sentence[-3:]) else " "
    if m:
        return f"{sentence[:m.start()]}{sep}[{n}]{sentence[m.start():]}"
    return f"{sentence}{sep}[{n}]"


def join_sentences(parts: list[str]) -> str:
    out = ""
    for p in parts:
        # Chinese sentences run on without a space; Latin ones need one.
        out += p if not out or _CJK_RUN.match(p[:1]) else " " + p
    return out


def extractive_answer(selection, evidence: Evidence) -> Extract:
    """The answer of the best unit of `selection` (rag.answer_select.Selection), cited, in reading order."""
    if not selection.ranked:
        return Extract("", [])
    best = selection.ranked[0]
    picks = [best.unit]
    if selection.question.wants_list or best.unit.text.rstrip().endswith((":", "：")):
        picks = _with_neighbours(best.unit, evidence)
    elif len(selection.ranked) > 1 and _close_sibling(best, selection.ranked[1]):
        picks = sorted([best.unit, selection.ranked[1].unit], key=lambda u: u.index)
    scored = [Scored(u.n, u.index, u.text, best.score) for u in picks]
    if len(picks) > 1 and all(u.kind in ("row", "item") for u in picks[1:]):
        # A list reads as a list: its rows and items one per line, each cited.
        return Extract("\n".join(cite(u.text, u.n) for u in picks), scored)
    return Extract(join_sentences([cite(u.text, u.n) for u in picks]), scored)


def _close_sibling(best, second) -> bool:
    """Two rows of one table (or items of one list) the selector can hardly tell apart ("adults": 18-60 years
    and over 60) both answer: the reader sees the two facts side by side rather than a coin toss."""
    a, b = best.unit, second.unit
    return (a.n == b.n and a.block == b.block and a.kind == b.kind and a.kind in ("row", "item")
            and best.score - second.score < SIBLING_MARGIN
            and count_words(a.text) + count_words(b.text) <= SIBLING_WORDS)


def _with_neighbours(best: AnswerUnit, evidence: Evidence) -> list[AnswerUnit]:
    """The unit, plus the items or rows it introduces (a lead-in ending in ':') or the other items of its list,
    in reading order. Past LIST_WORDS each item is cut to its label ("Content: ..." -> "Content"), so a long
    list still shows every member."""
    units = evidence.units[best.n].units
    if best.text.rstrip().endswith((":", "：")):
        lead = best.text.rstrip(" :：")
        members = [u for u in units[best.index + 1:] if u.answers and (
            u.block == best.block or lead in u.context or (u.block == best.block + 1 and u.kind in ("item", "row")))]
    elif best.kind == "item":
        members = [u for u in units if u.block == best.block and u.answers and u.kind == "item"]
    else:
        return [best]
    members = [u for u in members if u is not best]
    if count_words(best.text) + sum(count_words(u.text) for u in members) > LIST_WORDS:
        members = [_labelled(u) for u in members]
    out, words = [best], count_words(best.text)
    # Closest to the best unit first, so a list too long even as labels is cut around what answered.
    for u in sorted(members, key=lambda u: abs(u.index - best.index)):
        size = count_words(u.text)
        if words + size > LIST_WORDS:
            break
        out.append(u)
        words += size
    return sorted(out, key=lambda u: u.index)


_LABEL_END = re.compile(r"\s*(?:[:：;；]|\s[—–-]\s)")


def _labelled(u: AnswerUnit) -> AnswerUnit:
    """The item's label: what precedes its first ':' (or ' — '), a row's first cell, when that is short."""
    m = _LABEL_END.search(u.text)
    head = u.text[:m.start()] if m else u.text
    if u.kind == "row" and ": " in head:
        head = head.split(": ", 1)[1]
    if not m or count_words(head) > 8:
        return u
    return dataclasses.replace(u, text=head.strip())


def extractive_summary(passages: list[Passage], *, max_words: int, style: str = "brief",
                       evidence: Evidence | None = None, embedder=None, query: str | None = None) -> Extract:
    """Centroid sentence selection within `max_words`, in document order, each sentence cited."""
    evidence = evidence or Evidence(passages, embedder)
    cands: list[Scored] = []
    seen: set[str] = set()
    for n, pu in evidence.units.items():
        for i, unit in enumerate(pu.units):
            key = " ".join(sorted(pu.terms[i]))
            # Overlapping chunks repeat sentences; fragments, questions, table rows and "...:" lead-ins
            # (whose list would not follow) make poor summary sentences.
            text = unit.text.rstrip()
            if (key in seen or len(pu.terms[i]) < 4 or not unit.answers or unit.kind == "row"
                    or text.endswith((":", "："))):
                continue
            seen.add(key)
            cands.append(Scored(n, i, unit.text, 0.0))
    if not cands:
        return Extract("", [])
    vecs = _candidate_vectors(evidence, cands)
    centroid = vecs.mean(axis=0)
    centroid /= np.linalg.norm(centroid) or 1.0
    relevance = vecs @ centroid
    if query and evidence.embedder is not None:
        relevance = 0.5 * relevance + 0.5 * (vecs @ evidence.text_vector(query))
    position = np.array([1.0 / (1.0 + k / 10.0) for k in range(len(cands))])  # leads carry the gist
    relevance = relevance + 0.1 * position

    chosen: list[int] = []
    words = 0
    rest = list(range(len(cands)))
    while rest:
        redundancy = (vecs[rest] @ vecs[chosen].T).max(axis=1) if chosen else np.zeros(len(rest))
        scores = MMR_LAMBDA * relevance[rest] - (1 - MMR_LAMBDA) * redundancy
        best = rest.pop(int(np.argmax(scores)))
        size = count_words(cands[best].text)
        if words + size > max_words:
            if not chosen:  # even the best sentence is too long: keep its first max_words words
                cands[best].text = _truncate_words(cands[best].text, max_words)
                chosen.append(best)
            continue
        chosen.append(best)
        words += size
    for i in chosen:
        cands[i].score = float(relevance[i])
    picks = sorted((cands[i] for i in chosen), key=lambda s: (s.n, s.index))
    lines = [cite(p.text, p.n) for p in picks]
    text = "\n".join(f"- {line}" for line in lines) if style == "bullets" else join_sentences(lines)
    return Extract(text, picks)


def _candidate_vectors(evidence: Evidence, cands: list[Scored]) -> np.ndarray:
    vectors = evidence.unit_vectors([(c.n, c.index) for c in cands])
    if vectors is not None:
        return vectors
    # No embedder: bag-of-terms vectors, so the same centroid/MMR code still ranks sensibly.
    vocab: dict[str, int] = {}
    rows = [content_terms(c.text) for c in cands]
    for terms in rows:
        for t in terms:
            vocab.setdefault(t, len(vocab))
    m = np.zeros((len(cands), max(len(vocab), 1)), dtype=np.float32)
    for r, terms in enumerate(rows):
        for t in terms:
            m[r, vocab[t]] = 1.0
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)


def _truncate_words(text: str, max_words: int) -> str:
    if _CJK_RUN.search(text):
        pieces = rjieba.cut(text)
        return "".join(pieces[:max_words]).rstrip() + "…"
    return " ".join(text.split()[:max_words]).rstrip(",;:") + "…"
