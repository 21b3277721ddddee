"""Grounding primitives shared by answers, summaries and the extractive backend.

- `Passage` / `Citation`: the numbered evidence given to a generator, and a checked reference to it.
- `split_sentences` (from rag.sentences): English and Chinese sentence boundaries, with their offsets.
- citation parsing: `[n]`, `[n, m]`, `[n-m]`, `【n】`; `clean_citations` drops numbers that name no passage.
- `Evidence`: the passages cut into sentences, with content terms and (lazily) sentence vectors, answering
  "does this sentence say something the passage says?" and "which passage sentence is the cited span?".

Support rule (why these numbers): a sentence is supported by a passage when at least half of its content
words (stemmed, stop words dropped, `rag.text.tokenize`) occur in the passage, or when its embedding is
within cosine 0.7 (MiniLM's value; rag.models.calibration holds each embedder's) of one passage sentence (a
paraphrase) -- and, either way, every number it states occurs in the passage and it says "not" exactly when the
supporting passage sentence does: small models keep the passage's words and invent the figures ("began on
October 16, 1973") or flip the polarity ("you can't measure your blood pressure at home"), which word overlap
alone would wave through. Sentences with fewer than two content words
("Yes.", "In 2019.") carry no claim we can check and are not judged.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from rag.answer_units import AnswerUnit, passage_units, unit_embed_text
from rag.sentences import CITE_GROUP, Sentence, split_sentences
from rag.models.calibration import threshold as calibrated
from rag.text import tokenize

SUPPORT_RECALL = 0.5
# A paraphrase's cosine floor lives in rag.models.calibration ("support_cosine"): it depends on the embedder.
MIN_JUDGED_TERMS = 2


@dataclass
class Passage:
    """One numbered passage as the generator saw it (n starts at 1)."""

    n: int
    doc_id: str
    chunk_id: str
    title: str
    text: str
    score: float
    domain: str | None = None
    language: str | None = None
    heading: str = ""  # the chunk's heading path ("Dosing > Children"): what its units are about

    @property
    def ordinal(self) -> int | None:
        """The chunk's place in its document ("fin-fees#3" -> 3); None for an id that carries none."""
        tail = self.chunk_id.rpartition("#")[2]
        return int(tail) if tail.isdigit() else None


@dataclass
class Citation:
    n: int
    doc_id: str
    chunk_id: str
    title: str
    span: str  # the passage sentence that supports the cited answer sentence
    score: float  # support of that sentence by the passage, 0..1


# --- citations ---------------------------------------------------------------------------------------------

_CITE = re.compile(CITE_GROUP)
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _numbers(group: str) -> list[int]:
    nums: list[int] = []
    for part in re.split(r"[,，;；]", group.strip("[]【】 ")):
        bounds = [int(x) for x in re.findall(r"\d+", part)]
        if len(bounds) == 2 and re.search(r"[-–]", part) and 0 < bounds[1] - bounds[0] < 10:
            nums.extend(range(bounds[0], bounds[1] + 1))
        else:
            nums.extend(bounds)
    return nums


def cited_numbers(text: str) -> list[int]:
    """Every passage number cited in `text`, in order of first appearance."""
    seen: dict[int, None] = {}
    for m in _CITE.finditer(text):
        for n in _numbers(m.group(0)):
            seen.setdefault(n, None)
    return list(seen)


def clean_citations(text: str, valid: set[int]) -> tuple[str, int]:
    """Rewrite citation groups in canonical `[a, b]` form keeping only numbers in `valid`.

    Returns the new text and how many cited numbers were removed (a group with none left disappears)."""
    removed = 0

    def fix(m: re.Match) -> str:
        nonlocal removed
        nums = list(dict.fromkeys(_numbers(m.group(0))))
        keep = [n for n in nums if n in valid]
        removed += len(nums) - len(keep)
        return "[" + ", ".join(map(str, keep)) + "]" if keep else ""

    cleaned = _CITE.sub(fix, text)
    cleaned = re.sub(r"(\[[\d, ]+\])(?:\s*\1)+", r"\1", cleaned)  # "[2] [2]" after cleaning -> "[2]"
    # Removing a group can leave "word ." or a doubled space behind.
    cleaned = re.sub(r"[ \t]+([.,;:!?。，；：！？])", r"\1", cleaned)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
    return cleaned.strip(), removed


def strip_citations(text: str) -> str:
    return re.sub(r"[ \t]{2,}", " ", _CITE.sub("", text)).strip()


# --- evidence ---------------------------------------------------------------------------------------------

# Embedders whose cosine means something only for English: MiniLM scores any two Chinese texts ~0.55-0.65.
ENGLISH_ONLY_EMBEDDERS = frozenset({"minilm"})
CANDIDATE_PASSAGES = 3  # passages whose sentences are embedded when words alone do not settle support


