"""Answer selection: which answer unit answers the question, and whether any of them does.

Every unit of the top passages is scored in one batch: the cosine of the generation's own embedder between the
question (as a query) and the unit (as a passage, with its heading or table caption as context), the share of the
question's idf mass the unit holds, whether the unit holds what the question asks for (a quantity, a time, a
name, a definition of its subject), whether a figure in the question falls inside a range the unit states (the
table row for a 35-year-old), and the rank of its passage. The features combine linearly with weights fitted by
logistic regression on real questions (`bench/fit_answer_selection.py`: SQuAD's fit split and TAT-QA, never the
sets the report is scored on), one set per embedder because cosines are not comparable across embedders.

Whether to answer at all is a second small model over the best unit and the question: how well the best unit
scores, how much of the question's rare vocabulary no retrieved passage holds (the near miss: the topic is
there, the year or the product asked about is not), and the best passage's cosine. Its threshold is chosen on
the same fit data. Whatever it says, a question abstains when the best unit states its fact for something other
than what the question names: another year, another place (`other_place`), another measure (`asked_measure`),
another column of a table (`other_column`), another subject of a list (`other_subject`), another weight or age
than the one a quantity question gives (`outside_ranges`), another ordinal ("首套" for "第二套房", `other_ordinal`),
another side of a distinction ("jointly" for "separately", 小学 for 高中, `other_side`) or something other than
what the question quotes (`quoted_missing`); and a quantity question abstains when the best unit states no
quantity (`states_quantity`).

With an extractive QA model configured (`answers.qa_model`, `QAReading`), the model reads the best passages: the
unit holding its span answers, and its "no answer" margin replaces the abstention model (the checks above stay).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.answer_units import AnswerUnit
from rag.grounding import numbers_in
from rag.questions import DEFINITION, LIST, NAME, QUANTITY, RATE_OF_MONEY, TIME, QuestionAnalysis, analyse
from rag.snapshot import bm25_idf
from rag.table_answers import TableAnswer, named_share
from rag.text import CJK_RUN, arabic_counts, formal, place_names, question_terms, tokenize

WEIGHTS_FILE = Path(__file__).parent / "models" / "answer_selection.json"

# Features of a unit that need no embedder (they pick which units are worth embedding), then the cosines.
CHEAP_FEATURES = ("kw", "kw_ctx", "kw_window", "kw_local", "kw_title", "bigram", "novel", "expects_met", "expects_missed", "exact_time",
                  "in_range", "in_tightest", "figure_missing", "window_missing", "defines", "passage_rank", "passage_gap",
                  "passage_cos", "is_row", "is_item", "list_lead", "list_member", "log_words")
UNIT_FEATURES = CHEAP_FEATURES + ("cos", "cos_gap")
# Few on purpose: the abstention model is fitted on a few hundred questions, and correlated features get
# weights of either sign that do not carry over to new questions.
# (Whether the corpus ever saw a question's words is not among them: in a corpus of ten documents most words are
# unseen, in one of a million few are, so its weight would not carry from one corpus to another.)
QUESTION_FEATURES = ("best_score", "margin", "best_cos", "best_kw_window", "best_figure_missing", "missing_share",
                     "top_cos")
EMBED_TOP = 12  # units (by the cheap score) whose cosine is computed: ~10 ms each on a CPU core

_NUMBER_WORDS = ("one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty "
                 "hundred thousand million billion half quarter twice once dozen").split()
_QUANTITY = re.compile(r"\d|\b(" + "|".join(_NUMBER_WORDS) + r")\b|[一二两三四五六七八九十百千万半]+\s*[个次天年月周岁小时分钟元倍%％]"
                       r"|percent|per cent|百分之", re.IGNORECASE)
# How often, said in words ("quarterly", "每年一次"): the quantity "how often" asks for.
_FREQUENCY = re.compile(r"\b(daily|weekly|monthly|quarterly|annually|yearly|hourly|biweekly|fortnightly|every|once"
                        r"|twice)\b|每[天日周月年季]|[一二两三四五六七八九十几]+[次回]", re.IGNORECASE)
_MONTHS = "january february march april may june july august september october november december"
_TIME = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b|\b(" + "|".join(_MONTHS.split()) + r")\b"
                   r"|\b(morning|evening|night|bedtime|daily|weekly|monthly|annually|before|after|during|until|age[sd]?"
                   r"|months?|years? old|weeks?|days?|hours?|minutes?|birth|born|century|decade|season|spring|summer"
                   r"|autumn|fall|winter|today|yearly|every)\b"
                   r"|早上|早晨|晚上|睡前|起床|饭前|饭后|每天|每年|每月|每周|岁|年|月|日|时|之前|以后|之后|期间",
                   re.IGNORECASE)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*")
# Head nouns many defined terms share ("the 50/30/20 rule", "the avalanche method"), as stems.
GENERIC_HEADS = frozenset("rule method approach strategi system plan model process program scheme techniqu "
                          "principl law theori".split())
DEFINITION_MARGIN = 1.0  # selector logits: a defining unit this close to the best answers "what is X?"
LIST_MARGIN = 2.0  # selector logits: a member of a list the question names this close to the best answers
LIST_NEAR = 1.0  # selector logits: any list member this close to a best sentence answers a list question
KEYED_ROW_MARGIN = 2.0  # selector logits: a row the question names by key column and key this close answers
ROW_NAME_MARGIN = 2.0  # selector logits: a row the question names in full this close to the best answers
HEADING_MARGIN = 1.0  # selector logits: a unit under a heading that asks the question this close answers
TIMING_MARGIN = 2.0  # selector logits: a unit under a heading that names when the question's act happens
# A heading that names the timing of something ("五、测量时间和频率", "Timing of doses", "When to call 911") answers a
# "when" question about that thing in the section below.
_TIMING = re.compile(r"时间|时机|时段|何时|什么时候|\btiming\b|\bwhen\b|\bschedules?\b", re.IGNORECASE)
_DEFINES = re.compile(r"\b(is|are|was|were|means|refers? to|describes?|is defined as|is called|stands? for)\b"
                      r"|[:：]|是指|是一种|是一个|指的是|是|即|就是|称为", re.IGNORECASE)
_RANGE = re.compile(
    r"(?P<a>\d[\d,]*(?:\.\d+)?)\s*(?:%|％|years?|months?|kg|lb|lbs|k)?\s*(?:–|—|-|to|through|至|到|~|～)\s*"
    r"\$?(?P<b>\d[\d,]*(?:\.\d+)?)"
    r"|(?:over|above|more than|older than|at least|greater than|≥|>|超过|大于)\s*\$?(?P<lo>\d[\d,]*(?:\.\d+)?)"
    # "30 kg and above", "12 years and older": the measure may sit between the figure and its bound
    r"|(?P<lo2>\d[\d,]*(?:\.\d+)?)\s*(?:%|％|years?|months?|kg|lb|lbs|k|岁|公斤|千克)?\s*"
    r"(?:\+|or more|or older|and over|and above|and older|以上|及以上)"
    r"|(?:under|below|less than|younger than|up to|at most|≤|<|不超过|小于|低于)\s*\$?(?P<hi>\d[\d,]*(?:\.\d+)?)"
    r"|(?P<hi2>\d[\d,]*(?:\.\d+)?)\s*(?:%|％|years?|months?|kg|lb|lbs|k|岁|公斤|千克)?\s*"
    r"(?:or less|or under|or younger|and under|and below|以下|及以下)",
    re.IGNORECASE)


def _num(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


_MEASURE = re.compile(r"\s*(?:-\s*)?(year|month|week|day|hour|kg|lb|%|％|mg|ml|mmhg|point|cm|岁|月龄|周|公斤|千克|分)",
                      re.IGNORECASE)
_MEASURE_NAMES = {"％": "%", "岁": "year", "月龄": "month", "周": "week", "公斤": "kg", "千克": "kg", "分": "point"}


def _measure(text: str, at: int) -> str | None:
    """The unit a figure is counted in ("9 kg", "a 35-year-old", "65%"), from the text right after it."""
    m = _MEASURE.match(text, at)
    if not m:
        return None
    word = m.group(1).lower()
    return _MEASURE_NAMES.get(word, word)


def ranges_in(text: str) -> list[tuple[float, float, str | None]]:
    """The numeric ranges a text states ("18–60 years", "over 60", "$11,926 to $48,475", "83–86"), each with
    the unit it is counted in when one follows it; "七至九年级" is 7-9."""
    out = []
    text = arabic_counts(text)
    for m in _RANGE.finditer(text):
        a, b = _num(m.group("a")), _num(m.group("b"))
        bound = next((g for g in ("lo2", "hi2") if m.group(g) is not None), None)
        unit = _measure(text, m.end()) or (_measure(text, m.end(bound)) if bound else None)
        if a is not None and b is not None and a <= b:
            out.append((a, b, unit))
        elif (lo := _num(m.group("lo") or m.group("lo2"))) is not None:
            out.append((lo, math.inf, unit))
        elif (hi := _num(m.group("hi") or m.group("hi2"))) is not None:
            out.append((-math.inf, hi, unit))
    return out


def asked_ranges(q: QuestionAnalysis, unit: AnswerUnit) -> list[tuple[float, float, str | None]]:
    """The ranges of a unit that may hold the question's figures: of a table row with ranges in several columns,
    those of the columns the question names most fully when it names any ("file jointly ... $220,000": the "Married
    filing jointly" column, not the "Single" one beside it whose range holds the figure too), else all."""
    if unit.row is None:
        return ranges_in(unit.text)
    ranged = [(label, found) for label, value in unit.row[1] if (found := ranges_in(value))]
    if len(ranged) < 2:
        return ranges_in(unit.text)
    share = {label: len(words & q.terms) / len(words) if (words := set(tokenize(label))) else 0.0
             for label, _ in ranged}
    best = max(share.values())
    if best < 0.5:
        return ranges_in(unit.text)
    return [r for label, found in ranged if share[label] == best for r in found]


def holding_range(figures: list[tuple[float, str | None]], ranges: list[tuple[float, float, str | None]]
                  ) -> float | None:
    """The width of the narrowest range holding one of the question's figures (in the same unit when both
    name one: a child's 9 kg is not inside "9–10 years"); None when no range holds one."""
    widths = [hi - lo for f, fu in figures for lo, hi, ru in ranges if lo <= f <= hi and (fu is None or ru is None
                                                                                         or fu == ru)]
    return min(widths) if widths else None


_TIMED_FIGURE = re.compile(r"(\d+)\s*(?:[-–~～]\s*\d+\s*)?(?:years?|months?|weeks?|days?|hours?|minutes?|am|pm|a\.m"
                           r"|p\.m|o'clock|:\d\d|岁|个月|月龄|周|天|日|小时|分钟|点|年|月)", re.IGNORECASE)
_EXACT_TIME = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b|\b(" + "|".join(_MONTHS.split()) + r")\b|\d{1,4}\s*年|\d{1,2}\s*月",
                         re.IGNORECASE)


