"""Grounded answers over a real index (real MiniLM, real extractive backend), with stub generators where a test
needs a generator to misbehave on purpose, and (slow) the real SmolLM2."""

from __future__ import annotations

import math
import re
import textwrap
import threading

import pytest

from rag.answering import NOT_FOUND, Answerer, CitationStreamFilter, standalone_query, tidy_generated
from rag.generators import GeneratorBusy, GeneratorError, GeneratorPool
from rag.grounding import (
    Evidence,
    Passage,
    check_text,
    cited_numbers,
    clean_citations,
    split_sentences,
    strip_citations,
)
from rag.questions import analyse
from rag.retriever import Retriever
from rag.text import tokenize

# A list long enough for the chunker to cut it (200 tokens a chunk).
SCAMS = [
    ("Phishing", "emails pretending to be from a bank or a delivery company ask you to click a link and sign in on "
                 "a fake page that steals passwords."),
    ("Bank impersonation calls", "a caller claiming to be from the fraud team says your account is at risk and "
                                 "talks you into moving money to a safe account."),
    ("Investment scams", "promises of high, guaranteed returns in currencies or coins, with fake dashboards that "
                         "show profits until you try to withdraw."),
    ("Romance scams", "a fake online partner builds trust over weeks or months and then asks for money for a "
                      "ticket, a visa or a medical emergency."),
    ("Tech support scams", "a pop-up or a call claims your computer is infected and asks for remote access or for "
                           "payment in gift cards."),
    ("Job scams", "easy work-from-home tasks that require the victim to deposit money first to unlock earnings "
                  "that never arrive."),
    ("Fake shops", "websites with prices far below the market take payment for goods that never arrive and vanish "
                   "within weeks."),
]

DOCS = {
    "finance/etf.md": ("fin-etf", "finance", "en", """
        # Exchange-traded funds
        An exchange-traded fund (ETF) holds a basket of securities and trades on a stock exchange like a share.
        Most ETFs track an index such as the S&P 500. Their expense ratios are usually below 0.2 percent a year.

        ## Rebalancing
        Rebalancing means selling assets that grew above their target weight and buying those below it.
        Many investors rebalance once a year or when an allocation drifts by more than five percentage points.
        """),
    "finance/mortgage.md": ("fin-mortgage", "finance", "en", """
        # Fixed and variable mortgages
        A fixed-rate mortgage keeps the same interest rate for the whole term, so monthly payments never change.
        A variable-rate mortgage follows a reference rate; payments rise when central banks raise rates.
        """),
    "medical/hypertension.md": ("med-hypertension", "medical", "en", """
        # Measuring blood pressure at home
        Hypertension is diagnosed when blood pressure stays at or above 130/80 mmHg on repeated measurements.
        Measure at the same time each morning, seated, after five minutes of rest, with the cuff at heart level.
        Avoid caffeine and exercise for 30 minutes before measuring.
        """),
    "medical/vaccines.md": ("med-vaccines", "medical", "en", """
        # Childhood vaccination schedule
        The measles, mumps and rubella (MMR) vaccine is given in two doses: at 12 to 15 months and at 4 to 6 years.
        Influenza vaccination is recommended every year for everyone older than six months.
        """),
    "education/formative.md": ("edu-formative", "education", "en", """
        # Formative assessment
        Formative assessment checks understanding during learning so that teaching can adjust.
        Exit tickets, mini whiteboards and think-pair-share are quick formative techniques.
        """),
    "education/fractions-zh.md": ("edu-fractions-zh", "education", "zh", """
        # 小学数学分数教学
        分数教学应从具体的实物开始，例如把一个披萨平均分成四份，每份就是四分之一。
        学生理解分数的意义以后，再学习比较分数的大小和分数的加减法。
        """),
    "finance/debt.md": ("fin-debt", "finance", "en", """
        # Paying off debt: two methods
        Which debt to pay off first changes how much interest you pay in total.
        The two best-known strategies are the debt avalanche and the debt snowball.

        - Avalanche: direct extra payments to the debt with the highest interest rate first.
        - Snowball: direct extra payments to the debt with the smallest balance first.
        """),
    "medical/sleep.md": ("med-sleep", "medical", "en", """
        # Sleep health
        Sleep lets the brain consolidate memories and regulate hormones.

        ## How much sleep do people need?

        | Age group | Recommended sleep per 24 hours |
        |---|---|
        | Infants 4–12 months | 12–16 hours (including naps) |
        | Children 6–12 years | 9–12 hours |
        | Teenagers 13–18 years | 8–10 hours |
        | Adults 18–60 years | 7 or more hours |
        | Adults over 60 | 7–9 hours |

        Keep a regular wake-up time, even at weekends.
        """),
    "medical/fever-dosing.md": ("med-fever-dosing", "medical", "en", """
        # Fever medicine for children
        Give fever medicine by the child's weight, not by age, and use the measuring syringe from the pack.

        ## Dose by weight

        | Child's weight | Typical age | Ibuprofen dose (mg) | Acetaminophen dose (mg) |
        |---|---|---|---|
        | 5.5–7.7 kg (12–17 lb) | 4–11 months | 50 mg, from 6 months only | 80 mg |
        | 8.2–10.5 kg (18–23 lb) | 12–23 months | 75 mg | 120 mg |
        | 10.9–15.9 kg (24–35 lb) | 2–3 years | 100 mg | 160 mg |
        | 16.3–21.3 kg (36–47 lb) | 4–5 years | 150 mg | 240 mg |
        | 21.8–26.8 kg (48–59 lb) | 6–8 years | 200 mg | 320 mg |
        | 27.2–32.2 kg (60–71 lb) | 9–10 years | 250 mg | 400 mg |
        | 32.7–43.1 kg (72–95 lb) | 11 years | 300 mg | 480 mg |
        | 43.5 kg and above (96 lb and above) | 12 years and older | 400 mg | 640 mg |
        """),
    "finance/northwind-report.md": ("fin-northwind", "finance", "en", """
        # Northwind Tools annual report 2019
        Northwind Tools makes hand tools for professional builders.

        ## Selected financial data (in millions of US dollars)

        |  | 2019 | 2018 | 2017 |
        |---|---|---|---|
        | Net sales | 1,496.5 | 1,202.9 | 1,107.7 |
        | Operating cash outflow | (41.2) | (88.6) | (12.0) |
        | Research and development | 88.1 | 96.4 | 71.0 |
        | Interest expense | 12.0 | 10.5 | 9.8 |

        ## Net sales by region in 2019

        | Region | Net sales 2019 |
        |---|---|
        | North America | 812.4 |
        | Europe | 401.7 |
        | Asia Pacific | 282.4 |
        | Total | 1,496.5 |
        """),
    "education/grading-scale.md": ("edu-grading-scale", "education", "en", """
        # Westbrook High grading scale
        Teachers convert percentage scores to letter grades with this scale.

        | Minimum score | Letter grade | Grade points |
        |---|---|---|
        | 90 | A | 4.0 |
        | 80 | B | 3.0 |
        | 70 | C | 2.0 |
        | 60 | D | 1.0 |
        """),
    "finance/northwind-zh.md": ("fin-northwind-zh", "finance", "zh", """
        # 北风工具公司年度财务摘要
        | 项目 | 2019年 | 2018年 |
        |---|---|---|
        | 营业收入（万元） | 12,000 | 10,000 |
        | 净利润（万元） | 1,500 | 1,800 |
        """),
    "finance/scams.md": ("fin-scams", "finance", "en", "# Scams and fraud\n\n## The most common scams\n\n" + "\n".join(
        f"- **{name}:** {what}" for name, what in SCAMS)),
    "education/gaokao-zh.md": ("edu-gaokao-zh", "education", "zh", """
        # 新高考志愿填报
        ## 志愿模式
        “专业＋院校”模式以一所院校的一个专业为一个志愿单位，志愿数量较多，例如浙江可填报80个志愿、山东可填报96个志愿。
        """),
    "medical/diabetes-diet-zh.md": ("med-diabetes-diet-zh", "medical", "zh", """
        # 糖尿病患者的饮食
        ## 每天吃多少
        - 主食：每餐约一拳头大小，粗细搭配。
        - 水果：血糖平稳时可以吃，每天约200克，放在两餐之间。
        - 蔬菜：每天500克以上，深色蔬菜占一半。
        """),
    "finance/pension-zh.md": ("fin-pension-zh", "finance", "zh", """
        # 个人养老金制度
        在中国境内参加城镇职工基本养老保险的劳动者，都可以参加个人养老金。

        ## 缴费规则
        - 每人每年缴费上限为12000元，可以按月、分次或按年缴纳。
        - 账户内资金在满足领取条件前封闭运行，不能提前支取。
        """),
}


def write_docs(root, docs=DOCS):
    for rel, (doc_id, domain, lang, body) in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = textwrap.dedent(body).strip()
        title = body.splitlines()[0][2:]
        path.write_text(f"---\nid: {doc_id}\ntitle: \"{title}\"\ndomain: {domain}\nlanguage: {lang}\n---\n{body}\n",
                        encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def index(tmp_path_factory, models_dir):
    """(settings, generation) of a small real index built with the production indexer."""
    from indexer.build import build
    from rag.config import load_settings
    from rag.application import Application

    home = tmp_path_factory.mktemp("answer-home")
    settings = load_settings(environ={}, home=str(home), model_cache=str(models_dir))
    build(settings, [write_docs(tmp_path_factory.mktemp("answer-docs"))], show_progress=False)
    return settings, Application(settings).snapshot()


class Stub:
    """A generator that answers what a test tells it to: a string, a function of the prompt, or an error."""

    def __init__(self, reply, piece_chars: int = 3):
        self.reply = reply
        self.piece_chars = piece_chars
        self.calls: list[list[dict]] = []
        self.name = "stub"

    def generate(self, messages, *, max_new_tokens, temperature=0.0):
        self.calls.append(messages)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply(messages) if callable(self.reply) else self.reply

    def stream(self, messages, *, max_new_tokens, temperature=0.0):
        text = self.generate(messages, max_new_tokens=max_new_tokens)
        for i in range(0, len(text), self.piece_chars):
            yield text[i:i + self.piece_chars]

    def generate_batch(self, batch, *, max_new_tokens):
        return [self.generate(m, max_new_tokens=max_new_tokens) for m in batch]


def first_sentence_of(n: int):
    """A reply that copies the first sentence of passage [n] from the prompt (a faithful answer)."""

    def reply(messages):
        prompt = messages[-1]["content"]
        block = re.search(rf"^\[{n}\] .*? — (.*?)$", prompt, re.MULTILINE).group(1)
        return split_sentences(block)[0].text

    return reply


def answerer_with(settings, stub: Stub | None = None, **pool_kw) -> Answerer:
    pool = GeneratorPool(settings.generator, settings.models_dir, **pool_kw)
    if stub is not None:
        pool.register("stub", stub)
    return Answerer(settings, Retriever(settings.retrieval), pool)


def extractive_asker(index):
    """ask(question) -> the extractive backend's Answer over the module's index."""
    settings, snapshot = index
    answerer = answerer_with(settings)
    return lambda question: answerer.answer(snapshot, question, backend="extractive")


def assert_citations_valid(answer):
    given = {p.n for p in answer.passages}
    assert set(cited_numbers(answer.answer)) <= given
    for c in answer.citations:
        p = next(p for p in answer.passages if p.n == c.n)
        assert (c.doc_id, c.chunk_id, c.title) == (p.doc_id, p.chunk_id, p.title)
        assert c.span and c.span in p.text.replace("**", "")


# --- extractive backend -------------------------------------------------------------------------------------

def test_extractive_answer_cites_the_supporting_passage(index):
    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "What blood pressure means hypertension?", backend="extractive")
    assert not ans.abstained and ans.fallback is None and ans.backend == "extractive"
    assert "130/80" in ans.answer
    assert ans.citations and ans.citations[0].doc_id == "med-hypertension"
    assert_citations_valid(ans)
    assert ans.generation_id == snapshot.id and ans.language == "en"
    assert {"retrieve_ms", "check_ms", "total_ms"} <= set(ans.timings_ms)