def embedder_fits(embedder, language: str) -> bool:
    """Whether this embedder's cosine is meaningful for text in `language`."""
    return embedder is not None and (language == "en" or getattr(embedder, "name", "") not in ENGLISH_ONLY_EMBEDDERS)


def content_terms(text: str) -> set[str]:
    return set(tokenize(text))


@dataclass
class Verdict:
    """How well one sentence is supported, and by which passage sentence."""

    judged: bool  # False: too few content words to check
    supported: bool
    recall: float
    cosine: float | None
    n: int | None  # the supporting passage
    span: str


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NEGATION = re.compile(r"\b(?:not|no|never|cannot|without|neither|nor|none)\b|n't\b|不|没有|无|未|非|别|勿",
                       re.IGNORECASE)


def negated(text: str) -> bool:
    """Whether a sentence says "not": a claim whose polarity differs from its span's contradicts it."""
    return bool(_NEGATION.search(text.replace("’", "'")))


def numbers_in(text: str) -> set[str]:
    """Numbers as written, thousands separators dropped ("1,200" == "1200"), trailing ".0" kept distinct."""
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


class VectorCache:
    """Unit vectors by (encoder identity, text), shared by every request: the same passages come back for
    related questions, and embedding a unit costs ~10 ms of a CPU core."""

    def __init__(self, size: int = 20_000):
        self.size = size
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, embedder, texts: list[str]) -> np.ndarray:
        ident = getattr(embedder, "identity", getattr(embedder, "name", ""))
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for t in texts:
                v = self._items.get((ident, t))
                if v is not None:
                    self._items.move_to_end((ident, t))
                    out[t] = v
        missing = [t for t in dict.fromkeys(texts) if t not in out]
        if missing:
            vecs = embedder.embed_passages(missing, batch_size=64)
            with self._lock:
                for t, v in zip(missing, vecs):
                    out[t] = v
                    self._items[(ident, t)] = v
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        dim = next(iter(out.values())).shape[0] if out else 1
        return np.stack([out[t] for t in texts]) if texts else np.zeros((0, dim), np.float32)


UNIT_VECTORS = VectorCache()


def chunk_passage(n: int, chunk: dict, score: float = 0.0) -> Passage:
    """Passage number `n` from a chunk as `Snapshot.chunks` / `document_chunks` return it (its document's title,
    domain and language joined in)."""
    return Passage(n, chunk["doc_id"], chunk["chunk_id"], chunk["title"] or "", chunk["text"], score,
                   chunk["domain"], chunk["language"], heading=" > ".join(chunk["heading_path"] or []))


@dataclass
class PassageUnits:
    passage: Passage
    units: list[AnswerUnit]
    terms: list[set[str]]  # content terms of each unit's text
    context_terms: list[set[str]]  # of each unit's context (heading, lead-in, caption)
    all_terms: set[str] = field(default_factory=set)  # the whole passage, title and headings included
    numbers: set[str] = field(default_factory=set)


