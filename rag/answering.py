"""Grounded answers: retrieve, decide whether the evidence is good enough, generate, check, fall back.

1. Retrieval with the caller's filters; a follow-up question is made standalone with the previous question's
   keywords (cheap and predictable, no extra model call).
2. Abstention: no hits, or a weak best dense cosine (< retrieval.abstain_min_dense) together with weak keyword
   evidence (the best passage holds < KEYWORD_STRONG of the question's idf mass) -> "not in the documents",
   in the question's language, with the closest passages.
3. Generation from numbered passages that fit generator.context_tokens (or the extractive backend).
4. Checks (rag.grounding): citations to passages that were not given are removed and counted; every sentence
   is checked against the passage it cites; uncited but supported sentences get their citation. An answer
   without any valid citation, with mostly unsupported sentences, or that fails the small-model guards
   (empty, echoes the prompt) is replaced by the extractive answer, and `fallback` says why. So is one whose
   generator failed or timed out.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rag.config import Settings
from rag.extractive import extractive_answer, keyword_coverage, term_weights
from rag.generation import Generation
from rag.generators import EXTRACTIVE, Generator, GeneratorBusy, GeneratorError, GeneratorPool, count_tokens
from rag.grounding import (
    Checked,
    Citation,
    Evidence,
    Passage,
    check_text,
    clean_citations,
    content_terms,
    embedder_fits,
    split_sentences,
)
from rag.models.calibration import threshold as calibrated
from rag.retriever import Retriever, SearchResult
from rag.text import detect_language, tokenize
from rag.types import Filters, Hit

log = logging.getLogger(__name__)

# The best passage must hold this share of the question's idf mass to count as a strong keyword match.
# Tuned on the bundled corpus: on-topic questions reach 0.6-1.0, off-topic ones ("Who won the 1998 World
# Cup?", "澳大利亚的首都是哪里？") stay below 0.5.
KEYWORD_STRONG = 0.6
# Interrogatives carry no topic; words the corpus never saw weigh most in the coverage, so they must go.
_QUESTION_WORDS = frozenset("谁 哪 哪里 哪儿 哪个 哪些 怎么办 怎么样 怎样 为什么 为何 多少 几 什么样 有什么 可以 能 能否 吗 呢 请问".split())
HISTORY_TURNS = 4  # messages of conversation history put in the prompt
HISTORY_CHARS = 600  # per message: old turns are context, not the subject
MAX_ANSWER_WORDS = 160  # guard: a longer answer from a small model is rambling, cut at a sentence end

NOT_FOUND = {
    "en": "I could not find this in the documents.",
    "zh": "在提供的文档中没有找到这个问题的答案。",
}
LANGUAGE_NAMES = {"en": "English", "zh": "Simplified Chinese"}

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages the user gives you. "
    "After each sentence, cite the passage it comes from with its number in square brackets, like [1]. "
    "If the passages do not contain the answer, reply exactly: \"{not_found}\" "
    "Answer in {language}, in at most three sentences."
)

# A model that says it cannot answer, in its own words.
_MODEL_ABSTAINS = re.compile(
    r"\b(not (contain|mention|provide|include|say|state)|no (information|mention)|cannot (find|answer|be found)"
    r"|can ?not (find|answer)|could not find|not (found|available) in|do(es)? not (know|specify)|don't know)\b"
    r"|没有找到|未找到|没有提到|没有提及|无法回答|不包含|未提及", re.IGNORECASE)
# Where a small model starts echoing the prompt back.
_ECHO = re.compile(r"(^|\n)\s*(question|passages?|context|user|human|system)\s*:|<\|im_|\n\[\d+\][^\n]*—",
                   re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:(?:answer|a|assistant|答案?|回答)\s*[:：]|the answer(?: to (?:this|the) question)? is\s*[:：]?)"
                     r"\s*", re.IGNORECASE)
_FOLLOW_UP = re.compile(r"\b(it|its|they|them|their|this|that|these|those|he|she|his|her|there|one)\b"
                        r"|它|他们|她|这个|那个|这些|那些|其", re.IGNORECASE)


@dataclass
class Answer:
    answer: str
    citations: list[Citation]
    abstained: bool
    backend: str  # the backend asked for; `fallback` says when the extractive answer replaced its text
    fallback: str | None
    invalid_citations_removed: int
    passages: list[Passage]  # the numbered passages the answer was written from (closest ones on abstention)
    disclaimer: str | None
    language: str
    generation_id: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    unsupported_sentences: int = 0
    citations_added: int = 0  # supported sentences the generator left uncited
    query: str = ""  # the retrieval query (the question, made standalone when history was given)


@dataclass
class AnswerEvent:
    """One streaming event: retrieval(list[Passage]), token(str), citation(Citation), done(Answer), error(str).

    Token events are the generator's draft with invalid citations already removed; the `done` answer is the
    authoritative text (it may differ: guards, added citations, or the extractive fallback)."""

    type: str
    data: Any


@dataclass
class _Plan:
    """Everything decided before generation starts."""

    gen: Generation
    question: str
    query: str
    language: str
    backend: str
    generator: Generator | None
    failure: str | None  # why the generator could not be used (it failed to load)
    result: SearchResult
    passages: list[Passage]
    evidence: Evidence
    messages: list[dict]
    abstain: bool
    generation_id: str
    started: float
    timings: dict[str, float]


def hits_to_passages(hits: list[Hit]) -> list[Passage]:
    return [Passage(n=i + 1, doc_id=h.doc_id, chunk_id=h.chunk_id, title=h.title, text=h.text,
                    score=round(float(h.score), 6), domain=h.metadata.get("domain"),
                    language=h.metadata.get("language")) for i, h in enumerate(hits)]


def fit_passages(passages: list[Passage], generator: Generator | None, budget: int) -> list[Passage]:
    """The leading passages whose prompt blocks fit `budget` tokens, renumbered 1..k; the first always
    goes in (cut to the budget) so there is something to answer from."""
    out: list[Passage] = []
    used = 0
    for p in passages:
        cost = count_tokens(generator, passage_block(p))
        if used + cost > budget:
            if out:
                break
            keep = max(1, int(len(p.text) * budget / cost))
            p = Passage(p.n, p.doc_id, p.chunk_id, p.title, p.text[:keep], p.score, p.domain, p.language)
            cost = budget
        out.append(Passage(len(out) + 1, p.doc_id, p.chunk_id, p.title, p.text, p.score, p.domain, p.language))
        used += cost
    return out


def passage_block(p: Passage) -> str:
    return f"[{p.n}] {p.title} — {p.text}" if p.title else f"[{p.n}] {p.text}"


def disclaimer_for(passages: list[Passage], citations: list[Citation], disclaimers: dict[str, str]) -> str | None:
    """The disclaimers of the domains the answer rests on: the cited passages, else the top one."""
    by_n = {p.n: p for p in passages}
    used = [by_n[c.n] for c in citations if c.n in by_n] or passages[:1]
    texts = [disclaimers[d] for d in dict.fromkeys(p.domain for p in used) if d and d in disclaimers]
    return " ".join(texts) or None


def standalone_query(question: str, history: list[dict] | None) -> str:
    """A follow-up ("and for them?") gets the previous user question's keywords prepended for retrieval."""
    previous = next((m["content"] for m in reversed(history or []) if m.get("role") == "user"), None)
    if not previous:
        return question
    if len(set(tokenize(question))) >= 4 and not _FOLLOW_UP.search(question):
        return question
    keywords = [w for w in re.findall(r"[\w'-]+", previous) if tokenize(w)][:10]
    return f"{' '.join(keywords)} {question}".strip()