def test_medical_answer_carries_the_medical_disclaimer(index):
    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "When is the MMR vaccine given?", backend="extractive")
    assert ans.citations[0].doc_id == "med-vaccines"
    assert ans.disclaimer == settings.generator.disclaimers["medical"]
    edu = answerer_with(settings).answer(snapshot, "What are quick formative assessment techniques?",
                                         backend="extractive")
    assert edu.disclaimer is None


# --- abstention ---------------------------------------------------------------------------------------------

def test_off_topic_question_abstains(index):
    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "Who won the 1998 World Cup?", backend="extractive")
    assert ans.abstained and ans.answer == NOT_FOUND["en"]
    assert ans.citations == [] and 0 < len(ans.passages) <= 3  # the closest passages, for the reader to judge
    assert ans.disclaimer is None


def test_chinese_off_topic_question_abstains_in_chinese(index):
    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "谁赢得了1998年世界杯？", backend="extractive")
    assert ans.abstained and ans.language == "zh"
    assert ans.answer == NOT_FOUND["zh"] and re.search(r"[\u4e00-\u9fff]", ans.answer)


def test_no_hits_under_filters_abstains(index):
    from rag.types import Filters

    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "What is an ETF?", filters=Filters.of(domain="medical", tags="nope"),
                                         backend="extractive")
    assert ans.abstained and ans.passages == []


# --- generated answers are checked --------------------------------------------------------------------------

def test_citation_to_a_passage_not_given_is_removed_and_counted(index):
    settings, snapshot = index
    stub = Stub(lambda m: first_sentence_of(1)(m) + " [1][7]")
    ans = answerer_with(settings, stub).answer(snapshot, "What is an ETF?", top_k=3, backend="stub")
    assert len(ans.passages) == 3
    assert "[7]" not in ans.answer and ans.invalid_citations_removed == 1
    assert ans.fallback is None and ans.backend == "stub"
    assert [c.n for c in ans.citations] == [1]
    assert_citations_valid(ans)
    prompt = stub.calls[0][-1]["content"]
    assert "[1] " in prompt and "[3] " in prompt and "[4] " not in prompt and "Question: What is an ETF?" in prompt


def test_unsupported_answer_falls_back_to_extractive(index):
    settings, snapshot = index
    stub = Stub("Bananas are yellow fruit that grow in tropical plantations near the equator [1].")
    ans = answerer_with(settings, stub).answer(snapshot, "What is an ETF?", backend="stub")
    assert ans.fallback and "not supported" in ans.fallback
    assert "Banana" not in ans.answer and ans.citations
    assert_citations_valid(ans)


def test_uncited_but_supported_sentence_gets_its_citation(index):
    settings, snapshot = index
    ans = answerer_with(settings, Stub(first_sentence_of(1))).answer(snapshot, "What is an ETF?", backend="stub")
    assert ans.fallback is None and ans.citations_added == 1
    assert cited_numbers(ans.answer) == [1]


def test_generator_failure_falls_back_to_extractive(index):
    settings, snapshot = index
    ans = answerer_with(settings, Stub(GeneratorError("server said no"))).answer(snapshot, "What is an ETF?",
                                                                               backend="stub")
    assert ans.fallback == "generator error: server said no"
    assert not ans.abstained and ans.citations
    assert_citations_valid(ans)


def test_model_that_cannot_load_falls_back_to_extractive(index):
    import msgspec

    settings, snapshot = index
    broken = msgspec.structs.replace(settings, generator=msgspec.structs.replace(settings.generator,
                                                                              model="/no/such/model"))
    ans = answerer_with(broken).answer(snapshot, "What is an ETF?", backend="transformers")
    assert ans.fallback.startswith("generator unavailable") and "/no/such/model" in ans.fallback
    assert ans.citations and not ans.abstained


def test_prompt_echo_is_rejected(index):
    settings, snapshot = index
    echo = Stub(lambda m: m[0]["content"])  # a weak model that repeats its instructions
    ans = answerer_with(settings, echo).answer(snapshot, "What is an ETF?", backend="stub")
    assert ans.fallback == "the generator repeated its instructions"


def test_all_slots_busy_raises_generator_busy(index):
    settings, snapshot = index
    answerer = answerer_with(settings, Stub("x"), queue_timeout_s=0.1)
    settings_slots = answerer.generators.slots.max_concurrent
    holders, release = [], threading.Event()
    for _ in range(settings_slots):
        entered = threading.Event()

        def hold(entered=entered):
            with answerer.generators.slot():
                entered.set()
                release.wait(5)

        t = threading.Thread(target=hold)
        t.start()
        entered.wait(5)
        holders.append(t)
    try:
        with pytest.raises(GeneratorBusy):
            answerer.answer(snapshot, "What is an ETF?", backend="stub")
        # the extractive backend needs no slot
        assert not answerer.answer(snapshot, "What is an ETF?", backend="extractive").abstained
    finally:
        release.set()
        for t in holders:
            t.join()


def test_unknown_backend_and_empty_question_are_errors(index):
    settings, snapshot = index
    with pytest.raises(ValueError, match="unknown generator backend"):
        answerer_with(settings).answer(snapshot, "What is an ETF?", backend="gpt-17")
    with pytest.raises(ValueError, match="empty"):
        answerer_with(settings).answer(snapshot, "   ")


# --- streaming ----------------------------------------------------------------------------------------------

def test_stream_events_in_order_and_without_invalid_citations(index):
    settings, snapshot = index
    stub = Stub(lambda m: first_sentence_of(1)(m) + " [1] [7]", piece_chars=2)  # "[7]" arrives in pieces
    events = list(answerer_with(settings, stub).answer_stream(snapshot, "What is an ETF?", top_k=3, backend="stub"))
    kinds = [e.type for e in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "done"
    assert kinds.count("token") >= 2 and "citation" in kinds
    assert kinds.index("citation") > max(i for i, k in enumerate(kinds) if k == "token")
    streamed = "".join(e.data for e in events if e.type == "token")
    assert "[7]" not in streamed and "[1]" in streamed
    final = events[-1].data
    assert final.invalid_citations_removed == 1 and "[7]" not in final.answer
    assert [p.n for p in events[0].data] == [1, 2, 3]


def test_stream_with_extractive_backend_and_abstention(index):
    settings, snapshot = index
    kinds = [e.type for e in answerer_with(settings).answer_stream(snapshot, "What is an ETF?", backend="extractive")]
    assert kinds[0] == "retrieval" and kinds[-1] == "done" and "token" in kinds and "citation" in kinds
    events = list(answerer_with(settings).answer_stream(snapshot, "Who won the 1998 World Cup?", backend="extractive"))
    assert [e.type for e in events][-1] == "done" and events[-1].data.abstained


def test_stream_generator_failure_still_ends_with_done(index):
    settings, snapshot = index
    events = list(answerer_with(settings, Stub(GeneratorError("boom"))).answer_stream(snapshot, "What is an ETF?",
                                                                                      backend="stub"))
    assert events[-1].type == "done" and events[-1].data.fallback == "generator error: boom"


# --- conversation -------------------------------------------------------------------------------------------

def test_follow_up_question_is_made_standalone(index):
    history = [{"role": "user", "content": "How is hypertension diagnosed?"},
               {"role": "assistant", "content": "At or above 130/80 mmHg [1]."}]
    assert "hypertension" in standalone_query("And how should I measure it?", history).lower()
    assert standalone_query("What is the MMR vaccine schedule for children?", history) == \
        "What is the MMR vaccine schedule for children?"
    settings, snapshot = index
    stub = Stub(first_sentence_of(1))
    ans = answerer_with(settings, stub).answer(snapshot, "And how should I measure it at home?", history=history,
                                               backend="stub")
    assert ans.passages[0].doc_id == "med-hypertension"
    roles = [m["role"] for m in stub.calls[0]]
    assert roles == ["system", "user", "assistant", "user"]
    with pytest.raises(ValueError, match="history"):
        answerer_with(settings).answer(snapshot, "What?", history=[{"role": "tool", "content": "x"}])


# --- the grounding primitives -------------------------------------------------------------------------------

def test_sentence_split_english_and_chinese():
    text = "Dr. Smith paid 3.5 percent. Was it high? Yes! [2]\n- a list item\n个人所得税包括子女教育。每月二千元[1]。"
    assert [s.text for s in split_sentences(text)] == [
        "Dr. Smith paid 3.5 percent.", "Was it high?", "Yes! [2]", "a list item", "个人所得税包括子女教育。", "每月二千元[1]。"]
    # A numbered label after a colon ("Level: 1. Remember", a rendered table row) ends no sentence; a figure does.
    assert [s.text for s in split_sentences("Level: 1. Remember; Verbs: list. The dose is 5. Take it daily.")] == [
        "Level: 1. Remember; Verbs: list.", "The dose is 5.", "Take it daily."]


def test_clean_citations_keeps_only_given_passages():
    assert clean_citations("A [1, 7]. B [7]. C [2-3].", {1, 2}) == ("A [1]. B. C [2].", 3)
    assert cited_numbers("x [3] y [1,2] z 【4】") == [3, 1, 2, 4]


def test_check_text_marks_unsupported_sentences():
    passages = [Passage(1, "d1", "d1#0", "T", "The fee is two percent a year. It is charged monthly.", 1.0)]
    checked = check_text("The fee is two percent a year [1]. Penguins enjoy cold water swimming [1].",
                         Evidence(passages))
    assert checked.judged == 2 and checked.unsupported == 1
    assert checked.citations[0].span == "The fee is two percent a year."


def test_invented_numbers_are_unsupported_even_with_matching_words():
    passages = [Passage(1, "d1", "d1#0", "T", "The 1973 oil crisis began in October 1973 when OAPEC proclaimed an "
                                            "oil embargo. Prices rose from US$3 per barrel to nearly $12.", 1.0)]
    evidence = Evidence(passages)
    invented = "The 1973 oil crisis began on October 16, 1973, when OAPEC announced a 10% increase [1]."
    assert check_text(invented, evidence).unsupported == 1
    assert check_text("The oil crisis began in October 1973 when OAPEC proclaimed an embargo [1].",
                      evidence).unsupported == 0


def test_flipped_polarity_is_unsupported():
    passages = [Passage(1, "d1", "d1#0", "T", "How often should I measure? Measure your blood pressure at home "
                                            "twice a day.", 1.0)]
    evidence = Evidence(passages)
    flipped = check_text("You can't measure your blood pressure at home [1].", evidence)
    assert flipped.unsupported == 1
    kept = check_text("Measure your blood pressure at home twice a day [1].", evidence)
    assert kept.unsupported == 0 and kept.citations[0].span == "Measure your blood pressure at home twice a day."


def test_citation_stream_filter_handles_split_brackets():
    f = CitationStreamFilter({1, 2})
    out = "".join(f.feed(p) for p in ["Fees are low [", "1", "][", "9", "]. Te", "xt [2", "]."]) + f.flush()
    assert out == "Fees are low [1]. Text [2]."


def test_small_model_guards():
    system = "You answer questions using only the numbered passages. Cite them like [1]."
    assert tidy_generated("Answer: Paris is the capital [1].\nQuestion: what else?", "q", system)[0] == \
        "Paris is the capital [1]."
    looped = "La femme de France, la femme de France, la femme de France, la femme"
    assert tidy_generated(looped, "q", system)[0] == "La femme de France"
    assert tidy_generated("   ", "q", system)[1] == "the generator returned an empty answer"
    assert tidy_generated("What is an ETF?", "What is an ETF?", system)[1] == "the generator only repeated the question"


# --- answer selection: what the question asks for ------------------------------------------------------------

def test_table_row_answers_with_its_header(index):
    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "How many hours of sleep do adults need?", backend="extractive")
    assert not ans.abstained and ans.expects == "quantity"
    assert "7 or more hours" in ans.answer and "Adults 18–60 years" in ans.answer
    assert "Recommended sleep per 24 hours" in ans.answer  # the row reads with its header
    assert ans.citations[0].doc_id == "med-sleep"
    assert ans.citations[0].span == "| Adults 18–60 years | 7 or more hours |"  # the row as the passage has it
    assert_citations_valid(ans)


