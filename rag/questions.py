"""What a question asks for: the kind of answer it expects, the figures it states, the subject of a definition.

Read by answer selection (a "how much" question wants a unit holding a quantity; a number in the question picks
the table row whose range holds it), by answer composition (a list question takes the neighbouring items) and by
table answers (a comparison, "in which year was revenue highest?", is answered by comparing a row's figures).
English and Chinese; anything else falls back to "other", which constrains nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.text import arabic_counts, detect_language, formal, place_names, question_terms, tokenize

QUANTITY, TIME, NAME, DEFINITION, LIST, YESNO, OTHER = ("quantity", "time", "name", "definition", "list",
                                                         "yesno", "other")

# Rates of money, which are percentages ("the effective tax rate", "APY"); a bare "rate" (CPR's compressions per
# minute) is not one.
RATE_OF_MONEY = (r"\b(?:interest|tax|mortgage|loan|savings|inflation|unemployment|vacancy) rates?\b"
                 r"|\bAPY\b|\bAPR\b")
_QUANTITY = re.compile(
    r"\bhow (much|many|long|often|old|far|big|large|high|tall|heavy|frequently)\b"
    r"|\bwhat (percentage|percent|proportion|share|fraction|amount|number|rate|dose|dosage|level|range|limit)\b"
    r"|\bwhat is the (maximum|minimum|max|min|limit|rate|cost|fee|price|dose|dosage|amount|number|percentage"
    r"|threshold|target|cap|deadline|penalty|value|total|size|length|duration)\b"
    r"|\b(how much|how many)\b"
    # "What interest rate (APY) does it pay?", "What is the effective tax rate?"
    r"|\bwhat (?:is |was |are |were )?(?:the )?(?:[a-z-]+ )?(?:" + RATE_OF_MONEY + ")"
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
# The plural nouns that name a set ("the signs", "which factors"), and the words that may grade it before them.
_SET_NOUNS = (r"signs|symptoms|steps|types|kinds|levels|stages|benefits|risks|causes|components|parts|rules|tips"
              r"|strategies|features|requirements|categories|principles|elements|side effects|factors")
_SET_GRADE = r"(main |common |key |most common |typical |early |warning )?"
_LIST = re.compile(
    rf"\bwhat are (the )?{_SET_GRADE}(ways|options|examples|differences|{_SET_NOUNS})\b"
    # "What factors make up a FICO score?", "Which symptoms does a stroke cause?": the plural noun asks for a set
    rf"|\b(what|which) {_SET_GRADE}({_SET_NOUNS}) (are|were|do|does|did|make|can|should|must|affect|cause|help)\b"
    # "What are the most common scams?", "What are the red flags of a scam?": a set of things, not a definition
    r"|\bwhat are (the )?(most |main |common |key |typical |early |warning |best |biggest |major |important )+\w+s\b"
    r"|\bwhat are the (\w+ )?\w+s (of|for|to|in|when|after|before|during)\b"
    r"|^\s*(list|name|describe|explain|compare|summari[sz]e)\b|\bhow (do|can|should|to) (i |we |you )?\w+"
    r"|\bwhat should (i|we|you|a|the)\b|\bwhat can (i|we|you)\b|\bwhich steps\b|\bdifference between\b"
    r"|有哪些|哪些|步骤|如何|怎么|怎样|为什么|区别",
    re.IGNORECASE)
# The words that grade a list ("the most common", "early warning") say which members come first, not what the list
# is of: "What are the warning signs of a stroke?" is answered by a stroke's signs, not by another document's list
# headed "Warning signs". A list question's terms leave them out.
_LIST_GRADE = re.compile(r"\b(?:most |main |common |key |typical |early |warning |major |important )+(?=\w)",
                         re.IGNORECASE)
_YESNO = re.compile(r"^\s*(is|are|can|could|does|do|did|should|will|would|may|might|was|were|has|have|must)\b"
                    r"|吗[？?]?\s*$|是否|能否|可否|能不能|是不是|会不会|要不要", re.IGNORECASE)
# Words that say how a question is asked, not what about: they count toward no coverage and no near miss.
_HOW = re.compile(r"\bhow (much|many|long|old|far|big|large|high|tall|soon|often|frequently|young)\b"
                  r"|\bstands? for\b"  # "What does GRASPS stand for?" asks for what the letters name
                  # "What was the amount of Other in 2018?" asks for Other's figure: tables do not say "amount"
                  r"|(?<=\bthe )amounts? of\b|(?<=\btotal )amounts? of\b"
                  # Chinese asks with 几 / 多少 / 哪 and a measure word: the search segmentation keeps the pair as a
                  # word ("几次", "哪一年", "多长时间") no passage holds, so it reads as a missing term ("哪几部" asks
                  # which ones, not how many: its words stay)
                  r"|(?<!哪)几(?!乎)[个次天年月周岁小时分秒钟点部本遍种项条位名层级档倍]*|多少[钱个次天年元人]?|多长时间|多长|多久"
                  r"|满?多大(?:年龄)?|哪一?[年个天种项类家所部本位些]", re.IGNORECASE)
_AGE = re.compile(r"(\d+)[- ]years?[- ]olds?\b", re.IGNORECASE)  # "a 35-year-old": an age in years
FILLER = frozenset("""
mani much often typic usual general my me say tell know want need get happen kind way mean someth ever actual
realli exact normal have do be someon anyon everyon myself yourself himself herself itself ourselv yourselv themselv
just still about like lot each all up out come came goe go went
什么 意思 多大 常说 一般 通常 应该 需要 可以 怎么 怎么样 为什么 哪个 哪些 属于 多久 多长 大概 主要 一些 请问 多少
几 吗 呢 能 能否 是否 如何 哪里 谁 时候 什么时候
我 我们 你 你们 他 她 它 他们 她们 咱们 自己 多 个 到 要 才 里 时 该 做 不 不能 哪 有 会 还 得 让 给
才能 这种 这个 那个 以后 之后 比较 合适 最好 请 现在 还要 就算 一共
我家 儿子 女儿 爸爸 妈妈 父亲 母亲 老公 老婆 丈夫 妻子 爷爷 奶奶 外公 外婆 姥姥 姥爷
""".split())
# Who the asker asks for ("my son", "our daughter", "Grandma") is not what the answer is about: documents say "a
# child", "adults", never "my daughter". (Chinese kin words are FILLER.) "Luther's father" names a person and stays.
_ASKER_KIN = re.compile(r"\b(?:my|our|your|his|her|their)\s+(?:(?:little|older|younger|elderly|teenage|baby|eldest"
                        r"|youngest)\s+)?(?:son|daughter|father|mother|dad|mom|mum|grand(?:ma|pa|mother|father|son"
                        r"|daughter|child|children|kids?)|uncle|aunt|husband|wife|partner|brother|sister|niece|nephew"
                        r"|friend|neighbou?r|boss|coworker)s?\b|\b(?:grandma|grandpa|mom|dad|mum)\b", re.IGNORECASE)
# Figures a question states ("a 35-year-old", "an income of $50,000", "a score of 85%"): not years, and not the
# number of a name ("COVID-19", "PHQ-9", "K-12").
_FIGURE = re.compile(r"(?<![A-Za-z0-9_.])(?<![A-Za-z]-)\d{1,3}(?:,\d{3})+(?:\.\d+)?"
                     r"|(?<![A-Za-z0-9_.])(?<![A-Za-z]-)\d+(?:\.\d+)?")


# Comparisons over a table: which period (a column) or which item (a row) has the most or least of something, or
# which periods lie beyond a bound ("In which year was R&D less than 10,000 thousands?").
_PERIOD_ASKED = re.compile(r"\b(?:which|what) (?:fiscal )?(?P<period>years?|fy|periods?|quarters?|months?|dates?)\b"
                           r"|^\s*when\b|(?P<zh>哪一?年)|哪个?季度|哪个?月|哪一?期", re.IGNORECASE)
_ITEM_ASKED = re.compile(r"\bwhich (?:of the )?(?:[a-z-]+ ){0,3}?[a-z-]+\b|\bwhat (?:is|was|are|were) the [a-z-]+"
                         r"(?: [a-z-]+)? (?:that|which|with)\b|哪一?个|哪一?项|哪一?种|哪一?类|哪家|哪个部门",
                         re.IGNORECASE)
_MOST = re.compile(r"\b(?:larger|largest|higher|highest|greater|greatest|bigger|biggest|most|peak)\b"
                   r"|最高|最多|最大|更高|更多|更大|较高|较多|较大", re.IGNORECASE)
_LEAST = re.compile(r"\b(?:smaller|smallest|lower|lowest|least|fewer|fewest)\b|最低|最少|最小|更低|更少|更小"
                    r"|较低|较少|较小", re.IGNORECASE)
_BOUND = re.compile(r"(?P<op>less than|lower than|fewer than|smaller than|below|under|more than|greater than"
                    r"|higher than|larger than|above|over|exceed(?:s|ed|ing)?|低于|少于|小于|不足|高于|多于|大于|超过)"
                    r"\s*\$?\s*(?P<n>\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
# The noun of "Which regions had ...?": what kind of item the answer names.
_ITEM_NOUN = re.compile(r"\bwhich (?:of the )?(?P<noun>(?:[a-z-]+ ){0,3}?[a-z-]+) (?:is|was|are|were|has|had|have|did"
                        r"|does|do|needs?|gets?|got|shows?|showed|pays?|paid|offers?|charges?|makes?|made|reports?"
                        r"|reported|records?|recorded|contribute[sd]?|costs?|accounted|generate[sd]?|earn"
                        r"|earns|earned|grows?|grew|spends?|spent|sees?|saw|produce[sd]?|requires?|required)\b",
                        re.IGNORECASE)
_BELOW = ("less", "lower", "fewer", "smaller", "below", "under", "低于", "少于", "小于", "不足")


@dataclass(frozen=True)
class Comparison:
    """What a comparison question asks a table: `target` "column" (which period) or "row" (which item), and either
    a `direction` ("max" / "min") or a `bound` ("<" or ">", the figure as written, scale words ignored: a question
    saying "less than 600,000 thousands" reads a table kept in thousands)."""

    target: str
    direction: str | None = None
    bound: tuple[str, float] | None = None
    item: str = ""  # what kind of item the answer names ("regions"; "year" when only a year answers)


def comparison_in(question: str) -> Comparison | None:
    """The comparison a question asks for, or None ("In which year was revenue recognized?" compares nothing)."""
    if period := _PERIOD_ASKED.search(question):
        target = "column"
        # "Which year" is answered by a year (not by "1-3 years"); "which period" by any period label.
        item = "year" if period.group("zh") or (period.group("period") or "").lower() in ("year", "years", "fy") \
            else ""
    elif _ITEM_ASKED.search(question):
        target = "row"
        item = m.group("noun") if (m := _ITEM_NOUN.search(question)) else ""
    else:
        return None
    if m := _BOUND.search(question):
        op = "<" if m.group("op").lower().startswith(_BELOW) else ">"
        return Comparison(target, bound=(op, float(m.group("n").replace(",", ""))), item=item)
    most, least = _MOST.search(question), _LEAST.search(question)
    if bool(most) == bool(least):
        return None  # neither, or both ("more ... than the lowest"): not one comparison
    return Comparison(target, direction="max" if most else "min", item=item)


YEAR = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)")  # a year as questions and table labels write it
_PERCENT_CHANGE = re.compile(r"\b(?:percentage|percent|%)\s*(?:change|increase|decrease|growth|decline|rise|drop)\b"
                             r"|\bgrowth rate\b|增长率|增幅|降幅|变化率|变动率|百分比变化", re.IGNORECASE)
_CHANGE = re.compile(r"\b(?:change|increase|decrease|growth|decline|rise|drop)\b|变化|变动|增加了?多少|减少了?多少",
                     re.IGNORECASE)
_AVERAGE = re.compile(r"\baverage\b|\bmean\b|平均", re.IGNORECASE)
_EXPLANATION = re.compile(r"^\s*(?:why|what (?:caused|drove|led to|explains?)|explain|how (?:is|was|are|were) .* "
                          r"(?:calculated|derived|determined|measured))\b|为什么|原因", re.IGNORECASE)
_YEAR_AVERAGE = re.compile(r"(?<!\d)(?:19|20)\d\d\s+average\b", re.IGNORECASE)  # "the 2019 average X": a balance


@dataclass(frozen=True)
class Calculation:
    """A figure a question asks to be worked out from one table row: "change" (the later period's figure minus the
    earlier one's), "percent_change" (that change over the earlier figure, in %), or "average" (of the periods it
    names; "the 2019 average" of a balance is the mean of its opening and closing figures: 2019's and 2018's)."""

    kind: str


def calculation_in(question: str) -> Calculation | None:
    """The calculation a question asks for, or None. A change between two items ("the difference between A and
    B") is not one of these: a calculation reads one row across periods."""
    years = set(YEAR.findall(question))
    if _EXPLANATION.search(question):
        return None  # "Why did revenue increase?" asks for the reason, not the amount
    if _AVERAGE.search(question) and _CHANGE.search(question):
        return None  # the change of an average: two calculations, not one reading of a row
    if _PERCENT_CHANGE.search(question):
        return Calculation("percent_change")
    if _AVERAGE.search(question) and (len(years) >= 2 or _YEAR_AVERAGE.search(question)):
        return Calculation("average")
    if _CHANGE.search(question):
        return Calculation("change")
    return None


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
    comparison: Comparison | None = None  # a question a table answers by comparing its figures
    calculation: Calculation | None = None  # ... or by working out a change or an average
    figure_terms: list[set[str]] = field(default_factory=list)  # the terms each of figure_spans reads as ("120,000")
    places: set[str] = field(default_factory=set)  # the places it names ("上海"): where the fact it asks holds
    asks_from: int = 0  # where the sentence that asks begins, after the asker's situation ("I'm 40. How much ...?")

    @property
    def wants_list(self) -> bool:
        return self.expects == LIST


_MULTIPLIER = re.compile(r"\s*(万|亿|k\b|thousand\b|million\b)", re.IGNORECASE)
_CODE_SUFFIX = re.compile(r"\([A-Za-z]\)")
_TIMES = {"万": 1e4, "亿": 1e8, "k": 1e3, "thousand": 1e3, "million": 1e6}


def figures_in(text: str) -> list[tuple[float, int, int]]:
    """(value, start offset, end offset) of each figure in `text`; "20万" is 200000 and "60k" 60000."""
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
        out.append((value, m.start(), end))
    return out


# "What's", "I'm", "they're", "don't": a contraction is one word to the tokenizer ("what's" stems to "what", past
# the stop words), so it is spelled out before the question is read. A possessive's "'s" goes.
_SPELLED = {"s": "", "m": " am", "re": " are", "ve": " have", "ll": " will", "d": " would"}
_CONTRACTIONS = (
    (re.compile(r"\bcan['’]t\b", re.IGNORECASE), lambda m: "can not"),
    (re.compile(r"\bwon['’]t\b", re.IGNORECASE), lambda m: "will not"),
    (re.compile(r"n['’]t\b", re.IGNORECASE), lambda m: " not"),
    (re.compile(r"\b(what|that|it|there|here|who|where|when|how)['’]s\b", re.IGNORECASE),
     lambda m: m.group(1) + " is"),
    (re.compile(r"(?<=[A-Za-z])['’](s|m|re|ve|ll|d)\b", re.IGNORECASE), lambda m: _SPELLED[m.group(1).lower()]),
)


def spelled_out(question: str) -> str:
    for pattern, repl in _CONTRACTIONS:
        question = pattern.sub(repl, question)
    return question


# The end of a sentence (or a dash) before another: what comes before the last one tells the asker's situation.
_SENTENCE_END = re.compile(r"[.!?;](?=\s+[A-Z0-9\"“‘'(])|\s[—–]\s|\s--\s|[。！？；]")


def asking_part(question: str) -> int:
    """The offset where the question's last sentence (the one that asks) begins; 0 for a single sentence."""
    ends = [m.end() for m in _SENTENCE_END.finditer(question.rstrip(" ?？!！。."))]
    return ends[-1] if ends else 0


def analyse(question: str) -> QuestionAnalysis:
    q = spelled_out(question.strip())
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
    # "八年级": a count in Chinese numerals is a figure too (arabic_counts keeps the offsets)
    figures = [(f, start, end) for f, start, end in figures_in(arabic_counts(q))
               if not (1900 <= f <= 2100 and f == int(f))]
    spans = [(f, end) for f, _, end in figures]
    asked = _AGE.sub(r"\1 years", _HOW.sub(" ", _ASKER_KIN.sub(" ", q)))
    terms = set(question_terms(formal(_LIST_GRADE.sub(" ", asked) if expects == LIST else asked))) - FILLER
    years = set(YEAR.findall(q))
    comparison = comparison_in(q)
    return QuestionAnalysis(q, detect_language(q), terms, expects, [f for f, _ in spans], spans, subject, years,
                            comparison, None if comparison else calculation_in(q),
                            [set(tokenize(q[start:end])) & terms for _, start, end in figures], place_names(q),
                            asking_part(q))