def _history_messages(history: list[dict] | None) -> list[dict]:
    out = []
    for m in (history or [])[-HISTORY_TURNS:]:
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant") or not isinstance(content, str):
            raise ValueError("history items must be {'role': 'user'|'assistant', 'content': str}")
        out.append({"role": role, "content": content[:HISTORY_CHARS]})
    return out


def tidy_generated(text: str, question: str, system: str, max_words: int = MAX_ANSWER_WORDS
                   ) -> tuple[str, str | None]:
    """Guards for small models: returns (cleaned text, rejection reason or None)."""
    text = text.replace("\r", "")
    echo = _ECHO.search(text)
    if echo:
        text = text[:echo.start()]
    text = _PREFIX.sub("", text).strip()
    text = _cut_loop(text)
    sentences = split_sentences(text)
    # A draft cut by max_new_tokens ends mid-sentence: drop the fragment when a full sentence precedes it.
    if len(sentences) > 1 and not re.search(r"[.!?。！？；\]]\s*$", text):
        text = text[:sentences[-1].start].rstrip()
    text = _cap_words(text, max_words)
    if not text.strip(" .。"):
        return "", "the generator returned an empty answer"
    terms = content_terms(text)
    if terms and terms <= content_terms(question):
        return "", "the generator only repeated the question"
    system_terms = content_terms(system)
    if len(terms) >= 3 and len(terms & system_terms) / len(terms) >= 0.7:
        return "", "the generator repeated its instructions"
    return text, None