def test_a_conversational_question_is_read_for_what_it_asks(index):
    """Users ask in their own words: "what's", "she'd", "just", "each" say nothing about the fact, and counted as
    question terms missing from the row that answers they made the question look like a near miss (abstained)."""
    settings, snapshot = index
    for q in ("What's the amount of sleep a 9-year-old would need each night?",
              "What's the sleep a 9-year-old should get each night, like?"):
        assert not {"what", "would", "each", "like"} & analyse(q).terms
        ans = answerer_with(settings).answer(snapshot, q, backend="extractive")
        assert not ans.abstained and "9–12 hours" in ans.answer and ans.citations[0].doc_id == "med-sleep"


def test_who_the_asker_asks_for_is_not_a_question_term(index):
    """"My daughter", "our son", "Grandma", "我家老人": the person a user asks for is no word a document holds,
    and counted as a missing term it made an answerable question look like a near miss. A person the question asks
    about ("Luther's father") stays a term."""
    settings, snapshot = index
    assert not {"daughter", "grandma", "son"} & analyse("Grandma asks: how much sleep does my daughter need?").terms
    assert not {"我家", "儿子"} & analyse("我家儿子发烧了怎么办？").terms
    assert "father" in analyse("What was Luther's father's occupation?").terms
    q = "My little daughter is a 9-year-old and her grandma wonders: how many hours should my daughter sleep?"
    ans = answerer_with(settings).answer(snapshot, q, backend="extractive")
    assert not ans.abstained and "9–12 hours" in ans.answer and ans.citations[0].doc_id == "med-sleep"


def test_number_in_the_question_selects_the_row_whose_range_holds_it(index):
    settings, snapshot = index
    answerer = answerer_with(settings)
    teen = answerer.answer(snapshot, "How much sleep does a 15-year-old need?", backend="extractive")
    assert "8–10 hours" in teen.answer and "Teenagers 13–18 years" in teen.answer
    child = answerer.answer(snapshot, "How much sleep does a 9-year-old need?", backend="extractive")
    assert "9–12 hours" in child.answer and "Children 6–12 years" in child.answer


IBUPROFEN_BY_WEIGHT = ["5.5–7.7 kg (12–17 lb): 50 mg, from 6 months only", "8.2–10.5 kg (18–23 lb): 75 mg",
                       "10.9–15.9 kg (24–35 lb): 100 mg", "16.3–21.3 kg (36–47 lb): 150 mg",
                       "21.8–26.8 kg (48–59 lb): 200 mg", "27.2–32.2 kg (60–71 lb): 250 mg",
                       "32.7–43.1 kg (72–95 lb): 300 mg", "43.5 kg and above (96 lb and above): 400 mg"]


def test_a_table_the_question_picks_no_row_of_is_listed_by_its_key(index):
    """"How much ibuprofen can a child take?" names a column, not a row: one weight band's dose would read as the
    dose for every child. Every band is listed with the asked column, the rows of the table's other passage
    included though retrieval returned only one (top_k=1); a weight in the question picks its own row."""
    settings, snapshot = index
    answerer = answerer_with(settings)
    ans = answerer.answer(snapshot, "How much ibuprofen can a child take?", backend="extractive", top_k=1)
    assert not ans.abstained
    lines = ans.answer.splitlines()
    assert lines[0].startswith("Ibuprofen dose (mg), by Child's weight:")
    assert [strip_citations(line) for line in lines[1:]] == IBUPROFEN_BY_WEIGHT
    assert "Acetaminophen" not in ans.answer and "Typical age" not in ans.answer
    cited = {c.chunk_id for c in ans.citations}
    assert len(cited) == 2 and {c.doc_id for c in ans.citations} == {"med-fever-dosing"}  # both parts of the table
    assert len(ans.passages) == 2  # the passage retrieval did not return joined the answer's passages
    assert_citations_valid(ans)

    picked = answerer.answer(snapshot, "My child weighs 19 kg. How much ibuprofen can I give?", backend="extractive")
    assert "16.3–21.3 kg" in picked.answer and "150 mg" in picked.answer
    assert "10.9–15.9 kg" not in picked.answer and len(picked.answer.splitlines()) == 1


def test_comparison_questions_are_answered_from_the_row_they_name(index):
    """"In which year ...?" is answered by comparing the named row's figures; the answer shows the row, cited."""
    ask = extractive_asker(index)
    highest = ask("In which year were Northwind's net sales the highest?")
    assert strip_citations(highest.answer) == "2019 (Net sales — 2019: 1,496.5; 2018: 1,202.9; 2017: 1,107.7)"
    assert highest.citations[0].doc_id == "fin-northwind" and highest.citations[0].span == (
        "| Net sales | 1,496.5 | 1,202.9 | 1,107.7 |")
    assert_citations_valid(highest)
    assert ask("In which year was Northwind's research and development the lowest?").answer.startswith("2017 (")
    # Brackets are outflows: the larger outflow is the larger amount.
    assert ask("In which year was the operating cash outflow the largest?").answer.startswith("2018 (")
    below = ask("In which years was research and development less than 90 million?")
    assert below.answer.startswith("2019, 2017 (")
    region = ask("Which region had the largest net sales in 2019?")  # the total row is not a region
    assert strip_citations(region.answer) == "North America (Region: North America; Net sales 2019: 812.4)"
    assert_citations_valid(region)
    zh = ask("北风工具公司哪一年的净利润更高？")
    assert strip_citations(zh.answer).startswith("2018年（") and zh.citations[0].doc_id == "fin-northwind-zh"
    # A row the documents do not have is not compared, though "Interest expense" shares a word with it: the
    # question is a near miss.
    assert ask("In which year were Northwind's marketing expenses the highest?").abstained
    # The column that names the items answers "which grade", and items beyond a bound are listed, each cited.
    grade = ask("Which letter grade needs the highest minimum score?")
    assert strip_citations(grade.answer) == "A (Minimum score: 90; Letter grade: A; Grade points: 4.0)"
    above = ask("Which regions had net sales above 400 in 2019?").answer.splitlines()
    assert [strip_citations(line) for line in above] == [
        "North America (Region: North America; Net sales 2019: 812.4)", "Europe (Region: Europe; Net sales 2019: 401.7)"]


def test_calculations_show_their_working_from_the_named_row(index):
    ask = extractive_asker(index)
    change = ask("What was the change in Northwind's net sales from 2018 to 2019?")
    assert strip_citations(change.answer) == "293.6 (Net sales: 1,496.5 in 2019 - 1,202.9 in 2018)"
    assert change.citations[0].doc_id == "fin-northwind" and change.unsupported_sentences == 0
    assert_citations_valid(change)
    percent = ask("What was the percentage change in net sales between 2018 and 2019?")
    assert strip_citations(percent.answer) == "24.41% (Net sales: (1,496.5 in 2019 - 1,202.9 in 2018) / 1,202.9)"
    average = ask("What was the average research and development expense from 2017 to 2019?")
    assert strip_citations(average.answer) == ("85.17 (Research and development: (88.1 in 2019 + 96.4 in 2018 + "
                                               "71.0 in 2017) / 3)")
    assert average.unsupported_sentences == 0
    # A reason is not an amount.
    assert not ask("Why did Northwind's net sales increase from 2018 to 2019?").answer[:1].isdigit()
    # The row is named, but the question asks about something its passage never mentions: not computed, and the
    # abstention model refuses it.
    assert ask("What was the change in Northwind's research and development headcount from 2018 to 2019?").abstained


def test_a_generative_backend_does_not_write_a_computed_answer(index):
    settings, snapshot = index
    stub = Stub("Net sales were highest in 2017 [1].")
    ans = answerer_with(settings, stub).answer(snapshot, "In which year were Northwind's net sales the highest?",
                                               backend="stub")
    assert ans.answer.startswith("2019 (") and ans.backend == "stub" and stub.calls == []
    assert ans.fallback == "the answer is computed from a table's figures, not generated"


def test_table_cells_and_table_questions_are_read():
    from rag.questions import Calculation, Comparison
    from rag.tables import cell_value

    assert [cell_value(c) for c in ("$ 1,452.4", "(114)", "$(2,780)", "23%", "—", "n/a", "12.0")] == [
        1452.4, -114.0, -2780.0, 23.0, None, None, 12.0]
    assert analyse("In which year was revenue less than 600,000 thousands?").comparison == Comparison(
        "column", bound=("<", 600000.0), item="year")
    assert analyse("In which quarter was revenue highest?").comparison == Comparison("column", "max")
    assert analyse("Which segment had the highest revenue in 2019?").comparison == Comparison("row", "max",
                                                                                             item="segment")
    assert analyse("哪一年的营业收入最低？").comparison == Comparison("column", "min", item="year")
    assert analyse("In which year was revenue recognized?").comparison is None
    assert analyse("What is the 2019 average inventory?").calculation == Calculation("average")
    assert analyse("What is the percentage change in revenue from 2018 to 2019?").calculation == Calculation(
        "percent_change")
    assert analyse("What is the change between 2018 and 2019 average inventory?").calculation is None
    assert analyse("Why did revenue increase in 2019?").calculation is None
    # "the amount of" says how the figure is asked for; a row never says it. "Carrying amount" names a column.
    assert analyse("What was the amount of Other in 2018?").terms == {"other", "2018"}
    assert "amount" in analyse("What was the carrying amount of goodwill?").terms


def test_a_stated_change_that_agrees_with_the_working_is_the_answer():
    """A row of three periods keeps its change columns beside the years: the report's own figure answers, as it
    rounds it, and the working that checks it stays in view. The $ column is the change, the % column the
    percentage change; a figure that does not agree with the working is not taken for either."""
    from rag.answer_select import ScoredUnit
    from rag.answer_units import passage_units
    from rag.table_answers import table_answer
    from rag.text import tokenize

    table = (" |  | Years ended |  |  | Change |  | \n(In thousands) | 2019 | 2018 | 2017 | 2019 over 2018 |  | "
             "2018 over 2017 | \nServices | $ 1,250 | $ 800 | $ 1,000 | $ 450 | 56% | $ (200) | (20)%\n"
             "Licences | 300 | 240 | 200 | 61 | 26% | 40 | 20%")
    units = passage_units(table, 1)
    words = set().union(*(tokenize(u.text) for u in units))

    def ask(question):
        return table_answer(analyse(question), [ScoredUnit(u, {}, 1.0) for u in units], lambda u: units,
                            rows=units, passage_terms=lambda n: words)

    percent = ask("What was the percentage increase in services from 2018 to 2019?")
    assert (percent.answer, percent.working) == ("56%", "Services: ($ 1,250 in 2019 - $ 800 in 2018) / $ 800 = 56.25%")
    assert percent.figures == {"56.25"}  # the working's own figure: no passage holds it
    change = ask("What was the change in services from 2018 to 2019?")
    assert (change.answer, change.working) == ("$ 450", "Services: $ 1,250 in 2019 - $ 800 in 2018 = 450")
    assert ask("What was the percentage change in services from 2017 to 2018?").answer == "(20)%"
    # 300 - 240 is 60, not the 61 the row states, and 25% is not its 26%: the working's own figures answer
    licences = ask("What was the change in licences from 2018 to 2019?")
    assert (licences.answer, licences.working) == ("60", "Licences: 300 in 2019 - 240 in 2018")
    assert ask("What was the percentage change in licences from 2018 to 2019?").answer == "25%"


def test_the_kind_of_item_a_comparison_asks_for_need_not_be_a_word_of_its_table():
    """"Which business segment ...?": the segments head the columns, and no passage says "business"; the row the
    question names in full is compared across them (the item's kind is what the answer is)."""
    from rag.answer_select import ScoredUnit
    from rag.answer_units import passage_units
    from rag.table_answers import table_answer
    from rag.text import tokenize

    table = (" | Rail Systems | Defence | Software | Total\n"
             "Net balances at June 30, 2018 | 49,786 | 145,713 | 138,127 | 333,626\n"
             "Acquisitions | 2,000 | — | 665 | 2,665\n"
             "Net balances at June 30, 2019 | 51,786 | 145,713 | 138,792 | 336,291")
    units = passage_units(table, 1)
    words = set().union(*(tokenize(u.text) for u in units))
    q = analyse("In which business segment were the net balances at June 30, 2018 the largest?")
    found = table_answer(q, [ScoredUnit(u, {}, 1.0) for u in units], lambda u: units, rows=units,
                         passage_terms=lambda n: words, answerable=False)
    assert found.answer == "Defence" and found.rows == [units[0]]
    # a word the question says of what is compared, missing from the passage, still stops it
    q = analyse("In which business segment were the net pension balances at June 30, 2018 the largest?")
    assert table_answer(q, [ScoredUnit(u, {}, 1.0) for u in units], lambda u: units, rows=units,
                        passage_terms=lambda n: words, answerable=False) is None


