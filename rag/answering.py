"""Grounded answers: retrieve, select the answer unit, decide whether it answers, write, check, fall back.

1. Retrieval with the caller's filters; a follow-up question is made standalone with the previous question's
   keywords (cheap and predictable, no extra model call).
2. Answer selection (rag.answer_select): the sentences, list items and table rows of the top passages are
   scored against what the question asks for; a fitted model decides from the best of them whether the
   documents answer the question at all. When they do not (nothing retrieved, an off-topic question, or a near
   miss: the topic is there, the fact is not) the answer says so in the question's language, with the closest
   passages.
3. The extractive backend answers with the best unit (plus its list neighbours for a list question), cited. A
   generative backend writes from the selected units only (not whole chunks), in the question's language.
4. Checks (rag.grounding): citations to passages that were not given are removed and counted; every sentence
   is checked against the passage it cites, and every figure it states must be in the units the generator was
   given; uncited but supported sentences get their citation. A draft without any valid citation, with mostly
   unsupported sentences, that echoes the question, or that is only markers or boilerplate is replaced by the
   extractive answer, and `fallback` says why. So is one whose generator failed or timed out.

Generation runs through the pool's slots (rag.generators.slots): one limit and one clock for the process.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rag.answer_select import AnswerSelector, QAReading, Selection, models_for, passage_cosines, term_weights
from rag.answer_units import passage_units
from rag.config import RetrievalSettings, Settings
from rag.errors import InvalidInput
from rag.extractive import (
    extractive_answer,
    join_sentences,
    lists_rows,
    same_table,
    shows_list,
    table_rows,
    unpicked_row,
)
from rag.generators import EXTRACTIVE, Generator, GeneratorError, GeneratorPool, count_tokens, fallback_reason
from rag.generators.slots import Lease
from rag.grounding import (
    Checked,
    Citation,
    Evidence,
    Passage,
    check_text,
    chunk_passage,
    clean_citations,
    content_terms,
    embedder_fits,
    numbers_in,
    split_sentences,
    strip_citations,
)
from rag.questions import analyse
from rag.retriever import Retriever, SearchResult
from rag.snapshot import Snapshot
from rag.table_answers import CANDIDATE_UNITS, table_answer
from rag.text import detect_language, tokenize
from rag.types import Filters, Hit

log = logging.getLogger(__name__)

HISTORY_TURNS = 4  # messages of conversation history put in the prompt
HISTORY_CHARS = 600  # per message: old turns are context, not the subject
MAX_ANSWER_WORDS = 60  # guard: a longer answer from a small model is rambling, cut at a sentence end
PROMPT_UNITS = 6  # the best units overall go into the prompt, plus each passage's own best one

NOT_FOUND = {
    "en": "I could not find this in the documents.",
    "zh": "在提供的文档中没有找到这个问题的答案。",
}
LANGUAGE_NAMES = {"en": "English", "zh": "Simplified Chinese"}

SYSTEM_PROMPT = (
    "You answer a question using only the numbered evidence the user gives you. "
    "State the fact that answers it in one or two short sentences, and put the number of the evidence you used "
    "in square brackets after each sentence, like [1]. "
    "If the evidence does not answer the question, reply exactly: \"{not_found}\" "
    "Answer in {language}."
)

# A model that says it cannot answer, in its own words.
_MODEL_ABSTAINS = re.compile(
    r"\b(not (contain|mention|provide|include|say|state)|no (information|mention)|cannot (find|answer|be found)"
    r"|can ?not (find|answer)|could not find|not (found|available) in|do(es)? not (know|specify)|don't know)\b"
    r"|没有找到|未找到|没有提到|没有提及|无法回答|不包含|未提及", re.IGNORECASE)
# Where a small model starts echoing the prompt back.
_ECHO = re.compile(r"(^|\n)\s*(question|passages?|evidence|context|user|human|system)\s*:|<\|im_|\n\[\d+\][^\n]*—",
                   re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:(?:answer|a|assistant|答案?|回答)\s*[:：]|the answer(?: to (?:this|the) question)? is\s*[:：]?)"
                     r"\s*", re.IGNORECASE)
# Phrases that carry no claim: a draft made only of these and citation markers answers nothing.
_BOILERPLATE = re.compile(
    r"the answer(?: to (?:this|the|your) question)? is|according to (?:the )?(?:passages?|evidence|documents?)"
    r"|based on (?:the )?(?:passages?|evidence|documents?)|the (?:passages?|evidence) (?:says?|states?|shows?)"
    r"|(?:passage|evidence) \d+|答案是|根据(?:文档|资料|证据|段落)", re.IGNORECASE)
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
    expects: str = ""  # what the question asks for: quantity, time, name, definition, list, yesno, other
    answerable: float | None = None  # the abstention model's confidence that the documents answer it


@dataclass
class AnswerEvent:
    """One streaming event: retrieval(list[Passage]), token(str), citation(Citation), done(Answer), error(str).

    Token events are the generator's draft with invalid citations already removed (the extractive answer is one
    token event); the `done` answer is the authoritative text (it may differ: guards, added citations, or the
    extractive fallback)."""

    type: str
    data: Any


@dataclass
class _Plan:
    """Everything decided before generation starts."""

    snapshot: Snapshot
    question: str
    query: str
    language: str
    backend: str
    result: SearchResult
    passages: list[Passage]
    history: list[dict]
    started: float
    timings: dict[str, float]
    generator: Generator | None = None
    failure: str | None = None  # why the generator could not be used (it failed to load)
    filters: Filters | None = None  # the caller's, access included: word rarity is judged over what it may see
    evidence: Evidence | None = None
    selection: Selection | None = None
    messages: list[dict] = field(default_factory=list)
    prompt_evidence: Evidence | None = None  # the checks' view: figures limited to the units in the prompt
    abstain: bool = False


def search_for_answer(retriever: Retriever, snapshot: Snapshot, query: str, settings: RetrievalSettings, *,
                      mode: str = "hybrid", filters: Filters | None = None, top_k: int | None = None) -> SearchResult:
    """The passages an answer reads (also what bench/fit_answer_selection.py fits on). Deeper than a search page:
    the unit that answers may sit in the 15th passage (a table row under a generic heading), and the selector
    weighs each passage's rank. As many of one document as rank (`answer_max_per_doc`): its section that states the
    fact may rank 8th among chunks that all share its title. Ranked by the fused score alone: the neighbourhood
    re-ranking finds more documents on a topic, but a question asks for one fact (with it: TAT-QA arithmetic -2
    of 197, one more probe near miss answered)."""
    return retriever.search(snapshot, query, mode=mode, filters=filters, top_k=top_k or settings.answer_passages,
                            neighbourhood=False, max_per_doc=settings.answer_max_per_doc)


def hits_to_passages(hits: list[Hit]) -> list[Passage]:
    return [Passage(n=i + 1, doc_id=h.doc_id, chunk_id=h.chunk_id, title=h.title, text=h.text,
                    score=round(float(h.score), 6), domain=h.metadata.get("domain"),
                    language=h.metadata.get("language"), heading=" > ".join(h.heading_path))
            for i, h in enumerate(hits)]


def passage_block(p: Passage) -> str:
    return f"[{p.n}] {p.title} — {p.text}" if p.title else f"[{p.n}] {p.text}"


def disclaimer_for(passages: list[Passage], citations: list[Citation], disclaimers: dict[str, str],
                   language: str | None = None) -> str | None:
    """The disclaimers of the domains the answer rests on (the cited passages, else the top one), in the
    answer's language where one is configured ("medical:zh"), else the domain's own."""
    by_n = {p.n: p for p in passages}
    used = [by_n[c.n] for c in citations if c.n in by_n] or passages[:1]
    texts = []
    for d in dict.fromkeys(p.domain for p in used):
        text = (disclaimers.get(f"{d}:{language}") or disclaimers.get(d)) if d else None
        if text:
            texts.append(text)
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
            raise InvalidInput("history items must be {'role': 'user'|'assistant', 'content': str}", field="history")
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
    terms = content_terms(strip_citations(text))
    q_terms = content_terms(question)
    if terms and terms <= q_terms:
        return "", "the generator only repeated the question"
    claim = content_terms(_BOILERPLATE.sub(" ", strip_citations(text)))
    if len(claim) < 2 and not numbers_in(strip_citations(text)) and not (claim - q_terms):
        return "", "the generator returned only citation markers or boilerplate"
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
        self._selectors: dict[str, AnswerSelector] = {}

    # -- public -----------------------------------------------------------------------------------------
    def answer(self, snapshot: Snapshot, question: str, *, filters: Filters | None = None, top_k: int | None = None,
               history: list[dict] | None = None, backend: str | None = None, mode: str = "hybrid") -> Answer:
        plan = self._retrieve(snapshot, question, filters=filters, top_k=top_k, history=history, backend=backend,
                              mode=mode)
        self._select(plan)
        if plan.abstain:
            return self._abstention(plan)
        if plan.generator is None:
            return self._finish(plan, None, plan.failure)
        t = time.perf_counter()
        draft, failure = None, None
        try:
            draft = self.generators.slots.run(lambda: plan.generator.generate(
                plan.messages, max_new_tokens=self.settings.generator.max_new_tokens,
                temperature=self.settings.generator.temperature))
        except GeneratorError as e:
            log.warning("generator %s failed: %s", plan.backend, e)
            failure = fallback_reason(e)
        plan.timings["generate_ms"] = _ms(t)
        return self._finish(plan, draft, failure)

    def answer_stream(self, snapshot: Snapshot, question: str, *, filters: Filters | None = None,
                      top_k: int | None = None, history: list[dict] | None = None, backend: str | None = None,
                      mode: str = "hybrid", lease: Lease | None = None) -> Iterator[AnswerEvent]:
        """Events in order: retrieval, token..., citation..., done (or error).

        The first `next()` runs retrieval: it raises InvalidInput for bad input before any event is produced.
        The retrieval event goes out before answer selection runs; a generative backend then takes a generator
        slot (GeneratorBusy when none frees up), or uses `lease`, a slot the caller reserved beforehand."""
        plan = self._retrieve(snapshot, question, filters=filters, top_k=top_k, history=history, backend=backend,
                              mode=mode)
        yield AnswerEvent("retrieval", list(plan.passages))  # a table answer may add passages later
        self._select(plan)
        if plan.abstain or plan.generator is None:
            final = self._abstention(plan) if plan.abstain else self._finish(plan, None, plan.failure)
            yield AnswerEvent("token", final.answer)
            yield from self._closing_events(final)
            return
        t = time.perf_counter()
        parts: list[str] = []
        failure = None
        filt = CitationStreamFilter({p.n for p in plan.passages})
        try:
            for piece in self.generators.slots.stream(lambda: plan.generator.stream(
                    plan.messages, max_new_tokens=self.settings.generator.max_new_tokens,
                    temperature=self.settings.generator.temperature), lease=lease):
                parts.append(piece)
                out = filt.feed(piece)
                if out:
                    yield AnswerEvent("token", out)
            rest = filt.flush()
            if rest:
                yield AnswerEvent("token", rest)
        except GeneratorError as e:
            log.warning("generator %s failed while streaming: %s", plan.backend, e)
            failure = fallback_reason(e)
        plan.timings["generate_ms"] = _ms(t)
        try:
            final = self._finish(plan, "".join(parts), failure)
        except Exception as e:  # noqa: BLE001 - the stream has started: report, don't break the connection
            log.exception("answer check failed")
            yield AnswerEvent("error", f"{type(e).__name__}: {e}")
            return
        yield from self._closing_events(final)

    def selector(self, snapshot: Snapshot) -> AnswerSelector:
        """The answer selector fitted for this generation's embedder (its cosines are what the weights know)."""
        name = snapshot.manifest.embedder.name
        if name not in self._selectors:
            self._selectors[name] = AnswerSelector(models_for(name), models_for(name, keywords_only=True),
                                                   max_passages=self.settings.retrieval.answer_passages,
                                                   qa=self.qa_reading())
        return self._selectors[name]

    def qa_reading(self) -> QAReading | None:
        """The configured extractive QA model (answers.qa_model), loaded once per process; None when unset."""
        a = self.settings.answers
        if not a.qa_model:
            return None
        from rag.qa_model import qa_model

        return QAReading(qa_model(a.qa_model, a.qa_device), passages=a.qa_passages, min_margin=a.qa_min_margin)

    # -- steps ------------------------------------------------------------------------------------------
    def _retrieve(self, snapshot: Snapshot, question: str, *, filters, top_k, history, backend, mode) -> _Plan:
        question = (question or "").strip()
        if not question:
            raise InvalidInput("question must not be empty", field="question")
        started = time.perf_counter()
        name = self.generators.resolve_name(backend)
        history_msgs = _history_messages(history)
        language = detect_language(question)
        query = standalone_query(question, history)
        t = time.perf_counter()
        result = search_for_answer(self.retriever, snapshot, query, self.settings.retrieval, mode=mode,
                                   filters=filters, top_k=top_k)
        timings = {"retrieve_ms": _ms(t)}
        return _Plan(snapshot, question, query, language, name, result, hits_to_passages(result.hits), history_msgs,
                     started, timings, filters=filters)

    def _select(self, plan: _Plan) -> None:
        """Answer selection and the answer-or-abstain decision; the prompt for a generative backend."""
        t = time.perf_counter()
        snapshot = plan.snapshot
        fits = embedder_fits(snapshot.embedder, plan.language)
        plan.evidence = Evidence(plan.passages, snapshot.embedder if fits else None)
        q = analyse(plan.question)
        if plan.query != plan.question:  # a follow-up: the standalone query carries the subject
            q.terms |= content_terms(plan.query)
        qvec = plan.result.query_vector if fits else None
        if fits and qvec is None and plan.passages:  # keyword mode embeds no query
            qvec = snapshot.embed_query(plan.query)
        plan.selection = self.selector(snapshot).select(q, plan.evidence, qvec=qvec,
                                                        idf=term_weights(snapshot, q.terms, plan.filters),
                                                   top_cos=plan.result.top_dense_score,
                                                   passage_cos=passage_cosines(snapshot, plan.result.hits, qvec))
        if (q.comparison or q.calculation) and plan.passages:
            self._compute(plan)
        plan.abstain = not plan.passages or not (plan.selection.answer or plan.selection.computed)
        if not plan.abstain and not plan.selection.computed:
            best = plan.selection.ranked[0]
            if unpicked_row(best, q, plan.evidence):
                self._complete_table(plan, best.unit)
            elif shows_list(q, best.unit):
                if best.unit.kind == "item":
                    self._complete_list(plan, best.unit)
                elif lists_rows(q, best.unit):  # the answer shows the rows of the best row's table
                    self._complete_table(plan, best.unit)
        plan.timings["select_ms"] = _ms(t)
        if plan.abstain or plan.backend == EXTRACTIVE:
            return
        if plan.selection.computed is not None:
            # Figures are compared and worked out, not written: a small generator misreads which is larger.
            plan.failure = "the answer is computed from a table's figures, not generated"
            return
        try:
            plan.generator = self.generators.get(plan.backend)
        except GeneratorError as e:
            log.warning("generator %s unavailable: %s", plan.backend, e)
            plan.failure = f"generator unavailable: {e}"
            return
        plan.messages, plan.prompt_evidence = self._prompt(plan)

    def _compute(self, plan: _Plan) -> None:
        """A comparison or calculation question (rag.questions): computed from the rows answer selection ranked
        best (rag.table_answers); an item comparison reads the whole table, so the first candidate row's table is
        completed first."""
        sel = plan.selection
        if sel.question.comparison is not None and sel.question.comparison.target == "row":
            first_row = next((s.unit for s in sel.ranked[:CANDIDATE_UNITS] if s.unit.row is not None), None)
            if first_row is not None:
                self._complete_table(plan, first_row)
        rows = [u for n in sorted(plan.evidence.units) for u in plan.evidence.units[n].units if u.row and u.answers]
        sel.computed = table_answer(sel.question, sel.ranked, lambda u: table_rows(u, plan.evidence), rows=rows,
                                    passage_terms=lambda n: plan.evidence.units[n].all_terms,
                                    answerable=sel.answer)

    @staticmethod
    def _join_document(plan: _Plan, doc_id: str, joins) -> None:
        """The passages of a document that retrieval did not return and that `joins` keeps (it returns the
        passage's units, or None) join the evidence and the answer's passages, so their citations are valid."""
        have = {p.chunk_id for p in plan.passages}
        for c in plan.snapshot.document_chunks(doc_id):
            if c["chunk_id"] in have:
                continue
            p = chunk_passage(len(plan.passages) + 1, c)
            if (units := joins(p)) is not None:
                plan.evidence.add(p, units)
                plan.passages.append(p)

    @classmethod
    def _complete_table(cls, plan: _Plan, best) -> None:
        """The answer will read a whole table (a list by its key column, rag.extractive.unpicked_row, or an item
        comparison): the passages of its document that hold more rows of that table join."""
        def joins(p: Passage):
            units = passage_units(p.text, p.n, title=p.title, heading=p.heading)
            return units if any(same_table(best, u) for u in units) else None

        cls._join_document(plan, plan.evidence.passages[best.n].doc_id, joins)

    @classmethod
    def _complete_list(cls, plan: _Plan, best) -> None:
        """The answer will show a list (rag.extractive.list_items): the chunks next to the best item's under the
        same heading join, so a list the chunker cut in two is shown whole (list_items takes from them only what
        continues the list)."""
        passage = plan.evidence.passages[best.n]
        if passage.ordinal is None:
            return

        def joins(p: Passage):
            near = p.ordinal is not None and 0 < abs(p.ordinal - passage.ordinal) <= 2 and p.heading == passage.heading
            return passage_units(p.text, p.n, title=p.title, heading=p.heading) if near else None

        cls._join_document(plan, passage.doc_id, joins)

    def _prompt(self, plan: _Plan) -> tuple[list[dict], Evidence]:
        """Messages carrying the selected units grouped by passage, and the checks' evidence whose figures are
        those of the units the generator was given."""
        sel, evidence = plan.selection, plan.evidence
        top = {(s.unit.n, s.unit.index) for s in sel.ranked[:PROMPT_UNITS]}
        extract = extractive_answer(sel, evidence)
        top |= {(p.n, p.index) for p in extract.picks}
        best_of: dict[int, tuple[int, int]] = {}
        for s in sel.ranked:
            best_of.setdefault(s.unit.n, (s.unit.n, s.unit.index))
        top |= set(best_of.values())
        budget = self.settings.generator.context_tokens
        blocks, used, numbers = [], 0, {}
        for p in plan.passages:
            keys = sorted(k for k in top if k[0] == p.n)
            if not keys:
                continue
            text = join_sentences([evidence.units[p.n].units[i].text for _, i in keys])
            block = passage_block(Passage(p.n, p.doc_id, p.chunk_id, p.title, text, p.score))
            cost = count_tokens(plan.generator, block)
            if blocks and used + cost > budget:
                break
            blocks.append(block)
            used += cost
            numbers[p.n] = numbers_in(text)
        system = SYSTEM_PROMPT.format(not_found=NOT_FOUND.get(plan.language, NOT_FOUND["en"]),
                                      language=LANGUAGE_NAMES.get(plan.language, "the language of the question"))
        messages = [{"role": "system", "content": system}, *plan.history,
                    {"role": "user", "content": "Evidence:\n\n" + "\n\n".join(blocks) +
                     f"\n\nQuestion: {plan.question}"}]
        return messages, evidence.with_numbers(numbers)

    def _abstention(self, plan: _Plan) -> Answer:
        plan.timings["total_ms"] = _ms(plan.started)
        sel = plan.selection
        return Answer(answer=NOT_FOUND.get(plan.language, NOT_FOUND["en"]), citations=[], abstained=True,
                      backend=plan.backend, fallback=None, invalid_citations_removed=0, passages=plan.passages[:3],
                      disclaimer=None, language=plan.language, generation_id=plan.snapshot.id,
                      timings_ms=plan.timings, query=plan.query, expects=sel.question.expects if sel else "",
                      answerable=round(sel.answerable, 4) if sel else None)

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
                checked = check_text(text, plan.prompt_evidence or plan.evidence)
                removed = checked.invalid_removed
                fallback = self._rejection(checked)
        if checked is None or fallback is not None:
            extract = extractive_answer(plan.selection, plan.evidence)
            if not extract.text:
                return self._abstention(plan)
            checked = check_text(extract.text, self._with_computed_figures(plan))
        plan.timings["check_ms"] = _ms(t)
        plan.timings["total_ms"] = _ms(plan.started)
        sel = plan.selection
        return Answer(answer=checked.text, citations=checked.citations, abstained=False, backend=plan.backend,
                      fallback=fallback, invalid_citations_removed=removed, passages=plan.passages,
                      disclaimer=disclaimer_for(plan.passages, checked.citations,
                                                self.settings.generator.disclaimers, plan.language),
                      language=plan.language, generation_id=plan.snapshot.id, timings_ms=plan.timings,
                      unsupported_sentences=checked.unsupported, citations_added=checked.added, query=plan.query,
                      expects=sel.question.expects, answerable=round(sel.answerable, 4))

    @staticmethod
    def _with_computed_figures(plan: _Plan) -> Evidence:
        """The checks' evidence: a computed answer's result is vouched for by its working (whose operands the
        cited rows hold), so it counts as a figure of the passages the answer cites."""
        computed = plan.selection.computed
        if computed is None or not computed.figures:
            return plan.evidence
        cited = {r.n for r in computed.rows}
        return plan.evidence.with_numbers({n: pu.numbers | (computed.figures if n in cited else set())
                                           for n, pu in plan.evidence.units.items()})

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
