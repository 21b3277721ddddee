"""Summaries of one document, several documents, or the top passages for a query, with checked citations.

Generative path: the passages (a document's chunks in order, or search hits) are numbered once; when they do
not fit generator.context_tokens they are summarized in groups that do (map, one batched call) and the partial
summaries, which keep the global [n] numbers, are combined (reduce, repeated until one text is left). The
result goes through the same checks as answers (rag.grounding.check_text), the word limit and the style.
Extractive path (backend "extractive", or any generator failure, timeout or rejected draft, the reason in
`fallback`): centroid sentence selection from rag.extractive, which respects max_words by construction.
"""

from __future__ import annotations

import logging
import re
import time
import typing
from dataclasses import dataclass, field
from typing import Literal

from rag.answering import (
    LANGUAGE_NAMES,
    NOT_FOUND,
    Answerer,
    disclaimer_for,
    hits_to_passages,
    passage_block,
    tidy_generated,
)
from rag.config import Settings
from rag.errors import InvalidInput, NotFound
from rag.extractive import count_words, extractive_summary, join_sentences, summary_parts
from rag.generators import EXTRACTIVE, Generator, GeneratorError, GeneratorPool, count_tokens, fallback_reason
from rag.grounding import (
    Citation,
    Evidence,
    Passage,
    check_text,
    chunk_passage,
    clean_citations,
    embedder_fits,
    split_sentences,
    strip_citations,
)
from rag.retriever import Retriever
from rag.snapshot import Snapshot
from rag.text import detect_language
from rag.types import Filters

log = logging.getLogger(__name__)

SummaryStyle = Literal["brief", "bullets"]
STYLES: tuple[str, ...] = typing.get_args(SummaryStyle)
MIN_WORDS, MAX_WORDS = 10, 1000
DEFAULT_WORDS = 120  # the budget when none is given ...
WORDS_PER_PART = 20  # ... or, for a document summary, this many words per top-level section,
MAX_DEFAULT_WORDS = 320  # up to this many: a long handbook's summary reaches its main sections
MAX_REDUCE_ROUNDS = 4  # each round shrinks the text by the group size; four rounds cover any real document

SYSTEM_PROMPT = ("You summarize documents using only the numbered passages the user gives you. "
                 "Cite the passages you use with their numbers in square brackets, like [1]. Write in {language}.")
STYLE_INSTRUCTIONS = {
    "brief": "as one short paragraph",
    "bullets": "as a bulleted list, one point per line starting with \"- \"",
}


class UnknownDocument(NotFound):
    """A requested document id is not in the snapshot."""

    def __init__(self, doc_id: str, generation_id: str, field: str = "doc_ids"):
        super().__init__(f"unknown document id {doc_id!r} (not in index generation {generation_id})", field=field)
        self.doc_id = doc_id
        self.generation_id = generation_id


@dataclass
class Summary:
    summary: str
    citations: list[Citation]
    backend: str  # the backend asked for; `fallback` says when the extractive summary replaced its text
    fallback: str | None
    generation_id: str
    doc_ids: list[str]  # the documents summarized
    style: str
    words: int
    disclaimer: str | None = None
    language: str = "en"
    invalid_citations_removed: int = 0
    unsupported_sentences: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    abstained: bool = False  # nothing to summarize: the text says it was not found