def test_a_figure_of_the_asker_s_situation_is_not_missing_from_the_answer():
    """"I put 10% down. When is PMI dropped?": a figure stated before the question describes the asker, and the
    sentence answering states the fact for anyone (78%): it is no near miss. A figure of the asking sentence, or a
    year anywhere, still is one."""
    from rag.answer_select import CHEAP_FEATURES, AnswerSelector, cheap_features

    text = ("If you put less than 20% down on a house, the lender must end mortgage insurance automatically when the "
            "balance reaches 78% of its value.")
    x = AnswerSelector(None).inputs(Evidence([Passage(1, "fin-pmi", "fin-pmi#0", "PMI", text, 1.0)]))
    missing = CHEAP_FEATURES.index("figure_missing"), CHEAP_FEATURES.index("window_missing")

    def features(question):
        return cheap_features(analyse(question), x, {})[0][list(missing)].tolist()

    q = analyse("I put 10% down on my house. When must the lender end mortgage insurance?")
    assert q.text[q.asks_from:] == " When must the lender end mortgage insurance?"
    assert analyse("When must the lender end mortgage insurance?").asks_from == 0
    assert features("I put 25% down on my house. When must the lender end mortgage insurance?") == [0.0, 0.0]
    assert features("When must the lender end mortgage insurance if I put 25% down on my house?") == [1.0, 1.0]
    assert features("I bought my house in 2015. When must the lender end mortgage insurance?")[0] == 1.0


def test_a_row_the_question_names_in_full_answers_before_one_sharing_a_word():
    """Within two logits of the best, the row labelled with the question's own words ("Days sales outstanding")
    answers before one that shares a word of it ("Diluted shares outstanding"); farther behind, it does not."""
    from rag.answer_select import ScoredUnit, named_row_first
    from rag.answer_units import passage_units

    units = passage_units("Line item | 2024 | 2023\nDiluted shares outstanding (millions) | 100 | 102\n"
                          "Days sales outstanding | 59 days | 55 days\nNet income | 243 | 184", 1)
    diluted, dso, income = units
    q = analyse("What were the days sales outstanding in 2024?")
    ranked = [ScoredUnit(diluted, {}, 3.56), ScoredUnit(dso, {}, 3.21), ScoredUnit(income, {}, 2.87)]
    assert [s.unit for s in named_row_first(q, ranked)] == [dso, diluted, income]
    # 1.45 behind: a 24-hour blood-pressure table's whole-day row ("24小时动态血压（全天平均）") outscored the
    # night-time row the question names in full ("动态血压夜间平均") on the words "24" and "小时"
    near = [ScoredUnit(diluted, {}, 4.66), ScoredUnit(dso, {}, 3.21)]
    assert [s.unit for s in named_row_first(q, near)] == [dso, diluted]
    far = [ScoredUnit(diluted, {}, 5.5), ScoredUnit(dso, {}, 3.21)]
    assert [s.unit for s in named_row_first(q, far)] == [diluted, dso]
    assert named_row_first(analyse("How many diluted shares were outstanding?"), ranked) == ranked


def test_a_list_question_is_answered_by_the_list_not_a_sentence_beside_it():
    """"What are the symptoms of a stroke?" Within a logit of a sentence naming one more symptom, an item of the
    BE FAST list answers, and the answer shows every item (the ones that ask something too), each by its text
    while the list fits, by its label ("B - Balance") beyond that."""
    from rag.answer_select import ScoredUnit, list_first
    from rag.extractive import _labelled, _with_neighbours

    signs = ["B - Balance: sudden loss of balance or trouble walking.", "E - Eyes: sudden loss of vision.",
             "F - Face: ask the person to smile. Does one side of the face droop?",
             "S - Speech: is speech slurred? Can the person repeat a sentence?", "T - Time: call 911 at once."]
    text = "Use BE FAST to recognise the signs:\n\n" + "\n".join(f"- {s}" for s in signs) + (
        "\n\nOther sudden symptoms include numbness on one side of the body and confusion.")
    evidence = Evidence([Passage(1, "med-stroke", "med-stroke#0", "Recognising a stroke", text, 1.0)])
    units = evidence.units[1].units
    other, time_item = units[-1], units[5]
    q = analyse("What are the symptoms of a stroke?")
    ranked = [ScoredUnit(other, {}, 5.35), ScoredUnit(time_item, {}, 4.63)]
    assert [s.unit for s in list_first(q, ranked)] == [time_item, other]
    assert list_first(q, [ScoredUnit(other, {}, 6.0), ScoredUnit(time_item, {}, 4.63)])[0].unit is other
    assert list_first(analyse("How many strokes happen a year?"), ranked) == ranked  # not a list question
    assert [u.text for u in _with_neighbours(time_item, evidence, q.terms)] == signs
    assert _labelled(units[1]).text == "B - Balance"


def test_a_section_the_list_question_names_by_its_heading_answers_though_written_as_a_sentence():
    """"What are the symptoms of low blood sugar?" over a handbook whose "Symptoms" section (under "Hypoglycaemia
    (low blood glucose)") is one sentence listing them, while the next section is a list of treatment steps that
    shares the path's words: the named section answers, not the steps."""
    from rag.answer_select import ScoredUnit, list_first
    from rag.answer_units import passage_units

    q = analyse("What are the symptoms of low blood sugar?")
    path = "Diabetes handbook > 9. Hypoglycaemia (low blood glucose)"
    symptoms = passage_units("Shakiness, sweating, fast heartbeat, hunger and confusion.", 1,
                             heading=f"{path} > Symptoms")[0]
    step = passage_units("If glucose is below 70 mg/dL:\n\n- Take 15 g of sugar.\n- Recheck after 15 minutes.", 2,
                         heading=f"{path} > The rule of 15")[2]
    assert symptoms.kind == "sentence" and step.kind == "item" and symptoms.heading == "Symptoms"
    ranked = [ScoredUnit(symptoms, {}, 3.4), ScoredUnit(step, {}, 2.9)]
    assert list_first(q, ranked)[0].unit is symptoms
    # Without its heading naming the list, the sentence gives way to the step (a list member within the margin).
    elsewhere = passage_units("Shakiness, sweating, fast heartbeat, hunger and confusion.", 3,
                              heading=f"{path} > What you may notice")[0]
    assert list_first(q, [ScoredUnit(elsewhere, {}, 3.4), ScoredUnit(step, {}, 2.9)])[0].unit is step


def test_a_list_the_question_names_by_its_heading_answers_over_a_sentence_repeating_its_words():
    """"What are the red flags of a scam?" asks for a set: a sentence saying "... is a red flag" holds the words,
    the list under "Red flags" holds the members. Within 2 logits a member of a list whose heading or lead-in
    says half of the question's terms answers; a long item's first sentence stands for it in the list."""
    from rag.answer_select import ScoredUnit, list_first
    from rag.answer_units import passage_units

    q = analyse("What are the red flags of a scam?")
    assert q.expects == "list" and analyse("What are the most common scams?").expects == "list"
    assert analyse("What are index funds?").expects == "definition"
    flags = passage_units("Almost every scam uses one of these tactics:\n\n- Urgency: act now.\n- Secrecy: hide it.", 1,
                          heading="Red flags")
    mention = passage_units("Any promise of guaranteed returns is a red flag.", 2, heading="Investment fraud")[0]
    urgency = flags[1]
    assert urgency.kind == "item" and urgency.context.startswith("Red flags")
    ranked = [ScoredUnit(mention, {}, 7.51), ScoredUnit(urgency, {}, 6.50)]
    assert [s.unit for s in list_first(q, ranked)] == [urgency, mention]
    assert list_first(q, [ScoredUnit(mention, {}, 9.0), ScoredUnit(urgency, {}, 6.5)])[0].unit is mention

    long_item = "- Muscle symptoms are the most common complaint. " + " ".join(["In blinded trials they were as "
                                                                               "common with placebo."] * 12)
    units = passage_units(long_item + "\n- Liver enzymes may rise mildly.", 1)
    assert [u.kind for u in units[:2]] == ["item", "sentence"]
    assert units[0].text == "Muscle symptoms are the most common complaint."


def test_list_items_join_overlapping_chunks_once_each():
    """Chunks overlap: the item at the cut appears in both passages; the list shows it once, as the best item's own
    passage has it, in document order."""
    from rag.extractive import list_items

    first = "- Phishing: fake emails.\n- Romance: fake partners.\n- Tech support: fake pop-ups."
    second = "- Tech support: fake pop-ups.\n- Job scams: fake tasks."
    evidence = Evidence([Passage(1, "fin-scams", "fin-scams#0", "Scams", first, 1.0, heading="Common scams"),
                         Passage(2, "fin-scams", "fin-scams#1", "Scams", second, 0.9, heading="Common scams"),
                         Passage(3, "fin-scams", "fin-scams#2", "Scams", "- Other: a list of another section.", 0.8,
                                 heading="Protective habits")])
    best = evidence.units[2].units[0]
    assert [(u.n, u.text.split(":")[0]) for u in list_items(best, evidence)] == [
        (1, "Phishing"), (1, "Romance"), (2, "Tech support"), (2, "Job scams")]


def test_what_is_x_is_answered_by_the_list_x_heads_and_not_by_its_head_noun():
    """"What is the rule of 15?" over a heading "The rule of 15" and its steps: the answer is the steps. "The
    rule's strength is simplicity" does not define "the 50/30/20 rule": "rule" is the head noun of many terms."""
    from rag.answer_select import opens_with_definition
    from rag.answer_units import passage_units
    from rag.extractive import shows_list

    rule = analyse("What is the 50/30/20 rule?").subject
    assert not opens_with_definition("The rule's strength is simplicity: you track only three numbers.", rule)
    assert opens_with_definition("The 50/30/20 rule is a way to split take-home pay.", rule)
    assert opens_with_definition("Avalanche: direct extra payments to the debt with the highest rate first.",
                                 analyse("What is the debt avalanche method?").subject)
    steps = passage_units("1. Take 15 g of fast-acting carbohydrate.\n2. Recheck after 15 minutes.", 1,
                          heading="Hypoglycaemia > The rule of 15")
    q = analyse("What is the rule of 15?")
    assert shows_list(q, steps[1]) and not shows_list(analyse("What is hypoglycaemia?"), steps[1])
    sentence = passage_units("The rule of 15 is simple.", 1, heading="The rule of 15")[0]
    assert not shows_list(q, sentence)


def test_a_list_question_answered_by_a_row_shows_the_rows_of_its_table():
    """"What are the steps to return to sport?" over a table keyed by "Step": the answer is the table's rows, a
    row whose key is only a code labelled by its next cell ("Step 2A: Light aerobic exercise"); a cell the question
    says ("Return to sport") picks no row when the question does not name its column. A figure of the question
    picks the row whose range holds it, and a question that does not name the key column gets the row alone."""
    from rag.extractive import LIST_WORDS, _with_neighbours, count_words, lists_rows

    steps = [("1", "Symptom-limited activity", "Daily activities that do not bring on symptoms, such as reading"),
             ("2A", "Light aerobic exercise", "Walking or a stationary bike at a slow to medium pace, no resistance"),
             ("2B", "Moderate aerobic exercise", "Light jogging or cycling at a moderate pace, light resistance work"),
             ("3", "Individual sport-specific exercise", "Running drills and skating drills away from other players"),
             ("4", "Non-contact training drills", "Harder training drills such as passing drills, at full pace"),
             ("5", "Full-contact practice", "Normal training activities, after medical clearance by a doctor"),
             ("6", "Return to sport", "Normal game play, with full participation in matches")]
    table = "| Step | Activity | Examples |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in steps)
    evidence = Evidence([Passage(1, "med-concussion", "med-concussion#0", "Return to sport after a concussion",
                                 table, 1.0)])
    rows = evidence.units[1].units
    q = analyse("What are the steps to return to sport after a concussion?")
    assert lists_rows(q, rows[5])
    shown = [u.text for u in _with_neighbours(rows[5], evidence, q.terms, with_rows=True)]
    assert sum(count_words(t) for t in [u.text for u in rows]) > LIST_WORDS  # long: the others by their labels
    assert shown == [f"Step {a}: {b}" for a, b, _ in steps[:5]] + [rows[5].text, "Step 6: Return to sport"]
    assert not lists_rows(analyse("What are the activities after a concussion?"), rows[5])  # no key column named
    assert not lists_rows(analyse("What are the steps to take 3 days after a concussion?"), rows[5])  # a figure