class Evidence:
    """Passages cut into answer units (rag.answer_units) with their content terms; unit vectors are computed
    when needed (answer selection, a paraphrase check) and cached across requests.

    `embedder` is None, or one that fits the request's language (see `embedder_fits`)."""

    def __init__(self, passages: list[Passage], embedder=None):
        self.passages: dict[int, Passage] = {}
        self.embedder = embedder
        self.units: dict[int, PassageUnits] = {}
        for p in passages:
            self.add(p)
        self._text_vecs: dict[str, np.ndarray] = {}

    def add(self, p: Passage, units: list[AnswerUnit] | None = None) -> None:
        """One more passage, cut into its units (numbered `p.n`) unless the caller has cut it already."""
        units = units or passage_units(p.text, p.n, title=p.title, heading=p.heading) or [
            AnswerUnit(p.n, 0, "sentence", p.text.strip(), p.text.strip(), 0, len(p.text), p.heading, 0, True)]
        terms = [content_terms(u.text) for u in units]
        ctx = [content_terms(u.context) for u in units]
        every = set().union(*terms, *ctx, content_terms(p.title))
        self.passages[p.n] = p
        self.units[p.n] = PassageUnits(p, units, terms, ctx, every, numbers_in(p.text))

    def with_numbers(self, numbers: dict[int, set[str]]) -> "Evidence":
        """A view whose passages hold only these figures: a generated sentence must not state a figure the
        units it was given do not hold, even when another part of the passage does."""
        view = copy.copy(self)
        view.units = {n: dataclasses.replace(pu, numbers=numbers.get(n, set())) for n, pu in self.units.items()}
        return view

    def unit_list(self, ns: list[int] | None = None) -> list[AnswerUnit]:
        return [u for n in (ns if ns is not None else list(self.units)) for u in self.units[n].units]

    def unit_vectors(self, keys: list[tuple[int, int]], *, with_context: bool = False) -> np.ndarray | None:
        """Vectors of units (passage n, unit index) as passages; with their context for answer selection."""
        if self.embedder is None:
            return None
        texts = []
        for n, i in keys:
            u = self.units[n].units[i]
            texts.append(unit_embed_text(u) if with_context else u.text)
        return UNIT_VECTORS.embed(self.embedder, texts)

    def text_vector(self, text: str) -> np.ndarray | None:
        if self.embedder is None:
            return None
        if text not in self._text_vecs:
            self._text_vecs[text] = self.embedder.embed_queries([text])[0]
        return self._text_vecs[text]

    def verdict(self, sentence: str, ns: list[int] | None = None) -> Verdict:
        """Support of `sentence` by the passages numbered `ns` (all passages when None): the best one wins."""
        terms = content_terms(sentence)
        figures = numbers_in(sentence)
        judged = len(terms) >= MIN_JUDGED_TERMS
        scored = []  # (numbers all found, recall, n, index of the best-overlapping unit)
        for n in (ns if ns is not None else list(self.units)):
            pu = self.units.get(n)
            if pu is None or not pu.units:
                continue
            recall = len(terms & pu.all_terms) / len(terms) if terms else 0.0
            # The span: the unit sharing most words, a statement rather than an FAQ's question on a tie.
            i = max(range(len(pu.terms)), key=lambda k: (len(terms & pu.terms[k]), pu.units[k].answers))
            scored.append((figures <= pu.numbers, recall, n, i))
        if not scored:
            return Verdict(judged, False, 0.0, None, None, "")
        scored.sort(key=lambda x: (not x[0], -x[1], x[2]))
        numbers_ok, recall, n, i = scored[0]
        if not numbers_ok or recall >= SUPPORT_RECALL or self.embedder is None or not terms:
            unit = self.units[n].units[i]
            supported = numbers_ok and recall >= SUPPORT_RECALL and negated(sentence) == negated(unit.text)
            return Verdict(judged, supported, recall, None, n, unit.span)
        # Words fall short: a paraphrase still counts when it is close in meaning to one passage unit.
        vec = self.text_vector(sentence)
        candidates = [x for x in scored if x[0]][:CANDIDATE_PASSAGES]
        keys = [(m, k) for _, _, m, _ in candidates for k in range(len(self.units[m].units))]
        sims = self.unit_vectors(keys) @ vec
        j = int(np.argmax(sims))
        cos = float(sims[j])
        m, k = keys[j]
        unit = self.units[m].units[k]
        if cos >= calibrated(self.embedder, "support_cosine") and negated(sentence) == negated(unit.text):
            recall_of = {x[2]: x[1] for x in candidates}
            return Verdict(judged, True, recall_of[m], cos, m, unit.span)
        return Verdict(judged, False, recall, cos, n, self.units[n].units[i].span)


# --- checking a generated text -----------------------------------------------------------------------------

@dataclass
class Checked:
    """A generated text after the citation and support checks."""

    text: str
    citations: list[Citation]
    invalid_removed: int  # cited numbers that named no given passage
    judged: int  # sentences with enough content words to check
    unsupported: int  # judged sentences their (cited or best) passage does not support
    added: int  # uncited, supported sentences that received the supporting passage's citation


def check_text(text: str, evidence: Evidence) -> Checked:
    """Drop citations of passages that were not given, check every sentence against what it cites.

    A sentence without a citation is checked against every passage; when one supports it, that passage's
    citation is added (small models rarely cite, and the check, not the model, vouches for the reference).
    """
    text, removed = clean_citations(text, set(evidence.passages))
    sentences = split_sentences(text)
    claims = [strip_citations(s.text) for s in sentences]
    citations: dict[tuple[int, str], Citation] = {}
    inserts: list[tuple[int, str]] = []
    judged = unsupported = added = 0
    for sent, claim in zip(sentences, claims):
        ns = cited_numbers(text[sent.start:sent.end])
        verdict = evidence.verdict(claim, ns or None)
        if not ns and verdict.judged and verdict.supported and verdict.n is not None:
            ns = [verdict.n]
            at = _citation_point(text, sent)
            space = "" if at and _CJK_CHAR.match(text[at - 1]) else " "
            inserts.append((at, f"{space}[{verdict.n}]"))
            added += 1
        if verdict.judged:
            judged += 1
            unsupported += not verdict.supported
        for n in ns:
            v = evidence.verdict(claim, [n]) if len(ns) > 1 else verdict
            p = evidence.passages[n]
            score = max(v.recall, v.cosine or 0.0)
            citations.setdefault((n, v.span), Citation(n, p.doc_id, p.chunk_id, p.title, v.span, round(score, 4)))
    for at, mark in sorted(inserts, reverse=True):
        text = text[:at] + mark + text[at:]
    return Checked(text, list(citations.values()), removed, judged, unsupported, added)


def _citation_point(text: str, sent: Sentence) -> int:
    """Where a citation goes in a sentence: before its final punctuation, else at its end."""
    raw = text[sent.start:sent.end].rstrip()
    m = re.search(r"[.!?。！？；]+$", raw)
    return sent.start + (m.start() if m else len(raw))