class Summarizer:
    def __init__(self, settings: Settings, retriever: Retriever, generators: GeneratorPool):
        self.settings = settings
        self.retriever = retriever
        self.generators = generators

    def summarize(self, snapshot: Snapshot, *, doc_ids: list[str] | None = None, query: str | None = None,
                  filters: Filters | None = None, style: str = "brief", max_words: int | None = None,
                  backend: str | None = None, top_k: int | None = None) -> Summary:
        """`max_words` None: `default_words` of the passages (more for a document of many sections)."""
        if bool(doc_ids) == bool(query and query.strip()):
            raise InvalidInput("give either doc_ids or a query to summarize, not both and not neither",
                               field="doc_ids" if doc_ids else "query")
        if style not in STYLES:
            raise InvalidInput(f"style must be one of {', '.join(STYLES)}, not {style!r}", field="style")
        if max_words is not None and not MIN_WORDS <= max_words <= MAX_WORDS:
            raise InvalidInput(f"max_words must be between {MIN_WORDS} and {MAX_WORDS}, not {max_words}",
                               field="max_words")
        started = time.perf_counter()
        name = self.generators.resolve_name(backend)
        t = time.perf_counter()
        passages = (self._document_passages(snapshot, doc_ids) if doc_ids
                    else self._query_passages(snapshot, query, filters, top_k))
        timings = {"retrieve_ms": _ms(t)}
        if max_words is None:
            max_words = default_words(passages) if doc_ids else DEFAULT_WORDS
        language = detect_language(query or " ".join(p.text for p in passages[:3]))
        if not passages:
            timings["total_ms"] = _ms(started)
            return Summary(NOT_FOUND.get(language, NOT_FOUND["en"]), [], name, None, snapshot.id, [], style, 0,
                           language=language, timings_ms=timings, abstained=True)
        evidence = Evidence(passages, snapshot.embedder if embedder_fits(snapshot.embedder, language) else None)

        draft, fallback = None, None
        if name != EXTRACTIVE:
            t = time.perf_counter()
            try:
                generator = self.generators.get(name)
                draft = self.generators.slots.run(
                    lambda: self._generate(generator, passages, style, max_words, language))
            except GeneratorError as e:
                log.warning("generator %s failed while summarizing: %s", name, e)
                fallback = fallback_reason(e)
            timings["generate_ms"] = _ms(t)

        t = time.perf_counter()
        removed = unsupported = 0
        checked = None
        if draft is not None:
            text, rejected = tidy_generated(draft, "", SYSTEM_PROMPT, max_words=max_words * 2)
            if rejected:
                fallback = rejected
            else:
                text = _apply_style(limit_words(text, max_words), style)
                checked = check_text(text, evidence)
                removed = checked.invalid_removed
                fallback = Answerer._rejection(checked)
        if checked is None or fallback is not None:
            extract = extractive_summary(passages, max_words=max_words, style=style, evidence=evidence, query=query)
            checked = check_text(extract.text, evidence)
        else:
            unsupported = checked.unsupported
        timings["check_ms"] = _ms(t)
        timings["total_ms"] = _ms(started)
        return Summary(summary=checked.text, citations=checked.citations, backend=name, fallback=fallback,
                       generation_id=snapshot.id, doc_ids=list(dict.fromkeys(p.doc_id for p in passages)), style=style,
                       words=count_words(strip_citations(checked.text)),
                       disclaimer=disclaimer_for(passages, checked.citations, self.settings.generator.disclaimers),
                       language=language, invalid_citations_removed=removed, unsupported_sentences=unsupported,
                       timings_ms=timings)

    # -- sources ----------------------------------------------------------------------------------------
    @staticmethod
    def _document_passages(snapshot: Snapshot, doc_ids: list[str]) -> list[Passage]:
        return document_passages(snapshot, doc_ids)

    def _query_passages(self, snapshot: Snapshot, query: str, filters: Filters | None, top_k: int | None
                        ) -> list[Passage]:
        return hits_to_passages(self.retriever.search(snapshot, query, filters=filters, top_k=top_k).hits)

    # -- generation -------------------------------------------------------------------------------------
    def _generate(self, generator: Generator, passages: list[Passage], style: str, max_words: int,
                  language: str) -> str:
        system = SYSTEM_PROMPT.format(language=LANGUAGE_NAMES.get(language, "the language of the passages"))
        budget = self.settings.generator.context_tokens
        max_new = max(self.settings.generator.max_new_tokens, 2 * max_words)
        blocks = [passage_block(p) for p in passages]
        groups = _pack(blocks, generator, budget)
        if len(groups) == 1:
            return generator.generate(_messages(system, "Passages", groups[0], style, max_words),
                                      max_new_tokens=max_new)
        # Map: each group summarized on its own, keeping the global passage numbers.
        partial_words = max(MIN_WORDS, min(max_words, 2 * max_words // len(groups) + 20))
        batch = [_messages(system, "Passages", g, style, partial_words) for g in groups]
        partials = generator.generate_batch(batch, max_new_tokens=max(64, 2 * partial_words))
        valid = {p.n for p in passages}
        partials = [clean_citations(p, valid)[0] for p in partials if p.strip()]
        # Reduce: combine partial summaries until one text is left.
        for _ in range(MAX_REDUCE_ROUNDS):
            groups = _pack(partials, generator, budget)
            if len(groups) == 1:
                break
            partials = generator.generate_batch(
                [_messages(system, "Partial summaries", g, style, max_words) for g in groups], max_new_tokens=max_new)
        return generator.generate(_messages(system, "Partial summaries", groups[0], style, max_words,
                                            combine=True), max_new_tokens=max_new)


def default_words(passages: list[Passage]) -> int:
    """The word budget of a summary none was asked for: DEFAULT_WORDS, or WORDS_PER_PART per part the summary
    should cover (rag.extractive.summary_parts: top-level sections, or documents), up to MAX_DEFAULT_WORDS."""
    parts = len(set(summary_parts(passages))) if passages else 0
    return max(DEFAULT_WORDS, min(MAX_DEFAULT_WORDS, WORDS_PER_PART * parts))


def document_passages(snapshot: Snapshot, doc_ids: list[str]) -> list[Passage]:
    """The documents' chunks in reading order, numbered from 1, each with its heading path."""
    passages: list[Passage] = []
    for doc_id in dict.fromkeys(doc_ids):
        if snapshot.document(doc_id, with_text=False) is None:
            raise UnknownDocument(doc_id, snapshot.id)
        for c in snapshot.document_chunks(doc_id):
            passages.append(chunk_passage(len(passages) + 1, c, 1.0))
    return passages


def _messages(system: str, label: str, texts: list[str], style: str, max_words: int, combine: bool = False
              ) -> list[dict]:
    verb = "Combine them into one summary" if combine else "Write a summary"
    body = "\n\n".join(texts)
    ask = f"{verb} of at most {max_words} words, {STYLE_INSTRUCTIONS[style]}. Keep the [n] citations."
    return [{"role": "system", "content": system}, {"role": "user", "content": f"{label}:\n\n{body}\n\n{ask}"}]


def _pack(texts: list[str], generator: Generator, budget: int) -> list[list[str]]:
    """Consecutive texts in groups of at most `budget` tokens (a longer single text is cut to fit)."""
    groups: list[list[str]] = [[]]
    used = 0
    for text in texts:
        cost = count_tokens(generator, text)
        if cost > budget:
            text = text[:max(1, len(text) * budget // cost)]
            cost = budget
        if used + cost > budget and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].append(text)
        used += cost
    return groups


def limit_words(text: str, max_words: int) -> str:
    """Whole sentences (or bullet lines) up to `max_words` words, citation markers not counted."""
    kept, words = [], 0
    for line in text.split("\n"):
        out_line = ""
        for s in split_sentences(line) or []:
            size = count_words(strip_citations(s.text))
            if words + size > max_words:
                break
            out_line = line[:s.end]
            words += size
        if out_line:
            kept.append(out_line.rstrip())
        if words >= max_words:
            break
    return "\n".join(kept) if kept else text


_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+", re.MULTILINE)


def _apply_style(text: str, style: str) -> str:
    """Bullets: one "- " line per sentence unless the model already wrote a list. Brief: one paragraph."""
    has_bullets = bool(_BULLET.search(text))
    if style == "bullets":
        if has_bullets:
            return _BULLET.sub("- ", text)
        return "\n".join(f"- {text[s.start:s.end].strip()}" for s in split_sentences(text))
    if has_bullets:
        return join_sentences([text[s.start:s.end].strip() for s in split_sentences(text)])
    return text


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