def test_a_list_cut_into_two_chunks_is_answered_whole(index):
    """The chunker cuts a long list into passages; retrieval returns one of them (top_k=1). The answer shows every
    member, those of the other chunk joined from the document and cited to it."""
    settings, snapshot = index
    chunks = snapshot.document_chunks("fin-scams")
    assert len(chunks) >= 2  # the list spans chunks
    ans = answerer_with(settings).answer(snapshot, "What are the most common scams?", backend="extractive", top_k=1)
    assert not ans.abstained
    shown = [strip_citations(line).split(":")[0] for line in ans.answer.splitlines()]
    assert shown == [name for name, _ in SCAMS]
    assert len({c.chunk_id for c in ans.citations}) >= 2 and len(ans.passages) >= 2
    assert_citations_valid(ans)


def test_an_answer_reads_more_passages_of_one_document_than_a_search_page_shows(index):
    """A search page shows `max_per_doc` passages of a document; an answer reads as many as rank, since the
    section that states the fact may rank low among its own document's chunks (they all share its title)."""
    from rag.config import load_settings

    settings, snapshot = index
    capped = load_settings(environ={"RAG_RETRIEVAL__MAX_PER_DOC": "1"}, home=str(settings.home_path),
                           model_cache=str(settings.models_dir))
    assert capped.retrieval.answer_max_per_doc == 0
    answerer = Answerer(capped, Retriever(capped.retrieval), GeneratorPool(capped.generator, capped.models_dir))
    ans = answerer.answer(snapshot, "Which scams ask for payment in gift cards or a deposit first?",
                          backend="extractive")
    assert len([p for p in ans.passages if p.doc_id == "fin-scams"]) >= 2
    hits = Retriever(capped.retrieval).search(snapshot, "Which scams ask for payment in gift cards or a deposit first?")
    assert len([h for h in hits.hits if h.doc_id == "fin-scams"]) == 1


def test_a_heading_that_asks_the_question_is_answered_by_the_top_of_its_section():
    """"How much should I keep in an emergency fund?" The section under "HOW MUCH IS ENOUGH?" opens with the
    guideline; its worked example shares more words with the question. Within a logit of the example, the first
    unit of the section that states a quantity answers; farther behind, or under a heading that asks nothing, or
    missing a word of the question from its window, it does not."""
    from rag.answer_select import ScoredUnit, asked_by_heading_first
    from rag.answer_units import passage_units

    text = ("HOW MUCH IS ENOUGH?\n\nThe most common guideline is three to six months of essential expenses.\n\n"
            "Example: if essential expenses are 2,800 dollars a month, a six-month fund is 16,800 dollars.\n\n"
            "START SMALL\n\nStart with a first milestone of 1,000 dollars.")
    guideline, example, small = passage_units(text, 1, title="Building an Emergency Fund")
    assert (guideline.heading, small.heading) == ("HOW MUCH IS ENOUGH?", "START SMALL")
    q = analyse("How much should I keep in an emergency fund?")
    place = {1: ("fin-emergency-fund", 1)}
    full = {"kw_window": 1.0}
    ranked = [ScoredUnit(example, full, 6.2), ScoredUnit(small, full, 5.9), ScoredUnit(guideline, full, 5.54)]
    assert [s.unit for s in asked_by_heading_first(q, ranked, place)] == [guideline, example, small]
    far = [ScoredUnit(example, full, 6.8), ScoredUnit(guideline, full, 5.54)]
    assert asked_by_heading_first(q, far, place) == far
    partial = [ScoredUnit(example, full, 6.2), ScoredUnit(guideline, {"kw_window": 0.7}, 5.54)]
    assert asked_by_heading_first(q, partial, place) == partial
    unasked = [ScoredUnit(small, full, 6.2), ScoredUnit(example, {"kw_window": 0.7}, 5.54)]
    assert asked_by_heading_first(q, unasked, place) == unasked
    assert asked_by_heading_first(analyse("Where should I keep an emergency fund?"), ranked, place) == ranked


def test_a_heading_naming_when_the_question_s_act_happens_is_answered_by_the_top_of_its_section():
    """"高血压患者应该什么时候测量血压？" (the answers issue's example): a diagnosis table whose labels share the
    question's words ("24小时动态血压" reads as a time, "测量方式" as the act) outscored the section "测量时间和频率".
    Within two logits, the first unit of a section whose heading names the timing of the question's act answers; a
    heading naming timing but not the act, a question asking no time, or a unit farther behind does not move."""
    from rag.answer_select import ScoredUnit, asked_by_heading_first
    from rag.answer_units import passage_units

    table = ("| 测量方式 | 高血压诊断标准（mmHg） |\n|---|---|\n"
             "| 24小时动态血压（全天平均） | 收缩压≥130和（或）舒张压≥80 |")
    timing = "## 五、测量时间和频率\n\n- 早上：起床后1小时内，服降压药和吃早餐之前测量。\n- 晚上：睡觉前测量。"
    other = "## 用药时间\n\n- 早上：起床后服药。"
    (row,) = passage_units(table, 1, title="高血压的家庭血压监测")
    morning, evening = passage_units(timing, 2, title="高血压的家庭血压监测")
    (pill,) = passage_units(other, 3, title="高血压的家庭血压监测")
    place = {1: ("med-bp", 1), 2: ("med-bp", 3), 3: ("med-bp", 4)}
    q = analyse("高血压患者应该什么时候测量血压？")
    f = {"kw_window": 0.77}
    ranked = [ScoredUnit(row, f, 6.7), ScoredUnit(evening, f, 5.2), ScoredUnit(morning, f, 5.1)]
    assert [s.unit for s in asked_by_heading_first(q, ranked, place)] == [morning, row, evening]
    far = [ScoredUnit(row, f, 7.5), ScoredUnit(morning, f, 5.1)]
    assert asked_by_heading_first(q, far, place) == far
    unnamed = [ScoredUnit(row, f, 6.7), ScoredUnit(pill, f, 5.1)]
    assert asked_by_heading_first(q, unnamed, place) == unnamed
    assert asked_by_heading_first(analyse("高血压患者应该怎样测量血压？"), ranked, place) == ranked


def test_a_row_named_by_its_key_column_and_key_answers_before_a_sentence_sharing_more_words():
    """"How much of payment number 60 goes to principal?": the row "Payment number: 60" answers, not the example
    sentence that shares the loan's figures, within 2 logits; a figure alone (no key column named) does not."""
    from rag.answer_select import ScoredUnit, keyed_row_first
    from rag.answer_units import passage_units

    units = passage_units("Example: a $300,000 loan at 6.5% for 30 years costs $1,896.20 a month.\n\n"
                          "| Payment number | Interest portion | Principal portion |\n|---|---|---|\n"
                          "| 12 | $1,608.40 | $287.81 |\n| 60 | $1,523.20 | $373.01 |", 1)
    example, row12, row60 = units
    q = analyse("In the $300,000, 6.5%, 30-year example, how much of payment number 60 goes to principal?")
    ranked = [ScoredUnit(example, {}, 1.87), ScoredUnit(row12, {}, 0.9), ScoredUnit(row60, {}, 0.5)]
    assert [s.unit for s in keyed_row_first(q, ranked)] == [row60, example, row12]
    assert keyed_row_first(analyse("How much of the 60th payment goes to principal?"), ranked) == ranked
    assert keyed_row_first(q, [ScoredUnit(example, {}, 3.0), ScoredUnit(row60, {}, 0.5)])[0].unit is example


def test_a_lead_in_ending_its_passage_lists_the_rows_of_the_next_chunk_that_the_question_asks_for():
    """A chunk boundary between "... rated their usefulness:" and its table: the rows come from the document's
    next chunk when it was read, and of them the ones with the value the question says ("High")."""
    from rag.extractive import _with_neighbours

    lead_text = "In 2013, Dunlosky and colleagues reviewed ten study techniques and rated their usefulness:"
    table = ("| Technique | Description | Rated utility |\n|---|---|---|\n"
             "| Practice testing | Testing yourself on the material | High |\n"
             "| Distributed practice | Spreading study sessions out over time | High |\n"
             "| Highlighting | Marking important text | Low |\n| Rereading | Reading the text again | Low |")
    passages = [Passage(1, "edu-study", "edu-study#0", "Study skills", f"Why testing works.\n\n{lead_text}", 1.0),
                Passage(2, "edu-study", "edu-study#1", "Study skills", table, 0.9)]
    evidence = Evidence(passages)
    lead = evidence.units[1].units[-1]
    assert lead.text == lead_text
    terms = analyse("Which study techniques did the review rate as having high utility?").terms
    picked = _with_neighbours(lead, evidence, terms)
    assert [u.text.split(";")[0] for u in picked[1:]] == ["Technique: Practice testing",
                                                          "Technique: Distributed practice"]
    assert all(u.n == 2 for u in picked[1:])  # cited to the passage that holds them
    # a question that picks no value: every row; and no next chunk read: the lead-in alone
    every = _with_neighbours(lead, evidence, analyse("Which study techniques did the review rate?").terms)
    assert len(every) == 5
    assert _with_neighbours(lead, Evidence(passages[:1]), terms) == [lead]


def test_a_figure_a_range_holds_is_not_a_missing_word():
    """"68" is not among the words of the row "67–69", but the row answers the question: the range holds it. The
    feature of the question's rarest word missing from a unit's window (a near miss's sign) must not count it."""
    from rag.answer_select import CHEAP_FEATURES, AnswerSelector, cheap_features

    table = "| Percentage | Letter grade |\n|---|---|\n| 67–69 | D+ |\n| 70–72 | C- |"
    x = AnswerSelector(None).inputs(Evidence([Passage(1, "edu-grades", "edu-grades#0", "Grades", table, 1.0)]))
    features = cheap_features(analyse("What letter grade is a percentage of 68?"), x, {})
    by_text = dict(zip((u.text for u in x.units), features))
    missing, held = CHEAP_FEATURES.index("window_missing"), CHEAP_FEATURES.index("in_tightest")
    assert by_text["Percentage: 67–69; Letter grade: D+"][[missing, held]].tolist() == [0.0, 1.0]
    assert by_text["Percentage: 70–72; Letter grade: C-"][[missing, held]].tolist() == [1.0, 0.0]
    # ... and it counts among the words the row holds: "$120,000" (the terms "120" and "000") is found in the
    # bracket "$103,351 – $197,300", not in a bracket that leaves it out, nor in an open "up to" bound.
    table = ("| Rate | Single |\n|---|---|\n| 22% | $48,476 – $103,350 |\n| 24% | $103,351 – $197,300 |\n"
             "| 10% | up to $11,925 |")
    x = AnswerSelector(None).inputs(Evidence([Passage(1, "fin-tax", "fin-tax#0", "Brackets", table, 1.0)]))
    q = analyse("Which rate applies to a single filer with $120,000?")
    assert q.figure_terms == [{"120", "000"}]
    kw = dict(zip((u.text.split(";")[0] for u in x.units), cheap_features(q, x, {})[:, CHEAP_FEATURES.index("kw")]))
    assert kw == {"Rate: 22%": pytest.approx(2 / 6), "Rate: 24%": pytest.approx(4 / 6),
                  "Rate: 10%": pytest.approx(2 / 6)}


