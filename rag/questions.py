"""What a question asks for: the kind of answer it expects, the figures it states, the subject of a definition.

Read by answer selection (a "how much" question wants a unit holding a quantity; a number in the question picks
the table row whose range holds it) and by answer composition (a list question takes the neighbouring items).
English and Chinese; anything else falls back to "other", which constrains nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.text import detect_language, tokenize

QUANTITY, TIME, NAME, DEFINITION, LIST, YESNO, OTHER = ("quantity", "time", "name", "definition", "list",
                                                         "yesno", "other")

_QUANTITY = re.compile(
    r"\bhow (much|many|long|often|old|far|big|large|high|tall|heavy|frequently)\b"
    r"|\bwhat (percentage|percent|proportion|share|fraction|amount|number|rate|dose|dosage|level|range|limit)\b"
    r"|\bwhat is the (maximum|minimum|max|min|limit|rate|cost|fee|price|dose|dosage|amount|number|percentage"
    r"|threshold|target|cap|deadline|penalty|value|total|size|length|duration)\b"
    r"|\b(how much|how many)\b"
    r"|多少|几[个次天年月周岁小时分钟]?|多久|多长|多大|多高|多重|多远|上限|下限|比例|百分之|额度|标准是",
    re.IGNORECASE)
_TIME = re.compile(r"\bwhen\b|\bwhat (year|time|date|age|month|day)\b|\bat what age\b|\bwhich (year|month|day)\b"
                   r"|\bhow soon\b|\bby what age\b|什么时候|何时|哪一年|哪年|几岁|几月|什么时间|多大年龄|哪一天",
                   re.IGNORECASE)
_NAME = re.compile(r"^\s*(who|whom|whose)\b|\bwhich (company|person|organization|organisation|agency|body|group"
                   r"|country|city|team|author)\b|^\s*what (company|organization|organisation|agency|body)\b|谁",
                   re.IGNORECASE)
_DEFINITION = re.compile(r"^\s*(what|who) (is|are|was|were) (a |an |the )?(?P<x>[^?]+?)\s*\??\s*$"
                         r"|^\s*what does (?P<y>[^?]+?) (mean|stand for)\s*\??\s*$|^\s*define (?P<z>[^?]+)"
                         r"|^\s*什么是(?P<u>[^？?]+)|^\s*(?P<v>[^？?]+?)是什么(意思)?[？?]?\s*$"
                         r"|^\s*(?P<w>[^？?]+?)指的?是什么", re.IGNORECASE)
_LIST = re.compile(
    r"\bwhat are (the )?(main |common |key |most common |typical |early |warning )?(signs|symptoms|steps|types"
    r"|kinds|levels|stages|ways|benefits|risks|causes|options|components|parts|rules|tips|strategies|features"
    r"|requirements|categories|principles|elements|examples|side effects|differences)\b"
    r"|^\s*(list|name|describe|explain|compare|summari[sz]e)\b|\bhow (do|can|should|to) (i |we |you )?\w+"
    r"|\bwhat should (i|we|you|a|the)\b|\bwhat can (i|we|you)\b|\bwhich steps\b|\bdifference between\b"
    r"|有哪些|哪些|步骤|如何|怎么|怎样|为什么|区别",
    re.IGNORECASE)
_YESNO = re.compile(r"^\s*(is|are|can|could|does|do|did|should|will|would|may|might|was|were|has|have|must)\b"
                    r"|吗[？?]?\s*$|是否|能否|可否|能不能|是不是|会不会|要不要", re.IGNORECASE)
# Words that say how a question is asked, not what about: they count toward no coverage and no near miss.
_HOW = re.compile(r"\bhow (much|many|long|old|far|big|large|high|tall|soon|often|frequently|young)\b", re.IGNORECASE)
_AGE = re.compile(r"(\d+)[- ]years?[- ]olds?\b", re.IGNORECASE)  # "a 35-year-old": an age in years
FILLER = frozenset("""
mani much often typic usual general my me say tell know want need get happen kind way mean someth ever actual
realli exact normal
什么 意思 多大 常说 一般 通常 应该 需要 可以 怎么 怎么样 为什么 哪个 哪些 属于 多久 多长 大概 主要 一些 请问 多少
几 吗 呢 能 能否 是否 如何 哪里 谁 时候 什么时候
""".split())
# Figures a question states ("a 35-year-old", "an income of $50,000", "a score of 85%"): not years.
_FIGURE = re.compile(r"(?<![A-Za-z0-9_.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![A-Za-z0-9_.])\d+(?:\.\d+)?")


@dataclass
class QuestionAnalysis:
    text: str
    language: str
    terms: set[str]
    expects: str
    figures: list[float] = field(default_factory=list)
    figure_spans: list[tuple[float, int]] = field(default_factory=list)  # (value, offset just after it)
    subject: set[str] = field(default_factory=set)  # the X of "what is X"
    years: set[str] = field(default_factory=set)  # the years it names ("in 2015"): the period it asks about

    @property
    def wants_list(self) -> bool:
        return self.expects == LIST


_MULTIPLIER = re.compile(r"\s*(万|亿|k\b|thousand\b|million\b)", re.IGNORECASE)
_CODE_SUFFIX = re.compile(r"\([A-Za-z]\)")
_TIMES = {"万": 1e4, "亿": 1e8, "k": 1e3, "thousand": 1e3, "million": 1e6}


def figures_in(text: str) -> list[tuple[float, int]]:
    """(value, end offset) of each figure in `text`; "20万" is 200000 and "60k" 60000."""
    out = []
    for m in _FIGURE.finditer(text):
        try:
            value = float(m.group(0).replace(",", ""))
        except ValueError:
            continue
        end = m.end()
        if _CODE_SUFFIX.match(text, end):  # "401(k)", "403(b)": the name of a plan, not a figure
            continue
        if times := _MULTIPLIER.match(text, end):
            value *= _TIMES[times.group(1).lower()]
            end = times.end()
        out.append((value, end))
    return out


def analyse(question: str) -> QuestionAnalysis:
    q = question.strip()
    expects = OTHER
    subject: set[str] = set()
    if _NAME.search(q):
        expects = NAME
    elif _TIME.search(q):
        expects = TIME
    elif _QUANTITY.search(q):
        expects = QUANTITY
    elif _LIST.search(q):
        expects = LIST
    elif (m := _DEFINITION.search(q)) and len(x := set(tokenize(next(g for g in m.groupdict().values() if g)))) <= 5:
        # "What is the company paid on a cost-plus contract?" has the shape, not the sense: a subject of more
        # than a few terms is a description, not a term to define.
        expects, subject = DEFINITION, x
    elif _YESNO.search(q):
        expects = YESNO
    # A year names a period, not a value to bracket.
    spans = [(f, end) for f, end in figures_in(q) if not (1900 <= f <= 2100 and f == int(f))]
    terms = set(tokenize(_AGE.sub(r"\1 years", _HOW.sub(" ", q)))) - FILLER
    years = set(re.findall(r"(?<!\d)(?:19|20)\d\d(?!\d)", q))
    return QuestionAnalysis(q, detect_language(q), terms, expects, [f for f, _ in spans], spans, subject, years)
