"""The extractive backend: answers and summaries made of sentences copied from the passages, with citations.

It needs no generative model, so it is always available: it is the fallback whenever a generator fails or
writes something the checks reject, and a backend of its own.

Answers: every passage sentence is scored against the question by idf-weighted overlap of content words
(the generation's own BM25 idf, so rare words such as names and numbers dominate), re-ranked by the cosine of
the generation's embedder for the few best candidates; the best sentence answers a factoid question, up to
three close seconds join it for how/why/list questions. Summaries: centroid selection (sentences closest to the mean meaning of the text,
earlier sentences slightly preferred, near-duplicates penalized MMR-style) within a word budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import rjieba

from rag.grounding import Evidence, Passage, content_terms, embedder_fits
from rag.text import detect_language

OVERLAP_WEIGHT = 0.5  # the rest is the embedding cosine
MULTI_SENTENCE_RATIO = 0.85  # a second/third sentence joins only when nearly as good as the best
MAX_ANSWER_SENTENCES = 3
MMR_LAMBDA = 0.7
# Answer candidates (best by words) whose embedding is computed: embedding sentences costs ~50 ms each on a
# CPU core and the cosine mostly re-orders near ties, so a CPU embeds only the first few.
EMBED_TOP = {"cuda": 16, "cpu": 4}
LEAD_IN_WORDS = 60  # a chosen "... as follows:" sentence brings the list items after it, up to this many words

_MULTI = re.compile(
    r"^\s*(why|how (?!many|much|long|old|far|often|big|large|tall)|explain|describe|list|compare|summari[sz]e"
    r"|what (should|can|do)|which steps)\b|为什么|如何|怎么|怎样|哪些", re.IGNORECASE)
_QUESTION_END = re.compile(r"[?？]\s*$")
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


def term_weights(gen, terms: set[str]) -> dict[str, float]:
    """BM25 idf of `terms` in the generation.

    A term the corpus never saw weighs as much as the question's rarest seen term: it is evidence of an
    off-topic question, but jieba's search mode also emits fragments no corpus holds ("本有" of "错题本有"),
    and one such fragment must not sink a question. With no seen term at all, the corpus-wide maximum applies.
    """
    if gen is None or not terms:
        return {t: 1.0 for t in terms}
    rows = gen.sql("SELECT term, idf FROM terms WHERE term IN (SELECT unnest(?::VARCHAR[]))", [sorted(terms)])
    found = {t: float(idf) for t, idf in rows.fetchall()}
    unseen = max(found.values(), default=math.log(1 + (max(gen.kw_n, 1) + 0.5) / 0.5))
    return {t: found.get(t, unseen) for t in terms}


def keyword_coverage(terms: set[str], weights: dict[str, float], text_terms: set[str]) -> float:
    """Share of the question's idf mass that a text contains."""
    total = sum(weights.get(t, 1.0) for t in terms)
    return sum(weights.get(t, 1.0) for t in terms & text_terms) / total if total else 0.0


def rank_sentences(question: str, evidence: Evidence, weights: dict[str, float]) -> list[Scored]:
    """Statements (not questions) of the passages, best first. Only the EMBED_TOP best by words are embedded:
    the cosine re-orders plausible candidates; it cannot rescue a sentence sharing no word with the question."""
    q_terms = content_terms(question)
    out: list[Scored] = []
    for n, unit in evidence.units.items():
        for i, (sent, terms) in enumerate(zip(unit.sentences, unit.terms)):
            if terms and not _QUESTION_END.search(sent.text):
                out.append(Scored(n, i, sent.text, keyword_coverage(q_terms, weights, terms)))
    out.sort(key=lambda s: (-s.score, s.n, s.index))
    qvec = evidence.text_vector(question)
    if qvec is not None and out:
        top = EMBED_TOP["cuda" if str(getattr(evidence.embedder, "device", "cpu")).startswith("cuda") else "cpu"]
        head = out[:top]
        sims = evidence.sentence_vectors([(s.n, s.index) for s in head]) @ qvec
        for s, sim in zip(head, sims):
            s.score = OVERLAP_WEIGHT * s.score + (1 - OVERLAP_WEIGHT) * float(sim)
        for s in out[top:]:
            s.score *= OVERLAP_WEIGHT
        out.sort(key=lambda s: (-s.score, s.n, s.index))
    return out


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


def extractive_answer(question: str, passages: list[Passage], *, gen=None, evidence: Evidence | None = None
                      ) -> Extract:
    """The best-supported passage sentence(s) for `question`, cited and in reading order."""
    if evidence is None:
        fits = gen is not None and embedder_fits(gen.embedder, detect_language(question))
        evidence = Evidence(passages, gen.embedder if fits else None)
    ranked = rank_sentences(question, evidence, term_weights(gen, content_terms(question)))
    if not ranked:
        return Extract("", [])
    picks = [ranked[0]]
    if _MULTI.search(question):
        picks += [s for s in ranked[1:MAX_ANSWER_SENTENCES] if s.score >= MULTI_SENTENCE_RATIO * ranked[0].score]
    picks.sort(key=lambda s: (s.n, s.index))
    picks = _with_list_items(picks, evidence)
    return Extract(join_sentences([cite(s.text, s.n) for s in picks]), picks)


def _with_list_items(picks: list[Scored], evidence: Evidence) -> list[Scored]:
    """A sentence ending in ':' announces what follows; without it the answer would stop mid-thought."""
    out: list[Scored] = []
    chosen = {(p.n, p.index) for p in picks}
    for p in picks:
        out.append(p)
        if not p.text.rstrip().endswith((":", "：")):
            continue
        words = count_words(p.text)
        sentences = evidence.units[p.n].sentences
        for i in range(p.index + 1, len(sentences)):
            size = count_words(sentences[i].text)
            if (p.n, i) in chosen or words + size > LEAD_IN_WORDS:
                break
            out.append(Scored(p.n, i, sentences[i].text, p.score))
            words += size
    return out


def extractive_summary(passages: list[Passage], *, max_words: int, style: str = "brief",
                       evidence: Evidence | None = None, embedder=None, query: str | None = None) -> Extract:
    """Centroid sentence selection within `max_words`, in document order, each sentence cited."""
    evidence = evidence or Evidence(passages, embedder)
    cands: list[Scored] = []
    seen: set[str] = set()
    for n, unit in evidence.units.items():
        for i, sent in enumerate(unit.sentences):
            key = " ".join(sorted(unit.terms[i]))
            # Overlapping chunks repeat sentences; fragments, questions, table rows and "...:" lead-ins
            # (whose list would not follow) make poor summary sentences.
            text = sent.text.rstrip()
            if (key in seen or len(unit.terms[i]) < 4 or _QUESTION_END.search(text) or text.startswith("|")
                    or text.endswith((":", "："))):
                continue
            seen.add(key)
            cands.append(Scored(n, i, sent.text, 0.0))
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
    vectors = evidence.sentence_vectors([(c.n, c.index) for c in cands])
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