def _cut_loop(text: str) -> str:
    """Cut a degenerate repetition ("la femme de France, la femme de France, ...") after its first round."""
    words = text.split()
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - 3):
        gram = tuple(w.lower() for w in words[i:i + 4])
        if gram in seen:
            start = seen[gram]
            if i - start <= 40:  # the same 4 words again within a short span: a loop, not a quotation
                return " ".join(words[:i]).rstrip(",;")
        else:
            seen[gram] = i
    return text


def _cap_words(text: str, limit: int) -> str:
    words = text.split()
    if len(words) <= limit:
        return text
    kept = ""
    for s in split_sentences(text):
        candidate = text[:s.end]
        if len(candidate.split()) > limit:
            break
        kept = candidate
    return kept or " ".join(words[:limit])


class CitationStreamFilter:
    """Removes citations of passages that were not given from a token stream, holding back an open bracket
    until it closes (or clearly is not a citation)."""

    HOLD = 16

    def __init__(self, valid: set[int]):
        self.valid = valid
        self.buffer = ""

    def feed(self, piece: str) -> str:
        self.buffer += piece
        cut = max(self.buffer.rfind("["), self.buffer.rfind("【"))
        if cut >= 0 and not re.search(r"[\]】]", self.buffer[cut:]) and len(self.buffer) - cut < self.HOLD:
            ready, self.buffer = self.buffer[:cut], self.buffer[cut:]
        else:
            ready, self.buffer = self.buffer, ""
        return self._clean(ready)

    def flush(self) -> str:
        ready, self.buffer = self.buffer, ""
        return self._clean(ready)

    def _clean(self, text: str) -> str:
        if not text:
            return ""
        cleaned, _ = clean_citations(text, self.valid)
        # clean_citations strips the ends; keep the draft's own spacing between pieces.
        lead = text[:len(text) - len(text.lstrip())]
        tail = text[len(text.rstrip()):]
        return lead + cleaned + tail if cleaned else lead