# The measure a question asks a quantity in ("how many hours", "多少毫克") and how a unit writes a figure in it: a
# unit that writes none answers in another measure ("每天不超过5克" for milligrams of potassium).
_ASKED_MEASURE = re.compile(r"\bhow many (months|weeks|days|hours|minutes|seconds|years|milligrams|mg|grams|kilograms"
                           r"|kg|millilit(?:er|re)s|ml|times)\b|(?:多少|几)(毫克|毫升|千克|公斤|克|小时|分钟|秒|个月|天|周|年|次)",
                           re.IGNORECASE)
_MEASURE_KEYS = {"months": "month", "个月": "month", "weeks": "week", "周": "week", "days": "day", "天": "day",
                 "hours": "hour", "小时": "hour", "minutes": "minute", "分钟": "minute", "seconds": "second",
                 "秒": "second", "years": "year", "年": "year", "milligrams": "mg", "mg": "mg", "毫克": "mg",
                 "grams": "g", "克": "g", "kilograms": "kg", "kg": "kg", "千克": "kg", "公斤": "kg",
                 "milliliters": "ml", "millilitres": "ml", "ml": "ml", "毫升": "ml", "times": "times", "次": "times"}
_MEASURE_WRITTEN = {key: re.compile(pattern, re.IGNORECASE) for key, pattern in {
    "month": r"\bmonths?\b|个月|月龄", "week": r"\bweeks?\b|\bwks?\b|周|星期", "day": r"\bdays?\b|天|日",
    "hour": r"\bhours?\b|\bhrs?\b|小时", "minute": r"\bminutes?\b|\bmins?\b|分钟", "second": r"\bseconds?\b|秒",
    "year": r"\byears?\b|\byrs?\b|年|岁", "mg": r"\d\s*mg\b|milligrams?|毫克", "g": r"\d\s*g\b|grams?|(?<![毫千])克",
    "kg": r"\d\s*kg\b|kilograms?|千克|公斤", "ml": r"\d\s*ml\b|millilit|毫升",
    "times": r"\btimes\b|\bonce\b|\btwice\b|次", "%": r"%|％|\bpercent|\bper cent|百分之|[一二三四五六七八九十]成",
    # "How long" asks a span of time or a length: a unit that counts in neither, gives no years from-to and no
    # bound ("until 1989", "for life") answers something else (a date: "on 19 April 1943").
    "span": r"\b(?:seconds?|minutes?|mins?|hours?|hrs?|days?|nights?|weeks?|months?|years?|yrs?|decades?"
            r"|centur(?:y|ies)|lifetime|life|forever|permanently|indefinitely|overnight|until|till|through|since)\b"
            r"|\b(?:km|kilomet(?:er|re)s?|miles?|met(?:er|re)s?|m|feet|foot|ft|inch(?:es)?|cm|mm|yards?)\b"
            r"|\b\d{4}\s*(?:-|–|—|to)\s*\d{2,4}\b|秒|分钟|小时|天|日|周|星期|个月|年|终身|永久|直到|公里|米",
    # A fee or a price is money, or a share of an amount ("$5 plus 3%"), or nothing ("free", "waived").
    "money": r"[$€£¥￥%％]|\b(?:dollars?|cents?|usd|eur|gbp|rmb|free|waived|no (?:charge|fee|cost))\b"
             r"|元|块钱|免费|不收费|不收取|零费用",
}.items()}
# "How much is the application fee?", "每个月收多少钱？": a price, answered in money ("up to 10 activities" is not).
_ASKED_MONEY = re.compile(r"\b(?:how much|what)\b.*\b(?:fees?|costs?|charges?|charged|prices?|premiums?)\b"
                          r"|\bhow much (?:does|do|did|will|would) (?:it|that|this|they|\w+) (?:cost|charge)\b"
                          r"|多少钱|收费(?:标准)?是?多少|费用是?多少|收多少", re.IGNORECASE)
