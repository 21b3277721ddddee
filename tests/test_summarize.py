"""Summaries over a real index: extractive (always available), map-reduce with a stub generator, errors, and
(slow) the real SmolLM2."""

from __future__ import annotations

import re
import textwrap

import pytest

from rag.errors import NotFound
from rag.extractive import count_words
from rag.generators import GeneratorError, GeneratorPool
from rag.grounding import cited_numbers, split_sentences, strip_citations
from rag.retriever import Retriever
from rag.summarize import Summarizer, UnknownDocument

LONG_TOPICS = [
    ("Budgeting", "A budget assigns every month's income to spending, saving and debt repayment. The 50/30/20 rule "
     "puts half of take-home pay toward needs, thirty percent toward wants and twenty percent toward savings. "
     "Tracking spending for two months shows where money actually goes."),
    ("Emergency fund", "An emergency fund covers three to six months of essential expenses. It belongs in an "
     "insured savings account that can be reached within a day. Households with irregular income should aim "
     "for the upper end of that range."),
    ("Debt", "High-interest debt such as credit card balances should be repaid before investing. The avalanche "
     "method pays the highest interest rate first and minimizes total interest. The snowball method pays the "
     "smallest balance first and builds motivation."),
    ("Retirement", "Employer retirement plans often match contributions up to a percentage of salary. Contributing "
     "enough to receive the full match is an immediate return on savings. Tax-advantaged accounts let "
     "investments compound without yearly taxes."),
    ("Investing", "Low-cost index funds spread risk across hundreds of companies. Expense ratios below 0.2 percent "
     "keep more of the return with the investor. Rebalancing once a year keeps the portfolio at its target mix."),
    ("Insurance", "Health, disability and term life insurance protect a household from losses it could not absorb. "
     "A higher deductible lowers premiums but raises out-of-pocket costs. Policies should be reviewed after "
     "marriage, a birth or a new home."),
]


def _long_doc() -> str:
    parts = ["# Personal finance handbook", "This handbook explains the basic habits of sound personal finance."]
    for title, body in LONG_TOPICS:
        parts += [f"## {title}", body]
    return "\n\n".join(parts)


DOCS = {
    "finance/handbook.md": ("fin-handbook", "finance", _long_doc()),
    "medical/sleep.md": ("med-sleep", "medical", """
        # Sleep hygiene
        Adults need seven to nine hours of sleep each night for good health.
        A regular wake-up time, even at weekends, stabilizes the body clock.
        Screens and caffeine in the evening delay sleep onset and should be avoided.
        """),
    "education/feedback.md": ("edu-feedback", "education", """
        # Feedback that works
        Feedback improves learning when it is specific and arrives soon after the work.
        Comments that tell students what to do next help more than grades alone.
        Peer feedback with a clear rubric lets students learn from each other's work.
        """),
}


@pytest.fixture(scope="module")
def index(tmp_path_factory, models_dir):
    from indexer.build import build
    from rag.config import load_settings
    from rag.application import Application

    root = tmp_path_factory.mktemp("summary-docs")
    for rel, (doc_id, domain, body) in DOCS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = textwrap.dedent(body).strip()
        path.write_text(f"---\nid: {doc_id}\ntitle: \"{body.splitlines()[0][2:]}\"\ndomain: {domain}\n---\n{body}\n",
                        encoding="utf-8")
    home = tmp_path_factory.mktemp("summary-home")
    settings = load_settings(environ={}, home=str(home), model_cache=str(models_dir))
    settings.index.chunk_tokens = 80  # the handbook becomes several chunks: map-reduce has groups to make
    settings.index.chunk_overlap = 10
    build(settings, [root], show_progress=False)
    return settings, Application(settings).snapshot()


class Stub:
    """Summarizes by copying the first sentence of every passage in the prompt (a faithful small model)."""

    name = "stub"

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.generate_calls: list[list[dict]] = []
        self.batch_calls: list[list[list[dict]]] = []

    def _summary(self, messages) -> str:
        if self.fail:
            raise self.fail
        prompt = messages[-1]["content"]
        if prompt.startswith("Partial summaries"):
            body = prompt.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
            return " ".join(p.strip() for p in body.split("\n\n"))
        lines = re.findall(r"^\[(\d+)\] .*? — (.*)$", prompt, re.MULTILINE)
        return " ".join(f"{split_sentences(text)[0].text} [{n}]" for n, text in lines if split_sentences(text))

    def generate(self, messages, *, max_new_tokens, temperature=0.0):
        self.generate_calls.append(messages)
        return self._summary(messages)

    def stream(self, messages, *, max_new_tokens, temperature=0.0):
        yield self.generate(messages, max_new_tokens=max_new_tokens)

    def generate_batch(self, batch, *, max_new_tokens):
        self.batch_calls.append(batch)
        return [self._summary(m) for m in batch]