def test_a_grade_or_an_age_in_chinese_numerals_is_a_figure_a_band_holds():
    """"孩子现在上八年级" is answered by the row of "七至九年级": a count of grades, years of age or months in Chinese
    numerals reads as digits, both in the question's figures and in a band; other Chinese numerals stay words."""
    from rag.answer_select import CHEAP_FEATURES, AnswerSelector, cheap_features, ranges_in
    from rag.text import arabic_counts

    assert arabic_counts("第四学段（七至九年级）；十二岁以下；两个月") == "第四学段（7至9年级）；12岁以下；2个月"
    assert arabic_counts("第一学段的一些孩子") == "第一学段的一些孩子"
    assert ranges_in("七至九年级") == [(7.0, 9.0, None)]
    q = analyse("孩子现在上八年级，课外阅读总量要求是多少？")
    assert q.figures == [8.0] and q.text[q.figure_spans[0][1]:].startswith("年级")
    table = ("| 学段 | 年级 | 课外阅读总量 |\n|---|---|---|\n| 第二学段 | 三至四年级 | 不少于40万字 |\n"
             "| 第四学段 | 七至九年级 | 不少于260万字 |")
    x = AnswerSelector(None).inputs(Evidence([Passage(1, "edu-zh-reading", "edu-zh-reading#0", "阅读", table, 1.0)]))
    held = [row[CHEAP_FEATURES.index("in_range")] for row in cheap_features(q, x, {})]
    assert held == [0.0, 1.0]


def test_a_user_s_everyday_chinese_word_matches_the_document_s_written_one():
    """Users say 退烧药 and 发烧, documents write 退热药 and 发热: answer selection reads both in the written form, so
    the question matches the sentence as well as if it had used the document's word."""
    from rag.answer_select import CHEAP_FEATURES, AnswerSelector, cheap_features
    from rag.text import formal

    assert formal("孩子发烧了，吃了退烧药") == "孩子发热了，吃了退热药"
    text = "退热药通常在服用后30～60分钟起效，体温下降1～2℃即可。"
    x = AnswerSelector(None).inputs(Evidence([Passage(1, "med-zh-fever", "med-zh-fever#0", "儿童发热", text, 1.0)]))
    kw = CHEAP_FEATURES.index("kw")

    def share(question):
        return cheap_features(analyse(question), x, {})[0][kw]

    said, written = share("给孩子吃了退烧药以后，多久起效？"), share("给孩子吃了退热药以后，多久起效？")
    assert said == written and said > 0.5


def test_a_one_character_chinese_word_of_the_question_matches_the_word_that_holds_it():
    """Segmentation cuts "可以缴多少钱" to "缴" but keeps "缴费" whole: without the characters of the passage's
    words the unit that states the limit shares only "每年" with the question."""
    from rag.answer_select import CHEAP_FEATURES, AnswerSelector, cheap_features, with_characters

    assert with_characters({"缴费", "fee", "多"}) == {"缴费", "缴", "费", "fee", "多"}
    text = "每人每年缴费上限为12000元。领取时按照3%的税率计税。"
    x = AnswerSelector(None).inputs(Evidence([Passage(1, "fin-pension", "fin-pension#0", "个人养老金", text, 1.0)]))
    q = analyse("个人养老金每年最多可以缴多少钱？")
    assert "缴" in q.terms and "缴" not in tokenize(text)
    limit = [u.text for u in x.units].index("每人每年缴费上限为12000元。")
    assert q.terms & x.terms[limit] == {"每年", "缴"}  # "缴" through "缴费"
    kw = cheap_features(q, x, {})[limit, CHEAP_FEATURES.index("kw")]
    assert kw == pytest.approx(2 / len(q.terms))
    # Segmentation cuts "比腋温高" into "比腋" / "温高": the question's "腋温" still matches the passage's text.
    fever = "肛温通常比腋温高0.5℃左右。"
    assert "腋温" not in tokenize(fever)
    x = AnswerSelector(None).inputs(Evidence([Passage(1, "med-fever", "med-fever#0", "发热", fever, 1.0)]))
    assert "腋温" in x.terms[0]


def test_inflected_function_words_are_not_what_a_question_is_about():
    """"having" is not a stop word as "have" is, and its stem is rare in an index that drops "have": counted as a
    term it would be the question's rarest word, missing from the passage that answers."""
    assert analyse("What should I do if someone is having a stroke?").terms == {"stroke"}
    assert analyse("How can I protect myself from scams?").terms == {"protect", "scam"}
    # The words that grade a list say which members come first, not what it is of: a list headed "Warning signs"
    # in a pregnancy guide does not answer the signs of a stroke.
    assert analyse("What are the warning signs of a stroke?").terms == {"sign", "stroke"}
    assert analyse("What are the most common scams?").terms == {"scam"}
    assert "common" in analyse("What is the Common App essay limit?").terms  # not a list question
    # Chinese alike: the pronoun, "多" of "最多", the modal "该" are what "my", "much" and "should" are in English.
    assert analyse("我的孩子发烧了该吃什么药？").terms == {"孩子", "发热", "吃", "药"}  # 发烧 in its written form
    assert "多" not in analyse("个人养老金每年最多可以缴多少钱？").terms
    assert not {"这种", "才能"} & analyse("对乙酰氨基酚这种退烧药，宝宝要满多大才能吃？").terms
    # Contractions are spelled out before the question is read: "what's" is "what is", not a term "what".
    assert analyse("They're asking what's the fee, aren't they?").terms == {"ask", "fee"}


def test_a_place_the_passage_does_not_name_is_a_near_miss(index):
    """A question scoped to a place ("上海") that the best passage never names, while it names others ("浙江",
    "山东"), is answered by another place's rule: abstain, and show the passage. A national rule (a passage naming
    only "中国") holds in every place and answers."""
    settings, snapshot = index
    answerer = answerer_with(settings)
    zhejiang = answerer.answer(snapshot, "浙江新高考可以填报多少个志愿？", backend="extractive")
    assert not zhejiang.abstained and "80个" in zhejiang.answer
    assert zhejiang.citations[0].doc_id == "edu-gaokao-zh"
    shanghai = answerer.answer(snapshot, "上海新高考可以填报多少个志愿？", backend="extractive")
    assert shanghai.abstained and shanghai.answer == NOT_FOUND["zh"]
    assert shanghai.passages[0].doc_id == "edu-gaokao-zh"
    national = answerer.answer(snapshot, "在上海工作的人可以参加个人养老金吗？", backend="extractive")
    assert not national.abstained and "在中国境内参加城镇职工基本养老保险的劳动者" in national.answer


def test_the_places_a_chinese_question_names():
    assert analyse("上海新高考可以填报多少个志愿？").places == {"上海"}
    assert analyse("我在省会城市租房，住房租金专项附加扣除每月是多少？").places == set()
    assert analyse("个人养老金每年最多可以缴多少钱？").places == set()


def test_the_words_chinese_asks_with_are_not_terms():
    """"几次", "哪一年", "多长时间" are how the question asks; no passage holds them, and as terms they read as
    missing from the passage that answers."""
    assert analyse("每人每年能查几次信用报告？").terms == {"每人", "每年", "每人每年", "查", "信用", "报告"}
    assert not {"一年", "哪一年"} & analyse("海姆立克急救法是哪一年提出的？").terms
    assert not {"多长", "长时间", "多长时间"} & analyse("高中生每天书面作业多长时间？").terms
    assert "几部" in analyse("初中阶段每学年必读的是哪几部名著？").terms  # which ones: the names are asked for


def test_stand_for_is_how_a_question_asks():
    assert analyse("What does GRASPS stand for in backward design?").terms == {"grasp", "backward", "design"}


def test_a_chinese_question_has_no_words_jieba_made_up():
    """jieba's HMM joins the characters of two words into one no dictionary holds ("不是我办的" -> "我办"); no
    passage holds such a word, and it read as missing from the sentence that answers (an abstention)."""
    q = "我发现征信报告上有一笔不是我办的贷款，提出异议以后，对方多久内要给我处理结果？"
    assert {"我办", "内要"} <= set(tokenize(q))  # how the index cuts it
    terms = analyse(q).terms
    assert not {"我办", "内要"} & terms and {"办", "征信", "异议", "处理结果"} <= terms


def test_a_quantity_asked_in_a_measure_the_best_unit_does_not_write_is_a_near_miss(index):
    """The dosing table gives milligrams: "how many mL" asks for a volume it does not state (the syrup's strength is
    not there to convert), and a milligram dose read as millilitres is the wrong dosage. The same question in
    milligrams is answered by the row."""
    from rag.answer_select import asked_measure

    settings, snapshot = index
    answerer = answerer_with(settings)
    mg = answerer.answer(snapshot, "How many mg of ibuprofen can a 19 kg child take?", backend="extractive")
    assert not mg.abstained and "150 mg" in mg.answer and mg.citations[0].doc_id == "med-fever-dosing"
    ml = answerer.answer(snapshot, "How many mL of ibuprofen can a 19 kg child take?", backend="extractive")
    assert ml.abstained and ml.answer == NOT_FOUND["en"] and ml.passages[0].doc_id == "med-fever-dosing"
    assert [asked_measure(q) for q in ("高血压患者每天应该摄入多少毫克钾？", "每年能免费查几次信用报告？",
                                       "How many withdrawals a month can I make?")] == ["mg", "times", None]


def test_a_rate_of_money_is_asked_as_a_percentage():
    """"What interest rate (APY) does it pay?" and "利率是多少" want a percentage: "pays interest" and "按国家规定利率
    计息" state none and do not answer; a bare "rate" (CPR's compressions per minute) names no measure."""
    from rag.answer_select import asked_measure, in_other_measure

    apy = "What interest rate (APY) does Harbor Premier Checking pay?"
    assert analyse(apy).expects == "quantity" and asked_measure(apy) == "%"
    assert in_other_measure(apy, "Harbor Premier Checking pays interest and waives most fees.")
    assert not in_other_measure(apy, "Harbor Premier Checking pays 0.25% APY.")
    deposit = "住房公积金账户里的存款，现在每年的利率是多少？"
    assert in_other_measure(deposit, "公积金账户存款按国家规定利率计息，利息每年结息一次。")
    assert not in_other_measure(deposit, "公积金账户存款年利率为1.5%。")
    assert asked_measure("What is the compression rate for CPR?") is None


def test_how_long_asks_a_span_of_time_or_a_length_not_a_date():
    """"How long did the fighters hold out?" is not answered by the day the uprising began: a unit writes a span
    (a duration, a length, years from-to, a bound such as "until" or "for life") or it answers something else."""
    from rag.answer_select import asked_measure, in_other_measure

    q = "How long were the fighters of the Warsaw Ghetto Uprising able to hold out?"
    assert asked_measure(q) == "span" and asked_measure("How long ago did the war end?") is None
    assert in_other_measure(q, "On 19 April 1943, Jewish fighters launched the Warsaw Ghetto Uprising.")
    for said in ("The Ghetto held out for almost a month.", "They fought from 1943 to 1944.",
                 "The river is 6,650 km long.", "They held out until the city fell."):
        assert not in_other_measure(q, said), said
    assert asked_measure("对方多久内要给我处理结果？") == "span"
    assert not in_other_measure("对方多久内要给我处理结果？", "相关机构应当自收到异议之日起20日内进行核查和处理。")


def test_a_fee_or_a_price_is_asked_in_money():
    """"How much is the application fee?" is not answered by "up to 10 activities", nor "每个月收多少钱" by "每天至少2
    小时": a price is written in money, as a share of an amount, or as nothing ("free")."""
    from rag.answer_select import asked_measure, in_other_measure

    fee = "How much is the Common App application fee for each college?"
    assert asked_measure(fee) == "money" and analyse(fee).expects == "quantity"
    assert in_other_measure(fee, "The Common App allows up to 10 activities.")
    for said in ("The fee is $75 per college.", "International ATM withdrawal: $5 plus 3% of amount",
                 "Applying is free for first-generation students."):
        assert not in_other_measure(fee, said), said
    zh = "“双减”以后，学校的课后服务每个月收多少钱？"
    assert in_other_measure(zh, "课后服务每周5天都开展、每天至少2小时。")
    assert not in_other_measure(zh, "课后服务每生每月收费200元。")
    assert asked_measure("How much should I pay toward my credit card each month?") is None