_ASKED_SPAN = re.compile(r"\bhow long\b(?!\s+ago)|多久|多长时间", re.IGNORECASE)


# A rate of money asked for is a percentage ("What interest rate does it pay?", "利率是多少"): "按国家规定利率计息"
# states none.
_ASKED_PERCENT = re.compile(r"\b(?:what|which) (?:percentage|percent)\b|\bhow many percent\b|" + RATE_OF_MONEY
                            + r"|利率|税率|费率|收益率|比例|百分比|百分之几", re.IGNORECASE)


def asked_measure(question: str) -> str | None:
    """The measure the question asks its quantity in, or None ("how many withdrawals" names a count, no measure)."""
    if m := _ASKED_MEASURE.search(question):
        return _MEASURE_KEYS[(m.group(1) or m.group(2)).lower()]
    if _ASKED_MONEY.search(question):
        return "money"
    if _ASKED_SPAN.search(question):
        return "span"
    return "%" if _ASKED_PERCENT.search(question) else None


def in_other_measure(question: str, text: str) -> bool:
    """The question asks its quantity in a measure the unit's text writes no figure in."""
    return (measure := asked_measure(question)) is not None and not _MEASURE_WRITTEN[measure].search(text)


def meets(expects: str, text: str, question: str = "") -> bool | None:
    """Whether a unit holds the kind of thing the question asks for, beyond what the question itself says; None
    when the question constrains nothing."""
    if expects == QUANTITY and in_other_measure(question, text):
        return False
    if expects in (QUANTITY, TIME):
        asked = set(re.findall(r"\d+", question))
        own = [m for m in re.findall(r"\d+", text) if m not in asked]
        if expects == QUANTITY:
            return bool(own) or bool(_QUANTITY.search(re.sub(r"\d+", " ", text)))
        # A time is a date, a time word ("before breakfast", "睡前"), or a figure counted in time: a bare
        # figure (a blood-pressure target) is not.
        timed = [m for m in _TIMED_FIGURE.finditer(text) if m.group(1) not in asked]
        return bool(timed) or bool(_TIME.search(re.sub(r"\d+", " ", text)))
    if expects == NAME:
        return bool(_NAME.search(text)) or bool(re.search(r"[\u4e00-\u9fff]", text))
    return None


# A question asking for the bound itself ("7岁 ... 多大以下的孩子不宜用？", "up to what age ...?"): the bound of the
# range that holds its figure is the answer, not a condition.
_ASKED_BOUND = re.compile(r"\b(?:up to|below|under|over|above|from|until|by) what "
                          r"(?:age|weight|size|amount|income|score)\b|\bat what (?:age|weight)\b"
                          r"|(?:多大|几岁|多少岁|多重|多少公斤|多少)(?:以下|以上|之前|之后)", re.IGNORECASE)


def states_quantity(q: QuestionAnalysis, text: str) -> bool:
    """Whether a unit states a quantity beyond the question's own figures and the condition they meet: "Taxpayers
    aged 65 or older ... receive an additional standard deduction" names the condition a 67-year-old meets, not how
    much ("I'm 67. How much is the extra standard deduction?"), and "Give glucagon if available" no dose."""
    conditions = {v for lo, hi, _ in ranges_in(text) if any(lo <= f <= hi for f in q.figures)
                  for v in (lo, hi) if math.isfinite(v)} if not _ASKED_BOUND.search(q.text) else set()
    asked = set(re.findall(r"\d+(?:\.\d+)?", q.text))
    own = [n for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)
           if n.replace(",", "") not in asked and _num(n) not in conditions]
    words = re.sub(r"\d+", " ", text)
    return bool(own) or bool(_QUANTITY.search(words)) or bool(_FREQUENCY.search(words))


# A weight or an age the question gives, outside every range of the unit counted in that measure: the unit states
# the fact for other people ("1 mg for children weighing 15–30 kg" for a 12 kg child).
_WHO_MEASURES = frozenset({"kg", "lb", "year", "month"})


def outside_ranges(q: QuestionAnalysis, text: str) -> bool:
    """A quantity question giving a weight or an age that no range of the unit in that measure holds."""
    if q.expects != QUANTITY:
        return False
    ranges = ranges_in(text)
    for f, end in q.figure_spans:
        if (measure := _measure(q.text, end)) not in _WHO_MEASURES:
            continue
        same = [(lo, hi) for lo, hi, unit in ranges if unit == measure]
        if same and not any(lo <= f <= hi for lo, hi in same):
            return True
    return False


def _bracketed(figure: float, measure: str | None, ranges: list[tuple[float, float, str | None]]) -> bool:
    """A range of the unit brackets the question's figure: both ends stated ("$103,351 – $197,300"), or one end in
    the figure's own measure ("65 years or older" for a 70-year-old). "Up to 60" does not bracket the 9 of "grades
    9-12", nor "≥135" the 722 of "the 722 rule"."""
    return any(lo <= figure <= hi and (measure is not None and measure == unit or math.isfinite(hi - lo))
               for lo, hi, unit in ranges)


def _held(figure: str, ranges: list[tuple[float, float, str | None]]) -> bool:
    value = _num(figure)
    return value is not None and any(lo <= value <= hi for lo, hi, _ in ranges)


def exact_time(text: str, question: str) -> bool:
    """A year, a month or a date the question does not already state."""
    asked = {m.group(0).lower() for m in _EXACT_TIME.finditer(question)}
    return any(m.group(0).lower() not in asked for m in _EXACT_TIME.finditer(text))


def term_weights(snapshot, terms: set[str], filters=None) -> dict[str, float]:
    """BM25 idf of `terms` in the generation (over the chunks a restricted caller may see: `filters.access`).

    A term the corpus never saw weighs as much as the question's rarest seen term: it is evidence of an
    off-topic question or a near miss ("UCAS", "naproxen"), but jieba's search mode also emits fragments no
    corpus holds ("本有" of "错题本有"), and one such fragment must not sink a question. With no seen term at
    all, the corpus-wide maximum applies."""
    if snapshot is None or not terms:
        return {t: 1.0 for t in terms}
    found, n = snapshot.term_idf(terms, filters)
    unseen = max(found.values(), default=bm25_idf(max(n, 1), 0))
    return {t: found.get(t, unseen) for t in terms}


NUMERIC_TERM = re.compile(r"[\d.,]+")  # a figure as a term: "2019", "1,500", "6.5"