def summarizer(settings, stub: Stub | None = None) -> Summarizer:
    pool = GeneratorPool(settings.generator, settings.models_dir)
    if stub is not None:
        pool.register("stub", stub)
    return Summarizer(settings, Retriever(settings.retrieval), pool)


def assert_cites_sources(summary, doc_ids):
    assert summary.citations and set(cited_numbers(summary.summary)) == {c.n for c in summary.citations}
    assert {c.doc_id for c in summary.citations} <= set(doc_ids)
    assert all(c.span for c in summary.citations)


def test_extractive_summary_respects_max_words(index):
    settings, snapshot = index
    for limit in (25, 60):
        s = summarizer(settings).summarize(snapshot, doc_ids=["fin-handbook"], max_words=limit, backend="extractive")
        assert 0 < s.words <= limit and count_words(strip_citations(s.summary)) == s.words
        assert s.doc_ids == ["fin-handbook"] and s.style == "brief" and "\n" not in s.summary
        assert_cites_sources(s, ["fin-handbook"])
        assert s.disclaimer == settings.generator.disclaimers["finance"]
        assert s.generation_id == snapshot.id and "total_ms" in s.timings_ms


def test_bullets_style(index):
    settings, snapshot = index
    s = summarizer(settings).summarize(snapshot, doc_ids=["fin-handbook"], style="bullets", max_words=70,
                                       backend="extractive")
    lines = s.summary.splitlines()
    assert len(lines) >= 2 and all(line.startswith("- ") for line in lines)
    assert s.words <= 70


def test_several_documents_and_query(index):
    settings, snapshot = index
    s = summarizer(settings).summarize(snapshot, doc_ids=["med-sleep", "edu-feedback"], max_words=80,
                                       backend="extractive")
    assert s.doc_ids == ["med-sleep", "edu-feedback"]
    assert_cites_sources(s, s.doc_ids)
    q = summarizer(settings).summarize(snapshot, query="how much sleep do adults need", max_words=40,
                                       backend="extractive")
    assert "med-sleep" in {c.doc_id for c in q.citations} and q.words <= 40


def test_unknown_document_is_not_found_naming_the_id(index):
    settings, snapshot = index
    with pytest.raises(UnknownDocument) as err:
        summarizer(settings).summarize(snapshot, doc_ids=["med-sleep", "no-such-doc"], backend="extractive")
    assert isinstance(err.value, NotFound) and err.value.doc_id == "no-such-doc"
    assert "no-such-doc" in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"doc_ids": ["med-sleep"], "query": "sleep"}, "either doc_ids or a query"),
    ({}, "either doc_ids or a query"),
    ({"doc_ids": ["med-sleep"], "style": "poem"}, "style must be one of"),
    ({"doc_ids": ["med-sleep"], "max_words": 3}, "max_words must be between"),
])
def test_bad_requests(index, kwargs, message):
    settings, snapshot = index
    with pytest.raises(ValueError, match=message):
        summarizer(settings).summarize(snapshot, backend="extractive", **kwargs)


def test_map_reduce_when_the_document_exceeds_the_context(index):
    settings, snapshot = index
    settings.generator.context_tokens = 120  # the stub counts ~4 characters a token: several groups
    try:
        stub = Stub()
        s = summarizer(settings, stub).summarize(snapshot, doc_ids=["fin-handbook"], max_words=120, backend="stub")
    finally:
        settings.generator.context_tokens = 1536
    assert stub.batch_calls and len(stub.batch_calls[0]) >= 2  # map: one prompt per group, in one batch
    assert stub.generate_calls and stub.generate_calls[-1][-1]["content"].startswith("Partial summaries")  # reduce
    assert s.fallback is None and s.backend == "stub"
    assert s.words <= 120
    numbers = cited_numbers(s.summary)
    assert len(numbers) >= 3 and max(numbers) > 2  # global passage numbers survived the map step
    assert_cites_sources(s, ["fin-handbook"])


def test_generator_failure_falls_back_to_extractive_summary(index):
    settings, snapshot = index
    s = summarizer(settings, Stub(fail=GeneratorError("down"))).summarize(snapshot, doc_ids=["med-sleep"], max_words=30,
                                                                           backend="stub")
    assert s.fallback == "generator error: down" and 0 < s.words <= 30
    assert_cites_sources(s, ["med-sleep"])


@pytest.mark.slow
def test_smollm2_summary_within_the_word_limit(index):
    settings, snapshot = index
    s = summarizer(settings).summarize(snapshot, doc_ids=["med-sleep"], max_words=40, style="bullets",
                                       backend="transformers")
    assert s.backend == "transformers" and 0 < s.words <= 40
    assert all(line.startswith("- ") for line in s.summary.splitlines())
    assert_cites_sources(s, ["med-sleep"])