def test_an_acronym_the_passage_neither_writes_nor_spells_out_is_a_near_miss():
    """"What is the limit for a SEP IRA?" over a passage of IRA and 401(k) limits: the fact found is another
    plan's. An acronym the passage writes (inside a longer one: "AGI" in "MAGI") or spells out ("UMC": United
    Methodist Church) is there."""
    from types import SimpleNamespace

    from rag.answer_select import acronym_missing

    limits = SimpleNamespace(title="Retirement accounts", heading="2025 limits", text=(
        "IRA contribution limit: $7,000. IRA catch-up, age 50+: $1,000. Roth IRA phase-out by MAGI: $150,000."))
    assert acronym_missing("What is the 2025 contribution limit for a SEP IRA?", limits)
    assert not acronym_missing("What is the 2025 contribution limit for an IRA?", limits)
    assert not acronym_missing("My modified AGI is $170,000. Can I contribute to a Roth IRA?", limits)
    church = SimpleNamespace(title="Church", heading="", text="The United Methodist Church opposes war.")
    assert not acronym_missing("What does the UMC say about war?", church)
    assert not acronym_missing("What does the church say in the US about war?", church)  # not an acronym


def test_what_the_question_quotes_must_be_in_the_passage():
    """A quoted code ("字母“D”") is asked about as written: a passage explaining "N" and "1"-"7" answers another
    letter. Chinese quotes must be there as written, English ones word by word (users quote in their own order)."""
    from types import SimpleNamespace

    from rag.answer_select import quoted_missing

    record = SimpleNamespace(title="征信报告怎么看", heading="逐月还款记录",
                             text="在逐月还款记录中，“N”表示正常还款；“1”至“7”表示逾期的月数。")
    assert quoted_missing("征信报告的逐月还款记录里出现字母“D”，是什么意思？", record)
    assert not quoted_missing("逐月还款记录里的“N”是什么意思？", record)
    assert quoted_missing("“双减”政策对作业有什么规定？", record)
    homework = SimpleNamespace(title="Homework guidelines", heading="THE 10-MINUTE RULE",
                               text="about 10 minutes of homework per grade level per night")
    assert not quoted_missing("Going by the '10 minutes per grade' guideline, how much homework?", homework)
    assert quoted_missing("What is the 'rule of 15'?", homework)
    assert not quoted_missing("Grandma wants to put five years' worth of gifts into my son's 529 plan.", homework)


def test_another_ordinal_of_what_the_question_counts_gives_way_or_abstains():
    """"第二套房 ... 利率" was answered with the first home's rate (首套), which shares more of its words; a unit
    stating the second home's answers within two logits, and a third home's question, which no unit states,
    abstains rather than take the first or second home's rate. An ordinal the unit does not state at all is no
    mismatch ("the first Super Bowl" against a sentence naming none)."""
    from rag.answer_select import ScoredUnit, ordinal_first, ordinals, other_ordinal
    from rag.answer_units import passage_units

    text = "首套个人住房公积金贷款利率为：5年以上2.6%。第二套住房的公积金贷款利率不低于3.075%。"
    first, second = passage_units(text, 1, title="住房公积金")
    assert ordinals(first.text) == {(1, "套")} and ordinals("the second dose, 3rd trimester") == {
        (2, "dose"), (3, "trimest")}
    q = analyse("我打算用公积金贷款买第二套房，利率最低是多少？")
    ranked = [ScoredUnit(first, {}, 5.2), ScoredUnit(second, {}, 4.1)]
    assert other_ordinal(q, first.text) and not other_ordinal(q, second.text)
    assert [su.unit for su in ordinal_first(q, ranked)] == [second, first]
    assert ordinal_first(q, [ScoredUnit(first, {}, 6.5), ScoredUnit(second, {}, 4.1)])[0].unit is first
    third = analyse("用住房公积金贷款买第三套房，贷款利率是多少？")
    assert other_ordinal(third, first.text) and other_ordinal(third, second.text)
    assert not other_ordinal(analyse("What was the first Super Bowl they played in?"), "They won the title.")


def test_the_other_side_of_a_distinction_is_a_near_miss():
    """"Married but files separately" is not answered by the "married filing jointly" row, nor 私立 by 公立; a unit
    naming both sides, or a question naming both, is no mismatch."""
    from rag.answer_select import other_side

    q = analyse("What's the Roth IRA income phase-out range for someone who is married but files separately?")
    assert other_side(q, "Roth IRA income phase-out, married filing jointly: $236,000–$246,000 MAGI")
    assert not other_side(q, "Married filing separately: $0–$10,000; married filing jointly: $236,000–$246,000")
    assert not other_side(analyse("How do joint and separate filers differ?"), "Married filing jointly: $236,000")
    assert other_side(analyse("私立学校的学费一般是多少？"), "公立学校免收学费。")
    high = analyse("“双减”政策对高中生的书面作业时间有什么规定？")
    assert other_side(high, "初中书面作业平均完成时间不超过90分钟")
    assert not other_side(high, "小学生每天睡眠10小时，初中生9小时，高中生8小时")
    couple = analyse("For a married couple filing jointly, up to what income does the 0% rate apply?")
    assert other_side(couple, "For single filers in 2025 the 0% rate applies up to $48,350 of taxable income.")
    twins = analyse("I'm pregnant with twins. How much weight should I gain?")
    assert other_side(twins, "Guidance for a single baby: normal weight 11.5–16 kg.")
    assert not other_side(twins, "For twins, normal weight: 17–25 kg; for a single baby: 11.5–16 kg.")


def test_a_column_the_table_does_not_have_is_a_near_miss(index):
    """The dosing table's columns are doses of two medicines: a naproxen dose is none of them, and the row for the
    child's weight would give another medicine's dose. Naming one of them, or none ("what dose"), is answered."""
    settings, snapshot = index
    answerer = answerer_with(settings)
    naproxen = answerer.answer(snapshot, "What dose of naproxen can a 19 kg child take?", backend="extractive")
    assert naproxen.abstained and naproxen.passages[0].doc_id == "med-fever-dosing"
    ibuprofen = answerer.answer(snapshot, "What dose of ibuprofen can a 19 kg child take?", backend="extractive")
    assert not ibuprofen.abstained and "150 mg" in ibuprofen.answer
    either = answerer.answer(snapshot, "What dose can a 19 kg child take?", backend="extractive")
    assert not either.abstained and "150 mg" in either.answer and "240 mg" in either.answer


def test_a_weight_no_row_holds_is_a_near_miss(index):
    """The dosing table starts at 5.5 kg: for a 4 kg baby its nearest row states another child's dose, and in
    medicine a wrong dose is worse than none. A weight a row holds is answered from that row."""
    settings, snapshot = index
    answerer = answerer_with(settings)
    small = answerer.answer(snapshot, "My baby weighs 4 kg. How much ibuprofen can I give?", backend="extractive")
    assert small.abstained and small.passages[0].doc_id == "med-fever-dosing"
    held = answerer.answer(snapshot, "My baby weighs 6 kg. How much ibuprofen can I give?", backend="extractive")
    assert not held.abstained and "50 mg" in held.answer and "5.5–7.7 kg" in held.answer


def test_a_unit_stating_no_quantity_does_not_answer_how_much():
    """"How much" / "what dose" / "how often" want a quantity: the condition the asker meets ("65 or older" for a
    67-year-old), a figure the question itself gives, or a sentence without any figure is none; "quarterly",
    "每年一次" and "three to six months" are."""
    from rag.answer_select import outside_ranges, states_quantity

    older = analyse("I'm 67 and file single. How much is the extra standard deduction?")
    assert not states_quantity(older, "Taxpayers aged 65 or older or blind receive an additional standard deduction.")
    assert states_quantity(older, "Taxpayers aged 65 or older receive an additional $2,000.")
    dose = analyse("What dose of nasal glucagon should be given?")
    assert not states_quantity(dose, "Give glucagon if available (nasal glucagon or an injection).")
    assert states_quantity(dose, "Give 3 mg of nasal glucagon.")
    assert states_quantity(analyse("How often do mutual funds disclose holdings?"), "Mutual fund: Usually quarterly")
    assert states_quantity(analyse("公积金多久结息？"), "利息每年结息一次")
    assert states_quantity(analyse("How much should I save?"), "Keep three to six months of expenses.")
    spray = "2 mg for adults and children weighing 30 kg or more; a 1 mg version for children weighing 15–30 kg"
    assert outside_ranges(analyse("My daughter weighs 12 kg. What dose of the spray?"), spray)
    assert not outside_ranges(analyse("My daughter weighs 20 kg. What dose of the spray?"), spray)
    assert not outside_ranges(analyse("My daughter is 12. What dose of the spray?"), spray)
    # A question asking for the bound itself is answered by it: "8岁以下" for a 7-year-old is the answer here
    tetracycline = "四环素类药物可导致牙齿黄染，8岁以下儿童不宜使用。"
    assert states_quantity(analyse("我家孩子7岁，多大以下的孩子不宜用四环素类药？"), tetracycline)
    assert not states_quantity(analyse("我家孩子7岁，四环素类药每天吃几次？"), tetracycline)


def test_a_band_holds_the_figure_in_the_column_the_question_names():
    """"30 kg and above" is a band (the measure may sit before its bound); "file jointly ... $220,000" is held by
    the "Married filing jointly" column's range, not by the "Single" range of another row beside it; a band is
    no row name that puts its row first."""
    from rag.answer_select import (
        CHEAP_FEATURES,
        AnswerSelector,
        ScoredUnit,
        cheap_features,
        named_row_first,
        ranges_in,
    )

    assert ranges_in("30 kg and above (older children)") == [(30.0, math.inf, "kg")]
    assert ranges_in("8岁以下儿童") == [(-math.inf, 8.0, "year")]
    table = ("| Rate | Single | Married filing jointly |\n|---|---|---|\n| 24% | $103,351 – $197,300 | "
             "$206,701 – $394,600 |\n| 32% | $197,301 – $250,525 | $394,601 – $501,050 |")
    x = AnswerSelector(None).inputs(Evidence([Passage(1, "fin-tax", "fin-tax#0", "Brackets", table, 1.0)]))
    held = CHEAP_FEATURES.index("in_range")

    def in_range(question):
        return [row[held] for row in cheap_features(analyse(question), x, {})]

    assert in_range("We file jointly with $220,000 of taxable income. Which bracket is our top rate?") == [1.0, 0.0]
    assert in_range("I file single with $220,000 of taxable income. Which bracket is my top rate?") == [0.0, 1.0]
    assert in_range("Which bracket is an income of $220,000 in?") == [1.0, 1.0]  # no column named: any range
    doses = "| Body weight | Dose |\n|---|---|\n| 7.5–15 kg | 0.15 mg |\n| 30 kg and above (older children) | 0.3 mg |"
    small, large = [u for u in AnswerSelector(None).inputs(Evidence([Passage(1, "med", "med#0", "Doses", doses, 1.0)]
                                                                      )).units]
    q = analyse("My daughter weighs 40 kg. Which dose is typical for her body weight?")
    ranked = [ScoredUnit(large, {}, 4.9), ScoredUnit(small, {}, 3.5)]  # "kg" is all the small band's words
    assert named_row_first(q, ranked) == ranked


def test_a_list_item_about_another_subject_is_a_near_miss(index):
    """"水果：...每天约200克" states a day's fruit: a question about nuts (坚果), a word no item has, is answered by
    no item of the list; the fruit question is. A label that states a condition ("初诊或调整用药时：") names no
    subject."""
    from rag.answer_select import _CONDITION

    settings, snapshot = index
    answerer = answerer_with(settings)
    fruit = answerer.answer(snapshot, "糖尿病患者每天可以吃多少克水果？", backend="extractive")
    assert not fruit.abstained and "200克" in fruit.answer and fruit.citations[0].doc_id == "med-diabetes-diet-zh"
    nuts = answerer.answer(snapshot, "糖尿病患者每天可以吃多少克坚果？", backend="extractive")
    assert nuts.abstained and nuts.passages[0].doc_id == "med-diabetes-diet-zh"
    assert _CONDITION.search("初诊或调整用药时") and _CONDITION.search("If symptoms persist")
    assert not _CONDITION.search("水果")