@dataclass
class LinearModel:
    """Standardized features -> logit. Fitted offline; stored as data, not code."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    bias: float
    threshold: float = 0.5  # for the abstention model: answer when the probability reaches it

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.bias

    def probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(x)))

    @classmethod
    def from_dict(cls, d: dict) -> "LinearModel":
        return cls(tuple(d["features"]), np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   np.asarray(d["coef"], float), float(d["bias"]), float(d.get("threshold", 0.5)))

    def to_dict(self) -> dict:
        return {"features": list(self.features), "mean": [round(float(v), 6) for v in self.mean],
                "scale": [round(float(v), 6) for v in self.scale], "coef": [round(float(v), 6) for v in self.coef],
                "bias": round(float(self.bias), 6), "threshold": round(float(self.threshold), 6)}


@dataclass
class SelectionModels:
    prescore: LinearModel  # CHEAP_FEATURES: which units get embedded
    units: LinearModel  # UNIT_FEATURES: which unit answers
    answerable: LinearModel  # QUESTION_FEATURES: whether it does
    source: str  # which fit this is (an embedder's name, or "keywords" when no embedder fits the language)


@lru_cache(maxsize=8)
def _all_models(path: str) -> dict:
    p = Path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def models_for(embedder_name: str | None, *, keywords_only: bool = False,
               path: Path = WEIGHTS_FILE) -> SelectionModels:
    """The fitted models of this embedder (`keywords_only`: its fit without cosines, for a language the embedder
    does not read); a local embedder folder without a fit of its own uses MiniLM's."""
    fits = _all_models(str(path))
    if not fits:
        raise FileNotFoundError(f"{path}: no fitted answer-selection weights (run bench/fit_answer_selection.py)")
    name = embedder_name if embedder_name in fits else ("minilm" if "minilm" in fits else next(iter(fits)))
    d = fits[name]["keywords" if keywords_only else "embedder"]
    return SelectionModels(LinearModel.from_dict(d["prescore"]), LinearModel.from_dict(d["units"]),
                           LinearModel.from_dict(d["answerable"]), f"{name}{'/keywords' if keywords_only else ''}")


@dataclass
class ScoredUnit:
    unit: AnswerUnit
    features: dict[str, float]
    score: float  # the selection model's logit
    unit_numbers: set[str] = field(default_factory=set)  # figures of the unit, its context and title


@dataclass
class UnitInputs:
    """What the features of a set of units are computed from (the same in the service and in the fit)."""

    units: list[AnswerUnit] = field(default_factory=list)
    terms: list[set[str]] = field(default_factory=list)  # each unit's content terms
    context: list[set[str]] = field(default_factory=list)  # its heading / lead-in / caption and its passage's title
    window: list[set[str]] = field(default_factory=list)  # its own, its neighbours' in the passage, its context
    pairs: list[set[tuple[str, str]]] = field(default_factory=list)  # adjacent term pairs of the unit
    leads: list[bool] = field(default_factory=list)  # the unit ends in ':' and items or rows follow it
    passage_rank: list[int] = field(default_factory=list)
    passage_gap: list[float] = field(default_factory=list)  # fused score minus the best passage's
    passage_cos: list[float] = field(default_factory=list)  # question vs the unit's passage vector (0 without)
    window_numbers: list[set[str]] = field(default_factory=list)  # figures of the unit, its context and title
    title: list[set[str]] = field(default_factory=list)  # its passage's title and heading path
    passages_terms: list[set[str]] = field(default_factory=list)  # every candidate passage's terms, by rank


def term_pairs(tokens: list[str]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for p in zip(tokens, tokens[1:])}


def local_weights(q_terms: set[str], x: UnitInputs, idf: dict[str, float]) -> dict[str, float]:
    """Question terms weighted by how rare they are among the retrieved passages, times their corpus idf: the
    topic words every retrieved passage shares ("Tesla" in an article about Tesla) count little, the words that
    single out the fact asked for count most."""
    n = len(x.passages_terms)
    out = {}
    for t in q_terms:
        df = sum(t in terms for terms in x.passages_terms)
        out[t] = idf.get(t, 1.0) * bm25_idf(n, df)
    return out


def cheap_features(q: QuestionAnalysis, x: UnitInputs, idf: dict[str, float]) -> np.ndarray:
    """One row of CHEAP_FEATURES per unit."""
    total = sum(idf.get(t, 1.0) for t in q.terms) or 1.0
    share = lambda found: sum(idf.get(t, 1.0) for t in q.terms & found) / total  # noqa: E731
    local = local_weights(q.terms, x, idf)
    local_total = sum(local.values()) or 1.0
    # The figures the asking sentence names, and the years of the situation before it: "I put 10% down. When is
    # PMI dropped?" is answered by "it ends automatically at 78%", which does not hold the asker's 10%.
    asked = numbers_in(q.text[q.asks_from:]) | (numbers_in(q.text[:q.asks_from]) & q.years)
    situation = {t for t in q.terms if NUMERIC_TERM.fullmatch(t) and t.replace(",", "") not in asked}
    figures = [(f, _measure(q.text, end)) for f, end in q.figure_spans]
    ranges = [asked_ranges(q, u) for u in x.units]
    widths = [holding_range(figures, r) for r in ranges]
    tightest = min((w for w in widths if w is not None), default=None)
    q_idf = {t: idf.get(t, 1.0) for t in q.terms}
    idf_max = max(q_idf.values(), default=1.0) or 1.0
    q_pairs = term_pairs(tokenize(q.text))
    rows = []
    for i, u in enumerate(x.units):
        # A figure of the question that a range of the unit holds ("$120,000" in "$103,351 – $197,300") is found
        # there: it is how a banded table answers, though the unit never writes it.
        held = set().union(*(t for (f, fu), t in zip(figures, q.figure_terms) if _bracketed(f, fu, ranges[i])))
        terms, ctx, window = x.terms[i] | held, x.context[i], x.window[i] | held
        met = meets(q.expects, u.text, q.text)
        in_range = float(widths[i] is not None)
        in_tightest = float(widths[i] is not None and widths[i] == tightest)
        # A figure the question names (a year, an age, an amount) that neither the unit, its heading or title nor
        # a range of the unit holds: the fact asked about is for something else ("the limit in 2015" vs 2025).
        figure_missing = float(any(a not in x.window_numbers[i] and not _held(a, ranges[i]) for a in asked))
        # The rarest words of a question name what it is about ("dengue", "UCAS"): a unit whose window lacks
        # them answers a neighbouring question.
        # A figure of the question that a range of the unit holds ("68" in "67–69") is not missing: it is how a
        # banded table answers.
        window_missing = max((q_idf[t] for t in q.terms if t not in window and t not in situation
                              and not (NUMERIC_TERM.fullmatch(t) and _held(t, ranges[i]))), default=0.0) / idf_max
        defines = 0.0
        if q.expects == DEFINITION and q.subject and q.subject <= (terms | ctx):
            defines = float(opens_with_definition(u.text, q.subject))
        rows.append([
            share(terms), share(terms | ctx), share(window),
            sum(local[t] for t in q.terms & window) / local_total,
            share(x.title[i]),
            len(q_pairs & x.pairs[i]) / len(q_pairs) if q_pairs else 0.0,
            len(x.terms[i] - q.terms - ctx) / max(1, len(x.terms[i])),
            float(met is True), float(met is False),
            float(q.expects == TIME and exact_time(u.text, q.text)),
            in_range, in_tightest, figure_missing, window_missing, defines,
            1.0 / x.passage_rank[i], x.passage_gap[i], x.passage_cos[i],
            float(u.kind == "row"), float(u.kind == "item"),
            float(q.expects == LIST and x.leads[i]), float(q.expects == LIST and u.kind in ("item", "row")),
            math.log1p(len(u.text.split()) + len(re.findall(r"[\u4e00-\u9fff]", u.text)) / 2)])
    return np.asarray(rows, dtype=np.float64).reshape(len(x.units), len(CHEAP_FEATURES))


