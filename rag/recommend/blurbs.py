"""`explain=true`: one short, personalized sentence per recommended item, grounded in the document.

The configured generator writes the sentences, all items of a list in one batch. Each one is checked before it
is shown: one sentence of 6-45 words, every figure it states occurs in the document, and most of its content
words come from the document or from what we know about the reader (the support check answers use, see
rag.grounding). A blurb that fails, a generator that is unavailable, fails or times out, and the `extractive`
backend all give the document's own opening sentences instead: never an invented claim. `Blurb.source` says
which, and the writer's `fallback` why, as answers and summaries do (all slots busy is `GeneratorBusy`, as for
them).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from rag.extractive import count_words, join_sentences
from rag.generators.base import EXTRACTIVE, GeneratorError, GeneratorPool, fallback_reason
from rag.grounding import Evidence, Passage, embedder_fits, split_sentences, strip_citations

log = logging.getLogger(__name__)

EXCERPT_WORDS = 120  # of the document the generator sees: enough for its gist, short enough for a 135M model
MAX_NEW_TOKENS = 64
MIN_WORDS, MAX_WORDS = 6, 45

SYSTEM = ("You write one-sentence reading recommendations. Use only facts stated in the document excerpt. "
          "Address the reader as \"you\". Write exactly one sentence of at most 30 words, in {language}, with no "
          "lists, quotes or citations.")
LANGUAGES = {"en": "English", "zh": "Chinese"}


@dataclass
class Blurb:
    text: str
    source: str  # "generator" | "document"


def lead_sentences(doc: dict, max_words: int = 40) -> str | None:
    """The document's own opening sentences (headings, tables and a repeated title skipped), ~15-40 words."""
    body = "\n".join(line for line in (doc.get("text") or "").splitlines() if not line.lstrip().startswith("#"))
    title = (doc.get("title") or "").strip()
    parts: list[str] = []
    words = 0
    for sent in split_sentences(body):
        t = sent.text.strip()
        if title and t.startswith(title):  # a title line the loader kept in the text
            t = t[len(title):].lstrip(" :.-")
        if not t or t.startswith("|"):
            continue
        w = count_words(t)
        if parts and words + w > max_words:
            break
        parts.append(t)
        words += w
        if words >= 15:
            break
    return join_sentences(parts) or None


def _excerpt(doc: dict) -> str:
    body = " ".join(line.strip() for line in (doc.get("text") or "").splitlines()
                    if line.strip() and not line.lstrip().startswith(("#", "|")))
    words = body.split()
    return " ".join(words[:EXCERPT_WORDS]) if len(words) > EXCERPT_WORDS else body[:EXCERPT_WORDS * 6]


def _reader(summary: dict[str, Any]) -> str:
    parts = []
    if summary.get("recent_titles"):
        parts.append("recently read: " + "; ".join(summary["recent_titles"][:3]))
    if summary.get("interests"):
        parts.append("interested in: " + ", ".join(summary["interests"][:5]))
    if summary.get("domains"):
        parts.append("reads about: " + ", ".join(summary["domains"][:3]))
    return "; ".join(parts) or "a new reader"


def _first_sentence(text: str) -> str:
    text = re.sub(r"\s+([.,;:!?。，；：！？])", r"\1", strip_citations(text)).strip().strip('"“”\'').strip()
    sents = split_sentences(text)
    return (sents[0].text if sents else text).strip().strip('"“”').strip()


class BlurbWriter:
    """Callable per item (the Recommender's Explainer) and per list (`explain_many`, one generator batch).

    One writer per request: after `blurbs()`, `fallback` says why opening sentences replaced generated blurbs
    (None when none did, or when the backend is `extractive`)."""

    def __init__(self, generators: GeneratorPool, embedder=None, backend: str | None = None):
        self.generators = generators
        self.embedder = embedder  # for the paraphrase part of the support check; None: words only
        self.backend = backend
        self.fallback: str | None = None

    def __call__(self, doc: dict, summary: dict[str, Any]) -> str | None:
        return self.explain_many([doc], summary)[0]

    def explain_many(self, docs: list[dict], summary: dict[str, Any]) -> list[str | None]:
        return [b.text if b else None for b in self.blurbs(docs, summary)]

    def blurbs(self, docs: list[dict], summary: dict[str, Any]) -> list[Blurb | None]:
        reader = _reader(summary)
        excerpts = [_excerpt(doc) for doc in docs]
        drafts = self._generate(docs, excerpts, reader)
        out: list[Blurb | None] = []
        rejected = 0
        for doc, excerpt, draft in zip(docs, excerpts, drafts):
            if draft is not None:
                sentence = _first_sentence(draft)
                if self._grounded(sentence, doc, excerpt, reader):
                    out.append(Blurb(sentence, "generator"))
                    continue
                rejected += 1
                log.info("blurb for %s rejected: %r", doc.get("doc_id"), sentence[:200])
            lead = lead_sentences(doc)
            out.append(Blurb(lead, "document") if lead else None)
        if rejected and self.fallback is None:
            self.fallback = (f"{rejected} of {len(docs)} generated blurbs were not supported by their documents; "
                             "their opening sentences are shown")
        return out

    def _generate(self, docs: list[dict], excerpts: list[str], reader: str) -> list[str | None]:
        none: list[str | None] = [None] * len(docs)
        self.fallback = None
        try:
            if self.generators.resolve_name(self.backend) == EXTRACTIVE:
                return none
            generator = self.generators.get(self.backend)
        except (GeneratorError, ValueError) as e:
            log.warning("blurbs fall back to opening sentences: %s", e)
            self.fallback = f"generator unavailable: {e}"
            return none
        batch = []
        for doc, excerpt in zip(docs, excerpts):
            language = LANGUAGES.get(doc.get("language") or "en", "English")
            user = (f"Reader: {reader}\nWhy it is recommended: {doc.get('reason') or 'it matches the reader'}\n"
                    f"Document title: {doc.get('title') or ''}\nDocument excerpt: {excerpt}\n\n"
                    "In one sentence, tell the reader what this document offers them.")
            batch.append([{"role": "system", "content": SYSTEM.format(language=language)},
                          {"role": "user", "content": user}])
        try:
            return list(self.generators.slots.run(lambda: generator.generate_batch(batch,
                                                                                  max_new_tokens=MAX_NEW_TOKENS)))
        except GeneratorError as e:  # failed or timed out: the opening sentences still explain the item
            log.warning("blurbs fall back to opening sentences: %s", e)
            self.fallback = fallback_reason(e)
            return none

    def _grounded(self, sentence: str, doc: dict, excerpt: str, reader: str) -> bool:
        words = count_words(sentence)
        if not (MIN_WORDS <= words <= MAX_WORDS) or "\n" in sentence or re.search(r"[{}<>|]", sentence):
            return False
        title = doc.get("title") or ""
        if sentence.lower().rstrip(".!") == title.lower():
            return False
        # What the blurb may draw on: the document, the reason we give, and the reader's own interests/titles.
        # The excerpt is what the generator saw; a claim from elsewhere in the document is not checkable cheaply.
        source = "\n".join([title, excerpt, doc.get("reason") or "", reader])
        embedder = self.embedder if embedder_fits(self.embedder, doc.get("language") or "en") else None
        verdict = Evidence([Passage(1, str(doc.get("doc_id", "")), "", title, source, 1.0)], embedder) \
            .verdict(sentence)
        return verdict.supported