class Answerer:
    def __init__(self, settings: Settings, retriever: Retriever, generators: GeneratorPool | None = None):
        self.settings = settings
        self.retriever = retriever
        self.generators = generators or GeneratorPool(settings.generator, settings.models_dir,
                                                      queue_timeout_s=settings.service.queue_timeout_s)

    # -- public -----------------------------------------------------------------------------------------
    def answer(self, gen: Generation, question: str, *, filters: Filters | None = None, top_k: int | None = None,
               history: list[dict] | None = None, backend: str | None = None, mode: str = "hybrid") -> Answer:
        plan = self._plan(gen, question, filters=filters, top_k=top_k, history=history, backend=backend, mode=mode)
        if plan.abstain:
            return self._abstention(plan)
        if plan.generator is None:
            return self._finish(plan, None, plan.failure)
        t = time.perf_counter()
        draft, failure = None, None
        with self.generators.slot():
            try:
                draft = plan.generator.generate(plan.messages, max_new_tokens=self.settings.generator.max_new_tokens,
                                                temperature=self.settings.generator.temperature)
            except GeneratorError as e:
                log.warning("generator %s failed: %s", plan.backend, e)
                failure = f"generator error: {e}"
        plan.timings["generate_ms"] = _ms(t)
        return self._finish(plan, draft, failure)

    def answer_stream(self, gen: Generation, question: str, *, filters: Filters | None = None,
                      top_k: int | None = None, history: list[dict] | None = None, backend: str | None = None,
                      mode: str = "hybrid") -> Iterator[AnswerEvent]:
        """Events in order: retrieval, token..., citation..., done (or error).

        The first `next()` runs retrieval and, for a generative backend, takes a generation slot: it raises
        ValueError for bad input and GeneratorBusy when no slot frees up, before any event is produced."""
        plan = self._plan(gen, question, filters=filters, top_k=top_k, history=history, backend=backend, mode=mode)
        if plan.abstain or plan.generator is None:
            final = self._abstention(plan) if plan.abstain else self._finish(plan, None, plan.failure)
            yield AnswerEvent("retrieval", final.passages)
            for s in split_sentences(final.answer) or [None]:
                yield AnswerEvent("token", final.answer if s is None else final.answer[s.start:s.end] + " ")
            yield from self._closing_events(final)
            return
        with self.generators.slot():
            yield AnswerEvent("retrieval", plan.passages)
            t = time.perf_counter()
            parts: list[str] = []
            failure = None
            filt = CitationStreamFilter({p.n for p in plan.passages})
            try:
                for piece in plan.generator.stream(plan.messages, max_new_tokens=self.settings.generator.max_new_tokens,
                                                   temperature=self.settings.generator.temperature):
                    parts.append(piece)
                    out = filt.feed(piece)
                    if out:
                        yield AnswerEvent("token", out)
                rest = filt.flush()
                if rest:
                    yield AnswerEvent("token", rest)
            except GeneratorError as e:
                log.warning("generator %s failed while streaming: %s", plan.backend, e)
                failure = f"generator error: {e}"
            plan.timings["generate_ms"] = _ms(t)
        try:
            final = self._finish(plan, "".join(parts), failure)
        except Exception as e:  # noqa: BLE001 - the stream has started: report, don't break the connection
            log.exception("answer check failed")
            yield AnswerEvent("error", f"{type(e).__name__}: {e}")
            return
        yield from self._closing_events(final)

    # -- steps ------------------------------------------------------------------------------------------
    def _plan(self, gen: Generation, question: str, *, filters, top_k, history, backend, mode) -> _Plan:
        question = (question or "").strip()
        if not question:
            raise ValueError("question must not be empty")
        started = time.perf_counter()
        name = self.generators.resolve_name(backend)
        history_msgs = _history_messages(history)
        language = detect_language(question)
        query = standalone_query(question, history)
        t = time.perf_counter()
        result = self.retriever.search(gen, query, mode=mode, filters=filters, top_k=top_k)
        timings = {"retrieve_ms": _ms(t)}
        passages = hits_to_passages(result.hits)
        abstain = self._weak_evidence(gen, query, result, passages)
        generator, failure = None, None
        if not abstain and name != EXTRACTIVE:
            try:
                generator = self.generators.get(name)
            except GeneratorBusy:
                raise
            except GeneratorError as e:
                log.warning("generator %s unavailable: %s", name, e)
                failure = f"generator unavailable: {e}"
        messages: list[dict] = []
        if generator is not None:
            passages = fit_passages(passages, generator, self.settings.generator.context_tokens)
            messages = self._messages(question, passages, history_msgs, language)
        evidence = Evidence(passages, gen.embedder if embedder_fits(gen.embedder, language) else None)
        return _Plan(gen, question, query, language, name, generator, failure, result, passages, evidence, messages,
                     abstain, gen.id, started, timings)

    def _weak_evidence(self, gen: Generation, query: str, result: SearchResult, passages: list[Passage]) -> bool:
        if not passages:
            return True
        dense = result.top_dense_score
        # An English-only embedder's cosine cannot vouch for a Chinese question: keywords decide alone.
        floor = self.settings.retrieval.abstain_min_dense
        if floor is None:
            floor = calibrated(gen.embedder, "abstain_min_dense")
        if embedder_fits(gen.embedder, detect_language(query)) and dense is not None and dense >= floor:
            return False
        terms = content_terms(query) - _QUESTION_WORDS
        if not terms:
            return True
        weights = term_weights(gen, terms)
        best = max(keyword_coverage(terms, weights, content_terms(f"{p.title}\n{p.text}")) for p in passages[:3])
        return best < KEYWORD_STRONG

    def _messages(self, question: str, passages: list[Passage], history: list[dict], language: str) -> list[dict]:
        system = SYSTEM_PROMPT.format(not_found=NOT_FOUND.get(language, NOT_FOUND["en"]),
                                      language=LANGUAGE_NAMES.get(language, "the language of the question"))
        blocks = "\n\n".join(passage_block(p) for p in passages)
        return [{"role": "system", "content": system}, *history,
                {"role": "user", "content": f"Passages:\n\n{blocks}\n\nQuestion: {question}"}]

    def _abstention(self, plan: _Plan) -> Answer:
        plan.timings["total_ms"] = _ms(plan.started)
        return Answer(answer=NOT_FOUND.get(plan.language, NOT_FOUND["en"]), citations=[], abstained=True,
                      backend=plan.backend, fallback=None, invalid_citations_removed=0, passages=plan.passages[:3],
                      disclaimer=None, language=plan.language, generation_id=plan.generation_id,
                      timings_ms=plan.timings, query=plan.query)

    def _finish(self, plan: _Plan, draft: str | None, failure: str | None) -> Answer:
        """Check a draft (None for the extractive backend); fall back to the extractive answer when it fails."""
        t = time.perf_counter()
        removed = 0
        checked: Checked | None = None
        fallback = failure
        if draft is not None and failure is None:
            text, rejected = tidy_generated(draft, plan.question, plan.messages[0]["content"])
            if rejected:
                fallback = rejected
            elif _MODEL_ABSTAINS.search(text) and len(text.split()) <= 40:
                plan.timings["check_ms"] = _ms(t)
                return self._abstention(plan)
            else:
                checked = check_text(text, plan.evidence)
                removed = checked.invalid_removed
                fallback = self._rejection(checked)
        if checked is None or fallback is not None:
            extract = extractive_answer(plan.question, plan.passages, gen=plan.gen, evidence=plan.evidence)
            if not extract.text:  # no passage sentence shares a content word with the question
                return self._abstention(plan)
            checked = check_text(extract.text, plan.evidence)
        plan.timings["check_ms"] = _ms(t)
        plan.timings["total_ms"] = _ms(plan.started)
        return Answer(answer=checked.text, citations=checked.citations, abstained=False, backend=plan.backend,
                      fallback=fallback, invalid_citations_removed=removed, passages=plan.passages,
                      disclaimer=disclaimer_for(plan.passages, checked.citations,
                                                self.settings.generator.disclaimers),
                      language=plan.language, generation_id=plan.generation_id, timings_ms=plan.timings,
                      unsupported_sentences=checked.unsupported, citations_added=checked.added, query=plan.query)

    @staticmethod
    def _rejection(checked: Checked) -> str | None:
        if checked.judged and checked.unsupported * 2 > checked.judged:
            return (f"{checked.unsupported} of {checked.judged} generated sentences are not supported by the "
                    "passages")
        if not checked.citations:
            return "the generated answer has no valid citation and no sentence the passages support"
        return None

    @staticmethod
    def _closing_events(final: Answer) -> Iterator[AnswerEvent]:
        for c in final.citations:
            yield AnswerEvent("citation", c)
        yield AnswerEvent("done", final)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