def passage_cosines(snapshot, hits, qvec: np.ndarray | None) -> dict[int, float]:
    """Passage number -> cosine of the question and the passage's stored vector (free: no embedding)."""
    if qvec is None:
        return {}
    return {i + 1: float(snapshot.chunk_vector(h.row) @ qvec) for i, h in enumerate(hits)}


def with_cosines(cheap: np.ndarray, cosines: np.ndarray | None) -> np.ndarray:
    """UNIT_FEATURES: the cheap ones plus the cosine and its gap to the best unit's (zeros without cosines)."""
    if cosines is None or not len(cosines):
        return np.hstack([cheap, np.zeros((len(cheap), 2))])
    c = np.asarray(cosines, dtype=np.float64).reshape(-1, 1)
    return np.hstack([cheap, c, c - c.max()])


def question_features(q_terms: set[str], ranked: list[ScoredUnit], passage_terms: set[str],
                      idf: dict[str, float], top_cos: float | None) -> np.ndarray:
    """QUESTION_FEATURES of a question (its terms), its ranked units and the terms of its retrieved passages."""
    best = ranked[0]
    margin = best.score - ranked[1].score if len(ranked) > 1 else 5.0
    # Figures are judged by the figure features (a range may hold them); here only words count.
    q_terms = {t for t in q_terms if not NUMERIC_TERM.fullmatch(t)}
    weights = {t: idf.get(t, 1.0) for t in q_terms}
    total = sum(weights.values()) or 1.0
    missing = {t for t in q_terms if t not in passage_terms}
    missing_share = sum(weights[t] for t in missing) / total
    f = best.features
    return np.asarray([best.score, margin, f["cos"], f["kw_window"], f["figure_missing"], missing_share,
                       top_cos if top_cos is not None else 0.0], dtype=np.float64)


@dataclass
class Selection:
    question: QuestionAnalysis
    ranked: list[ScoredUnit]  # answering units, best first
    answerable: float  # the abstention model's probability that the best unit answers the question
    answer: bool  # answerable >= the fitted threshold
    features: dict[str, float]  # the question-level features (reported by evaluations)
    computed: TableAnswer | None = None  # a comparison or calculation over table rows (set by the Answerer)