def test_the_number_of_a_name_is_no_figure():
    assert analyse("At what week of pregnancy is the COVID-19 vaccine recommended?").figures == []
    assert analyse("My PHQ-9 score is 17. How severe is that?").figures == [17.0]


def test_a_plural_noun_after_what_or_which_asks_for_a_list():
    for q in ("What factors make up a FICO score?", "Which symptoms does a stroke cause?",
              "Which steps should I follow?"):
        assert analyse(q).expects == "list", q
    assert analyse("What type of account is best?").expects != "list"


def test_a_plan_name_is_not_a_figure_of_the_question():
    q = analyse("How much can I put into a 401(k) or a 403(b) at age 61?")
    assert q.figures == [61.0]


def test_chinese_question_gets_the_chinese_fact_and_disclaimer(index):
    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "个人养老金每年最多可以缴纳多少钱？", backend="extractive")
    assert not ans.abstained and ans.language == "zh"
    assert "12000元" in ans.answer and ans.citations[0].doc_id == "fin-pension-zh"
    assert ans.disclaimer == settings.generator.disclaimers["finance:zh"]
    assert_citations_valid(ans)


def test_what_is_x_is_answered_by_the_unit_that_defines_x(index):
    """A definition names its subject and then defines it ("Avalanche: direct extra payments to ..."); a sentence
    that only mentions the subject ("The two best-known strategies are the debt avalanche and ...") does not."""
    from rag.answer_select import opens_with_definition
    from rag.text import tokenize

    subject = set(tokenize("debt avalanche method"))
    assert opens_with_definition("Avalanche: direct extra payments to the debt with the highest rate first.", subject)
    assert opens_with_definition("The debt avalanche method is a way to repay debts.", subject)
    assert not opens_with_definition("The two best-known strategies are the debt avalanche and the snowball.", subject)
    pension = set(tokenize("个人养老金"))
    assert opens_with_definition("个人养老金是指政府支持、个人自愿参加的补充养老保险制度。", pension)
    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "What is the debt avalanche method?", backend="extractive")
    assert ans.expects == "definition" and not ans.abstained
    assert "highest interest rate" in ans.answer and "best-known strategies" not in ans.answer
    assert ans.citations[0].doc_id == "fin-debt"


def test_near_miss_abstains_with_the_closest_passages(index):
    """The topic is covered (childhood vaccination), the fact asked for (chickenpox) is not."""
    settings, snapshot = index
    ans = answerer_with(settings).answer(snapshot, "At what age is the chickenpox vaccine given?", backend="extractive")
    assert ans.abstained and ans.answer == NOT_FOUND["en"]
    assert ans.passages and ans.passages[0].doc_id == "med-vaccines"
    answered = answerer_with(settings).answer(snapshot, "At what age is the MMR vaccine given?", backend="extractive")
    assert not answered.abstained and "12 to 15 months" in answered.answer


def test_generator_echoing_the_question_is_rejected(index):
    settings, snapshot = index
    ans = answerer_with(settings, Stub(lambda m: "How many hours of sleep do adults need? [1]")).answer(
        snapshot, "How many hours of sleep do adults need?", backend="stub")
    assert ans.fallback == "the generator only repeated the question"
    assert "7 or more hours" in ans.answer


def test_generator_markers_and_boilerplate_are_rejected(index):
    settings, snapshot = index
    ans = answerer_with(settings, Stub("[1]. … The answer to the question is: [2].")).answer(
        snapshot, "How many hours of sleep do adults need?", backend="stub")
    assert ans.fallback == "the generator returned only citation markers or boilerplate"
    assert "7 or more hours" in ans.answer


def test_generator_prompt_carries_units_not_whole_chunks(index):
    settings, snapshot = index
    stub = Stub(lambda m: "Adults need 7 or more hours of sleep [1].")
    ans = answerer_with(settings, stub).answer(snapshot, "How many hours of sleep do adults need?", backend="stub")
    prompt = stub.calls[0][-1]["content"]
    assert "Age group: Adults 18–60 years; Recommended sleep per 24 hours: 7 or more hours" in prompt
    assert "|---|" not in prompt  # rows are rendered, the raw table is not pasted
    assert ans.fallback is None and "7 or more hours" in ans.answer


def test_figure_outside_the_given_units_is_unsupported():
    passages = [Passage(1, "d1", "d1#0", "T", "The fee is 2 percent a year. Late payments cost 35 dollars.", 1.0)]
    evidence = Evidence(passages)
    given = evidence.with_numbers({1: {"2"}})  # the generator only saw the first sentence
    assert check_text("The fee is 2 percent a year [1].", given).unsupported == 0
    assert check_text("Late payments cost 35 dollars [1].", given).unsupported == 1
    assert check_text("Late payments cost 35 dollars [1].", evidence).unsupported == 0


def test_answer_units_of_a_financial_table():
    from rag.answer_units import passage_units

    table = (" |  | Years Ended September 30, | \n | 2019 | 2018 | 2017\nFixed Price | $ 1,452.4 | $ 1,146.2 | $ 1,036.9\n"
             "Total sales | $1,496.5 | $1,202.9 | $1,107.7")
    units = passage_units(table, 1)
    assert [u.text for u in units] == [
        "Fixed Price — 2019: $ 1,452.4; 2018: $ 1,146.2; 2017: $ 1,036.9",
        "Total sales — 2019: $1,496.5; 2018: $1,202.9; 2017: $1,107.7"]
    assert units[0].context == "Years Ended September 30,"
    assert all(u.kind == "row" and u.span in table for u in units)


def test_a_financial_table_whose_column_labels_sit_below_its_captions():
    """Exports of financial reports often open with caption rows ("($ in millions)") and label the columns in a
    row whose first cell is a caption too ("At December 31: | 2019 | 2018"): that row heads the table, so a row
    reads with its years; so does a row labelling the columns that a row of dates above spans. A caption above rows
    of words only (no amount below) keeps them as rows."""
    from rag.answer_units import passage_units

    table = ("($ in millions) |  | \nAt December 31: | 2019 | 2018\nRecorded investment (1) | $22,446 | $31,182\n"
             "Total allowance for credit losses | 221 | 292")
    units = passage_units(table, 1)
    assert [u.text for u in units] == ["Recorded investment (1) — 2019: $22,446; 2018: $31,182",
                                       "Total allowance for credit losses — 2019: 221; 2018: 292"]
    assert units[0].context == "($ in millions) At December 31:"
    # two caption rows, the labelled row, then a year row: all four head the table
    energy = ("2.1 Office Buildings |  | \nIndicators | For the year ended 31 December | \n | 2019 | 2018\n"
              "Total energy consumption (MWh) | 205,092.26 | 167,488.48")
    assert [u.text for u in passage_units(energy, 1)] == [
        "Total energy consumption (MWh) — For the year ended 31 December 2019: 205,092.26; 2018: 167,488.48"]
    # dates over pairs of columns, the pairs labelled below: the labelled row heads the table too
    debt = (" | December 31, 2019 |  | December 31, 2018 | \n(In millions) | Carrying Amount | Fair Value | "
            "Carrying Amount | Fair Value\nTotal debt | $ 3,774.4 | $ 4,073.9 | $ 3,474.2 | $ 3,535.1")
    assert [u.text for u in passage_units(debt, 1)] == [
        "Total debt — December 31, 2019 Carrying Amount: $ 3,774.4; Fair Value: $ 4,073.9; December 31, 2018 "
        "Carrying Amount: $ 3,474.2; Fair Value: $ 3,535.1"]
    words = "Team contacts |  | \nRole | Name\nChair | Ada Park\nTreasurer | Li Wei"
    assert [u.text for u in passage_units(words, 1)][1:] == ["Chair — Ada Park", "Treasurer — Li Wei"]


def test_an_unlabelled_row_that_sums_the_rows_above_reads_as_their_total():
    """The bottom line of a financial table has no label: it reads "Total" when each figure is the sum of its
    column above (back to the previous total, one of the terms); an unlabelled row that sums nothing stays
    unnamed."""
    from rag.answer_units import passage_units

    table = (" | 2019 | 2018\nEmployee severance | $7,169 | $7,845\nStrategic evaluation | 1,286 | —\n"
             "Other | — | 591\n | $8,455 | $8,436\nLess: impairment | (455) | (436)\n | $8,000 | $8,000\n"
             "Memo: headcount | 50 | 60\n | 7 | 8")
    assert [u.text for u in passage_units(table, 1)][3:] == [
        "Total — 2019: $8,455; 2018: $8,436", "Less: impairment — 2019: (455); 2018: (436)",
        "Total — 2019: $8,000; 2018: $8,000", "Memo: headcount — 2019: 50; 2018: 60", "2019: 7; 2018: 8"]
    sections = " | 2019 | 2018\nInventories: |  | \nRaw materials | 120 | 100\nFinished goods | 30 | 20\n | 150 | 120"
    assert [u.text for u in passage_units(sections, 1)][-1] == "Inventories: Total Inventories — 2019: 150; 2018: 120"
    zh = "项目 | 2023年\n工资 | 120\n奖金 | 30\n | 150"
    assert [u.text for u in passage_units(zh, 1)][-1] == "项目: 合计; 2023年: 150"
    zh_rows = " | 2023 | 2022\n工资 | 120 | 100\n奖金 | 30 | 20\n | 150 | 120"  # Chinese only in its rows
    assert [u.text for u in passage_units(zh_rows, 1)][-1] == "合计 — 2023: 150; 2022: 120"


def test_answer_units_skip_headings_and_join_a_bare_yes_or_no():
    from rag.answer_units import passage_units

    text = ("Building an Emergency Fund: How Much to Save and Where to Keep It for Your Household Today\n\n"
            "HOW MUCH IS ENOUGH?\n\nNo. A freeze does not affect your score.\n\nAim high if:\n- you earn alone;\n"
            "- you rent.")
    units = [u for u in passage_units(text, 1, title="Building an Emergency Fund: How Much to Save and Where to "
                                      "Keep It for Your Household Today") if u.answers]  # the title line answers nothing
    assert [(u.kind, u.text) for u in units] == [
        ("sentence", "No. A freeze does not affect your score."), ("item", "Aim high if:"),
        ("item", "you earn alone;"), ("item", "you rent.")]
    assert units[0].context == "HOW MUCH IS ENOUGH?" and units[2].context.endswith("Aim high if")
    assert [u.block for u in units[1:]] == [units[1].block] * 3  # one list: a list answer takes its neighbours



def test_a_table_row_ending_in_a_question_still_answers():
    """A table of example questions ("Level | Example question"): the row answers "which level is this question?"
    with its other cell; a question as a list item answers nothing."""
    from rag.answer_units import passage_units

    text = ("| 认知层次 | 问题示例 |\n|---|---|\n| 应用 | 如果那天没有大雾，诸葛亮的计划还能成功吗？ |\n\n"
            "- 你能举个例子吗？")
    units = passage_units(text, 1)
    assert [(u.kind, u.answers) for u in units] == [("row", True), ("item", False)]
    assert units[0].text == "认知层次: 应用; 问题示例: 如果那天没有大雾，诸葛亮的计划还能成功吗？"

# --- the real local model (slow) ----------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_answer_and_stream_have_only_valid_citations(index):
    import msgspec

    settings, snapshot = index
    # Short drafts keep CPU time down; the checks do not depend on length.
    settings = msgspec.structs.replace(settings, generator=msgspec.structs.replace(settings.generator,
                                                                                max_new_tokens=48))
    answerer = answerer_with(settings)
    from rag.types import Filters

    ans = answerer.answer(snapshot, "What blood pressure means hypertension?", top_k=2, backend="transformers",
                          filters=Filters.of(domain="medical"))  # whatever it cites, the answer is medical
    assert not ans.abstained and ans.backend == "transformers" and ans.answer
    assert ans.citations and "generate_ms" in ans.timings_ms
    assert_citations_valid(ans)
    assert ans.disclaimer == settings.generator.disclaimers["medical"]
    events = list(answerer.answer_stream(snapshot, "When is the MMR vaccine given?", top_k=2, backend="transformers"))
    assert events[0].type == "retrieval" and events[-1].type == "done"
    assert_citations_valid(events[-1].data)