class AnswerSelector:
    """Scores the answer units of the top `max_passages` passages and decides whether the best one answers.

    Units are pre-scored without the embedder; the best EMBED_TOP are embedded (with their context) in one
    batch and scored with their cosines."""

    def __init__(self, models: SelectionModels, keyword_models: SelectionModels | None = None,
                 max_passages: int = 20, embed_top: int = EMBED_TOP, qa: QAReading | None = None):
        self.models = models
        self.keyword_models = keyword_models or models
        self.max_passages = max_passages
        self.embed_top = embed_top
        self.qa = qa

    def inputs(self, evidence, passage_cos: dict[int, float] | None = None) -> UnitInputs:
        ns = sorted(evidence.units)[: self.max_passages]
        best_score = max((evidence.passages[n].score for n in ns), default=0.0)
        out = UnitInputs(passages_terms=[_matchable(evidence.units[n].all_terms, evidence.units[n].passage.text)
                                         for n in ns])
        for rank, n in enumerate(ns, 1):
            pu = evidence.units[n]
            title = _matchable(terms_of(pu.passage.title), pu.passage.title)
            unit_terms = [_matchable(t, u.text) for t, u in zip(pu.terms, pu.units)]
            tokens = [tokenize(u.text) for u in pu.units]
            for i, u in enumerate(pu.units):
                if not u.answers:
                    continue
                ctx = _matchable(pu.context_terms[i], u.context) | title
                near = set().union(*(unit_terms[j] for j in (i - 1, i + 1) if 0 <= j < len(pu.units)))
                out.units.append(u)
                out.terms.append(unit_terms[i])
                out.context.append(ctx)
                out.window.append(unit_terms[i] | near | ctx)
                out.window_numbers.append(numbers_in(f"{u.text}\n{u.context}\n{pu.passage.title}"))
                out.title.append(title | terms_of(pu.passage.heading))
                out.leads.append(u.text.rstrip().endswith((":", "：")) and i + 1 < len(pu.units)
                                 and pu.units[i + 1].kind in ("item", "row"))
                out.pairs.append(term_pairs(tokens[i]))
                out.passage_rank.append(rank)
                out.passage_gap.append(pu.passage.score - best_score)
                out.passage_cos.append((passage_cos or {}).get(n, 0.0))
        return out

    def matrices(self, q: QuestionAnalysis, evidence, x: UnitInputs, qvec: np.ndarray | None,
                 idf: dict[str, float], models: SelectionModels | None = None, embed_all: bool = False,
                 also: int | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(cheap features of all units, UNIT_FEATURES of the embedded ones, their indices into x.units);
        `also`: a unit embedded whatever its cheap score (the one the QA model points at)."""
        models = models or self.models
        cheap = cheap_features(q, x, idf)
        if embed_all or len(x.units) <= self.embed_top:
            keep = list(range(len(x.units)))
        else:
            pre = models.prescore.logits(cheap)
            keep = sorted(set(np.argsort(-pre, kind="stable")[: self.embed_top].tolist()) | ({also} - {None}))
        cos = None
        if qvec is not None and evidence.embedder is not None and keep:
            cos = evidence.unit_vectors([(x.units[i].n, x.units[i].index) for i in keep], with_context=True) @ qvec
        return cheap, with_cosines(cheap[keep], cos), keep

    def select(self, q: QuestionAnalysis, evidence, *, qvec: np.ndarray | None, idf: dict[str, float],
               top_cos: float | None, passage_cos: dict[int, float] | None = None) -> Selection:
        x = self.inputs(evidence, passage_cos)
        if not x.units:
            return Selection(q, [], 0.0, False, {})
        models = self.models if (qvec is not None and evidence.embedder is not None) else self.keyword_models
        found, read = self.qa.read(q.text, evidence, x) if self.qa is not None else (None, None)
        _, full, keep = self.matrices(q, evidence, x, qvec, idf, models, also=read)
        logits = models.units.logits(full)
        ranked = sorted((ScoredUnit(x.units[i], dict(zip(UNIT_FEATURES, row)), float(z), x.window_numbers[i])
                         for i, row, z in zip(keep, full, logits)), key=lambda s: (-s.score, s.unit.n, s.unit.index))
        qx = question_features(q.terms, ranked, set().union(*x.passages_terms), idf, top_cos)
        prob = float(models.answerable.probability(qx[None, :])[0])
        place = {n: (p.doc_id, p.ordinal or 0) for n, p in evidence.passages.items()}
        ranked = ordinal_first(q, keyed_row_first(q, named_row_first(q, list_first(q, definition_first(
            q, asked_by_heading_first(q, ranked, place))))))
        features = dict(zip(QUESTION_FEATURES, map(float, qx)))
        answers = prob >= models.answerable.threshold
        if found is not None:  # the QA model read the passages: its unit answers, and it decides whether any does
            features["qa_margin"] = found.margin
            answers = found.margin >= self.qa.min_margin
            if read is not None:
                ranked = sorted(ranked, key=lambda su: su.unit is not x.units[read])
        window = x.window[next(i for i, u in enumerate(x.units) if u is ranked[0].unit)]
        return Selection(q, ranked, prob, answers and not states_something_else(
            q, ranked[0], evidence.passages[ranked[0].unit.n], window, idf), features)


@dataclass
class QAReading:
    """An extractive QA model (rag.qa_model) over the `passages` best passages; `min_margin`: how far its span
    must outscore "no answer" for the question to be answered."""

    model: object  # rag.qa_model.QAModel (imported by whoever configures one: it needs transformers)
    passages: int = 3
    min_margin: float = 0.0

    def read(self, question: str, evidence, x: UnitInputs):
        """(the model's best span, the index into x.units of the unit that holds it), or (None, None)."""
        ns = sorted({u.n for u in x.units})[: self.passages]
        found = self.model.find(question, [evidence.passages[n].text for n in ns])
        if found is None:
            return None, None
        n = ns[found.passage]
        mine = [i for i, u in enumerate(x.units) if u.n == n]
        # The unit whose stretch of the passage holds the span's start; a span in a heading or a restated title
        # (no answering unit holds it) answers with the passage's answering unit that starts nearest to it.
        held = next((i for i in mine if x.units[i].start <= found.start < x.units[i].end), None)
        if held is None and mine:
            held = min(mine, key=lambda i: abs(x.units[i].start - found.start))
        return found, held


def states_something_else(q: QuestionAnalysis, best: ScoredUnit, passage, window: set[str],
                          idf: dict[str, float]) -> bool:
    """The best unit states its fact for something other than what the question names (each check below): the
    question abstains whatever the abstention model says. `window`: the best unit's terms with its neighbours,
    context and title."""
    unit, text = best.unit, best.unit.text
    # A year the best unit does not hold (nor its heading or title): "the limit in 2015" is not answered by the
    # 2025 table, however well the rest matches.
    if any(y not in best.unit_numbers for y in q.years):
        return True
    # A quantity asked in a measure the unit writes no figure in ("多少毫克"), none stated at all, or stated for a
    # weight or age other than the asker's.
    if q.expects == QUANTITY and (in_other_measure(q.text, text) or not states_quantity(q, text)
                                  or outside_ranges(q, text)):
        return True
    return (other_place(q, passage) or quoted_missing(q.text, passage) or acronym_missing(q.text, passage)
            or other_ordinal(q, text)
            or other_side(q, text) or other_column(q, unit, window) or other_subject(q, unit, window, idf))


def _passage_text(passage) -> str:
    """What a passage says, its title and heading included."""
    return f"{passage.title}\n{passage.heading}\n{passage.text}"


def other_column(q: QuestionAnalysis, unit: AnswerUnit, window: set[str]) -> bool:
    """The best unit is a table row whose columns are kinds of one thing ("Ibuprofen dose", "Acetaminophen dose";
    "Basic Checking", "Premier Checking"), the question asks for that thing ("dose", "checking") but names none of
    the kinds, and beside it says a word the row's window lacks ("dose of naproxen", "business checking"): it asks
    for a column the table does not have, and any of its cells would be another kind's figure."""
    if unit.row is None:
        return False
    labels = [set(tokenize(label)) for label, _ in unit.row[1] if label]
    words = question_terms(q.text)
    kinds: set[str] = set()  # what tells the columns of each thing the question asks for apart
    named: set[str] = set()  # the question's words beside such a thing ("naproxen" of "dose of naproxen")
    for head in q.terms:
        group = [lab for lab in labels if head in lab]
        if len(group) >= 2 and not NUMERIC_TERM.fullmatch(head):  # a year heads periods, not kinds of a thing
            kinds |= {t for t in set().union(*group) - set.intersection(*group) if not NUMERIC_TERM.fullmatch(t)}
            named |= {w for i, w in enumerate(words) if head in words[max(0, i - 1):i + 2]} - {head}
    return bool(kinds) and not kinds & q.terms and any(w in q.terms and w not in window for w in named
                                                       if not NUMERIC_TERM.fullmatch(w))


# The label of a list item that names its subject ("水果：...", "Ibuprofen: ..."): a few words before a colon, not a
# condition ("初诊或调整用药时：", "If symptoms persist:").
_SUBJECT_LABEL = re.compile(r"^\s*(?P<label>[^:：。.;；,，]{1,40}?)\s*[:：]")
_CONDITION = re.compile(r"(时|后|前|期间)$|^(if|when|after|before|during|while|for)\b", re.IGNORECASE)


def other_subject(q: QuestionAnalysis, unit: AnswerUnit, window: set[str], idf: dict[str, float]) -> bool:
    """The best unit is a list item labelled with its subject ("水果：...每天约200克"), the question names none of the
    label's words, and its rarest word is nowhere near the item ("坚果"): the item states the fact for a sibling
    subject of the same list."""
    if unit.kind != "item" or not (m := _SUBJECT_LABEL.match(unit.text)):
        return False
    label = m.group("label").strip()
    words = set(tokenize(label))
    if not words or _CONDITION.search(label) or len(label.split()) > 3 or (CJK_RUN.fullmatch(label) and len(label) > 4):
        return False
    content = [t for t in q.terms if not NUMERIC_TERM.fullmatch(t)]
    if not content or any(t in words or (CJK_RUN.fullmatch(t) and t in label) for t in q.terms):
        return False
    rarest = max(idf.get(t, 1.0) for t in content)
    return any(t not in window for t in content if idf.get(t, 1.0) >= rarest)


def other_place(q: QuestionAnalysis, passage) -> bool:
    """The question names a place its best unit's passage never mentions, and the passage names another: it states
    another place's rule ("上海新高考可以填报多少个志愿？" answered by "例如浙江可填报80个、山东可填报96个志愿"). A
    passage that names no place may state a national rule, which holds everywhere: that one answers."""
    if not q.places:
        return False
    text = _passage_text(passage)
    return any(p not in text for p in q.places) and bool(place_names(text) - q.places)


# What a question quotes ("字母“D”", "the 'rule of 15'", 《草船借箭》) is asked about as written: a passage that never
# writes it is about something else (the letter "N" of the same repayment record).
_QUOTED = re.compile(r"“([^”]{1,30})”|「([^」]{1,30})」|《([^》]{1,30})》|\"([^\"]{1,30})\""
                     r"|(?<![A-Za-z])'([^']{1,30})'(?![A-Za-z])")  # not the apostrophes of "years' worth ... son's"


_ACRONYM = re.compile(r"(?<![A-Za-z0-9.])(?:[A-Z]{2,6}|[A-Z][a-z]?[A-Z]{1,5})(?=s?(?![A-Za-z0-9]))")
_NOT_ACRONYMS = frozenset("II III IV VI VII VIII IX XI XII US UK EU OK AM PM TV ID".split())


def acronym_missing(question: str, passage) -> bool:
    """The question names something by an acronym ("a SEP IRA") that its best unit's passage never writes, nor
    spells out (the initials of consecutive words, "of" and "the" aside: "UMC" for "United Methodist Church"): the
    fact found is for something else ("IRA catch-up" for the SEP IRA limit)."""
    acronyms = [a for a in _ACRONYM.findall(question) if a not in _NOT_ACRONYMS]
    if not acronyms:
        return False
    text = _passage_text(passage)
    initials = "".join(w[0] for w in re.findall(r"[A-Za-z][A-Za-z'-]*", text)
                       if w.lower() not in ("of", "the", "and", "for")).lower()
    return any(a not in text and a.lower() not in initials for a in acronyms)  # "AGI" is in "MAGI" too


def quoted_missing(question: str, passage) -> bool:
    """The question quotes something its best unit's passage (title, heading, text) never writes: a short code
    ("D") as a word of its own and with its case, Chinese as written; English words a user may quote in their own
    order ("'10 minutes per grade'" for "10 minutes of homework per grade level"), so each word must be there."""
    text = _passage_text(passage)
    words: set[str] | None = None
    for m in _QUOTED.finditer(question):
        quoted = next(g for g in m.groups() if g is not None).strip()
        if not quoted:
            continue
        if len(quoted) <= 2 and quoted.isascii():
            if not re.search(rf"(?<![A-Za-z0-9]){re.escape(quoted)}(?![A-Za-z0-9])", text):
                return True
        elif CJK_RUN.search(quoted):
            if quoted not in text:
                return True
        else:
            words = set(tokenize(text)) if words is None else words
            if not set(tokenize(quoted)) <= words:
                return True
    return False


def opens_with_definition(text: str, subject: set[str]) -> bool:
    """The unit names the subject and then defines it: "Bloom's taxonomy is ...", "Avalanche: pay the highest
    rate first", "个人养老金是指 ...". What comes before the defining word is the subject (one other word allowed:
    "the avalanche approach is"), not just any words: "The two best-known strategies are the debt avalanche and
    ..." mentions the subject without defining it."""
    head = text[:80]
    # "The rule's strength is ..." names only the subject's head noun, which many subjects share ("the 50/30/20
    # rule"): the words that tell this subject from the others must be there.
    telling = subject - GENERIC_HEADS or subject
    for m in _DEFINES.finditer(head):
        before = set(tokenize(head[:m.start()]))
        if before & telling and len(before - subject) <= 1:
            return True
    return False


def definition_first(q: QuestionAnalysis, ranked: list[ScoredUnit]) -> list[ScoredUnit]:
    """"What is X?" wants the unit that defines X. The unit model weighs that (`defines`) beside word overlap, and
    a sentence that repeats the subject's words without defining it ("The two best-known strategies are the debt
    avalanche and the debt snowball") can outscore the definition ("Avalanche: direct extra payments to the debt
    with the highest interest rate first"); within DEFINITION_MARGIN of the best, the defining unit answers. The
    answer-or-abstain decision is the model's, made before (on its own ranking)."""
    if q.expects != DEFINITION:
        return ranked
    return _first_within(ranked, DEFINITION_MARGIN, lambda su: bool(su.features.get("defines")))


def asked_by_heading_first(q: QuestionAnalysis, ranked: list[ScoredUnit],
                           place: dict[int, tuple[str, int]]) -> list[ScoredUnit]:
    """A document that asks a question in a heading ("HOW MUCH IS ENOUGH?", "How long negative items last")
    answers it at the top of the section below; the unit model sees the heading's words, not that it asks, and
    "How much should I keep in an emergency fund?" was answered by the section's worked example ("Example: if
    essential expenses are 2,800 dollars a month, ...") instead of its first sentence ("The most common guideline
    is three to six months of essential expenses."). A unit is asked for when its heading asks what the question
    asks (a quantity, a time, a name), its window (itself, its neighbours, heading and title) holds every term of
    the question and it states that kind of answer (within HEADING_MARGIN of the best); for a "when" question, also
    when a heading that asks nothing names the timing of what the question asks about (`names_timing`, within
    TIMING_MARGIN). The first asked unit in reading order of the best-scored asked unit's section answers.
    `place`: passage number -> (document, its place in the document)."""
    if q.expects not in (QUANTITY, TIME, NAME) or not ranked:
        return ranked

    def asked(su: ScoredUnit) -> bool:
        u = su.unit
        if not u.heading or meets(q.expects, u.text, q.text) is not True:
            return False
        if _asks(u.heading) == q.expects:
            return ranked[0].score - su.score <= HEADING_MARGIN and su.features.get("kw_window", 0.0) >= 1.0 - 1e-9
        return ranked[0].score - su.score <= TIMING_MARGIN and names_timing(u.heading, q)

    near = [su for su in ranked if asked(su)]
    if not near:
        return ranked

    def section(su: ScoredUnit) -> tuple[str, str]:
        return place[su.unit.n][0], su.unit.heading

    first = min((su for su in near if section(su) == section(near[0])),
                key=lambda su: (place[su.unit.n][1], su.unit.index))
    return [first, *(su for su in ranked if su is not first)]


def names_timing(heading: str, q: QuestionAnalysis) -> bool:
    """A "when" question and a heading that names the timing of what it asks about: "高血压患者应该什么时候测量血压？"
    under "五、测量时间和频率" (the heading says the question's "测量" and "时间"). A heading's few words say more
    about its section than a table elsewhere in the document whose labels share the question's words ("24小时动态血压"
    reads as a time, "测量方式" as the act)."""
    if q.expects != TIME or not _TIMING.search(heading):
        return False
    words = set(tokenize(_TIMING.sub(" ", heading)))
    return any(t in words for t in q.terms if not NUMERIC_TERM.fullmatch(t))


@lru_cache(maxsize=4096)
def _asks(heading: str) -> str:
    """What a heading asks for, read as a question (rag.questions' kinds; "other" for a heading that asks nothing)."""
    return analyse(heading).expects


def list_first(q: QuestionAnalysis, ranked: list[ScoredUnit]) -> list[ScoredUnit]:
    """"What are the symptoms of X?" wants the members of a set, and the set is named by a heading or a lead-in
    ("Side effects: what is real?", "Red flags: Almost every scam uses ..."), not by each member: a sentence
    that repeats the question's words ("Any promise of guaranteed returns is a red flag", "If side effects
    occur, ...") outscores the members on words and then answers alone. Within LIST_MARGIN of the best, a list
    member (item, row or lead-in) whose heading or lead-in says at least half of the question's terms answers,
    unless the best is one (the extractive answer then shows its list). A list named in other words ("Use BE
    FAST to recognise the most common signs:" for symptoms) answers from within LIST_NEAR of a best sentence."""
    if q.expects != LIST or not ranked:
        return ranked

    def listed(su: ScoredUnit) -> bool:
        return su.unit.kind in ("item", "row") or bool(su.features.get("list_lead"))

    def named(su: ScoredUnit) -> bool:
        said = 2 * len(terms_of(su.unit.context) & q.terms) >= len(q.terms)
        # A section the question names by its heading ("Symptoms" under "Hypoglycaemia (low blood glucose)") is
        # the list even when written as a sentence ("Shakiness, sweating, fast heartbeat, ...").
        return said and (listed(su) or _heads(su.unit.heading, q.terms))

    out = _first_within(ranked, LIST_MARGIN, named)
    if out is ranked and ranked[0].unit.kind == "sentence" and not named(ranked[0]):
        out = _first_within(ranked, LIST_NEAR, listed)
    return out


def _heads(heading: str, q_terms: set[str]) -> bool:
    """The heading says only words of the question: it names what the question asks for."""
    words = terms_of(heading)
    return bool(words) and words <= q_terms


# An ordinal with what it counts ("第二套", "首套", "second dose", "3rd trimester"): the question's "第二套房" is not
# answered by a unit stating the first home's rate.
_ORDINAL = re.compile(r"(?:第\s*([一二两三四五六七八九十\d]{1,3})|(首))\s*([套次遍个胎期轮批档])"
                      r"|\b(first|second|third|fourth|fifth|sixth|1st|2nd|3rd|4th|5th|6th)[\s-]+([a-z]+)",
                      re.IGNORECASE)
_ORDINAL_VALUE = {"首": 1, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
                  "十": 10, "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "1st": 1,
                  "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "6th": 6}
ORDINAL_MARGIN = 2.0  # selector logits: a unit stating the question's ordinal this close to the best answers


def ordinals(text: str) -> set[tuple[int, str]]:
    """(the ordinal, what it counts) of each ordinal a text states: "第二套住房" -> (2, "套"), "first dose" -> (1,
    "dose")."""
    out = set()
    for m in _ORDINAL.finditer(text):
        if m.group(4):
            n, counted = _ORDINAL_VALUE[m.group(4).lower()], tokenize(m.group(5))
            if counted:
                out.add((n, counted[0]))
            continue
        word = m.group(1) or m.group(2)
        n = int(word) if word.isdigit() else _ORDINAL_VALUE.get(word)
        if n is not None:
            out.add((n, m.group(3)))
    return out


def other_ordinal(q: QuestionAnalysis, text: str) -> bool:
    """The unit states another ordinal of what the question counts, and not the question's own: "首套" for
    "第二套房", "first dose" for "the second dose"."""
    stated = ordinals(text)
    return any((n, c) not in stated and any(c == c2 and n != n2 for n2, c2 in stated) for n, c in ordinals(q.text))


# The sides of a distinction a table or a rule draws (as stems): a question on one side is not answered by a unit
# stating only another ("married filing separately" by the "married filing jointly" row, 高中 by 小学 and 初中).
_SIDES = (("separ", "joint"), ("incom", "outgo"), ("domest", "internat"), ("public", "privat"), ("male", "femal"),
          ("men", "women"), ("boy", "girl"), ("buy", "sell"), ("minimum", "maximum"), ("男性", "女性"),
          ("公立", "私立"), ("境内", "境外"), ("国内", "国际"), ("城镇", "农村"), ("小学", "初中", "高中", "大学"),
          # a filing status ("for single filers" does not answer a couple filing jointly); a pregnancy's babies
          ("singl", "joint"), ("singl", "twin", "triplet"))


def other_side(q: QuestionAnalysis, text: str) -> bool:
    """The question names one side of a distinction and the unit only others."""
    words = set(tokenize(text))
    for sides in _SIDES:
        asked = {side for side in sides if side in q.terms}
        if len(asked) == 1 and not asked & words and (set(sides) - asked) & words:
            return True
    return False


def ordinal_first(q: QuestionAnalysis, ranked: list[ScoredUnit]) -> list[ScoredUnit]:
    """A best unit stating another ordinal than the question's gives way to one stating the question's, within
    ORDINAL_MARGIN: "第二套房 ... 利率" is answered by the second home's rate, not the first home's sentence that
    shares more of its words."""
    if not ranked or not other_ordinal(q, ranked[0].unit.text):
        return ranked
    asked = ordinals(q.text)
    # The earlier reorderings may have put a unit first out of score order: every unit is looked at.
    for su in ranked[1:]:
        if ranked[0].score - su.score <= ORDINAL_MARGIN and asked & ordinals(su.unit.text):
            return [su, *(x for x in ranked if x is not su)]
    return ranked


def keyed_row_first(q: QuestionAnalysis, ranked: list[ScoredUnit]) -> list[ScoredUnit]:
    """"How much of payment number 60 goes to principal?" names a row by its key column and key: the row
    "Payment number: 60; ...; Principal portion: $373.01" answers before the example sentence that shares more of
    the question's other words, within KEYED_ROW_MARGIN of the best."""
    if not q.figures or not ranked:
        return ranked

    def keyed(su: ScoredUnit) -> bool:
        u = su.unit
        label = set(tokenize(u.row_key_label))  # empty for a unit that is no row, or a row with a lead
        return bool(label) and label <= q.terms and _num(u.row_key.strip()) in q.figures

    return _first_within(ranked, KEYED_ROW_MARGIN, keyed)


def named_row_first(q: QuestionAnalysis, ranked: list[ScoredUnit]) -> list[ScoredUnit]:
    """A table row whose label the question says in full ("days sales outstanding") answers before a row whose
    label shares only a word with it ("Diluted shares outstanding"), within ROW_NAME_MARGIN of the best: the
    label says what the row's figures are, and the unit model sees words, not whose words they are. A band
    ("7.5–15 kg") is no name: which band holds the question's figure is the range features' to say."""
    if not ranked or ranked[0].unit.row is None:
        return ranked
    return _first_within(ranked, ROW_NAME_MARGIN, lambda su: su.unit.row is not None and named_share(su.unit, q) >= 1.0
                         and not ranges_in(su.unit.row_key))


def _first_within(ranked: list[ScoredUnit], margin: float, wanted) -> list[ScoredUnit]:
    """`ranked` with its first unit that is `wanted` moved to the front, when the best is not wanted and that
    one scores within `margin` of it; otherwise as it is."""
    if not ranked or wanted(ranked[0]):
        return ranked
    for i, su in enumerate(ranked[1:], 1):
        if ranked[0].score - su.score > margin:
            break
        if wanted(su):
            return [su, *ranked[:i], *ranked[i + 1:]]
    return ranked


def with_characters(terms: set[str]) -> set[str]:
    """A passage's terms with the single characters of its Chinese words: a question's one-character word ("缴" of
    "可以缴多少") then matches the passage's "缴费" or "缴纳", which segmentation keeps whole."""
    return terms | {c for t in terms if len(t) > 1 and CJK_RUN.fullmatch(t) for c in t}


def _matchable(terms: set[str], text: str) -> set[str]:
    """What a question's terms are matched against in `text` (whose terms are `terms`): the terms, the characters
    of its Chinese words (`with_characters`) and the character pairs of its Chinese runs, so that a question's
    two-character word matches where segmentation cut the text differently ("比腋温高" -> "比腋" / "温高")."""
    text = formal(text)
    return with_characters({formal(t) for t in terms}) | {run[i:i + 2] for run in CJK_RUN.findall(text)
                                                          for i in range(len(run) - 1)}


def terms_of(text: str) -> set[str]:
    return set(tokenize(text))
