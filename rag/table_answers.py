"""Answers a table gives by comparing or working out its figures: which period a row is highest in, which periods
lie beyond a bound, which item of a column is largest; a row's change, percentage change or average over periods.

"In which year was Other assets larger?" is answered by no sentence of a report: the row "Other assets — 2019:
4,406; 2018: 3,997" holds the figures, and the answer (2019) is the label of the column with the larger one.
Finding the row is answer selection's job (rag.answer_select ranks it); this module only compares, and it answers
only when the comparison is well defined: the question names the row (or the table's column), at least two
cells hold figures, no two compared columns share a label, and no tie decides the answer. A calculation shows its
working with the figures as the table writes them ("-12.6 (Other: 44.1 in 2019 - 56.7 in 2018)"), so the reader
checks it against the cited row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.answer_units import AnswerUnit
from rag.questions import FILLER, YEAR, Calculation, Comparison, QuestionAnalysis
from rag.tables import cell_decimals, cell_value
from rag.text import tokenize

CANDIDATE_UNITS = 5  # the best-ranked units looked at for a row to compare
ROW_NAMED = 0.5  # at least this share of a row's own words must be the question's for the question to name it
TABLE_NAMED = 0.5  # an item comparison: at least this share of the question's subject words is in the table
MIN_ROWS, MAX_ROWS = 2, 40  # an item comparison reads a table of this many data rows

_PERIOD_LABEL = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)|\b(?:q[1-4]|quarters?|months?|years?|fiscal|fy\d*|january"
                           r"|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr"
                           r"|jun|jul|aug|sep|sept|oct|nov|dec)\b|[一二三四]季度|\d+月|\d+年", re.IGNORECASE)
_STATES_CHANGE = re.compile(r"\b(?:increase|decrease|change|grew|grow|rose|fell|decline|drop|up|down|higher|lower)"
                            r"\w*\b|增长|下降|增加|减少|变化", re.IGNORECASE)
_CHANGE_LABEL = re.compile(r"\b(?:change|increase|decrease|variance|growth)\b|变动|变化|增减", re.IGNORECASE)
_TOTAL_KEY = re.compile(r"^\s*(?:total|subtotal|sub-total|net total|sum|合计|总计|小计|共计)\b", re.IGNORECASE)
# The words that say how a comparison or calculation is asked; whatever else the question says names what is
# compared.
_COMPARISON_WORDS = set(tokenize(
    "larger largest higher highest greater greatest bigger biggest more most maximum peak smaller smallest lower "
    "lowest less least fewer fewest minimum which what year years fy fiscal period periods quarter quarters month "
    "months amount value number figure component item category segment type one respective respectively thousand "
    "thousands million millions billion billions percentage percent change increase decrease growth decline rise "
    "drop average mean difference above below under over exceed exceeded exceeds"
    " had got make made report reported record recorded show shown see between during within across compared"
    " versus vs since per each"
    " 哪 哪年 哪一年 年 年度 月 月份 季度 第 最高 最多 最大 最低 最少 最小"
    " 更高 更多 更大 更低 更少 更小 较高 较低 变化 增长 平均 多少"
)) | FILLER


@dataclass
class TableAnswer:
    """A computed answer: what it says (`answer`: a column label, a row's key, several, or a worked-out figure),
    the rows it read (each of which the answer cites), and for a calculation its working and the figures it
    states that no passage holds (the result: the checks accept it because the working is shown)."""

    answer: str
    rows: list[AnswerUnit]
    comparison: Comparison | None = None
    calculation: Calculation | None = None
    working: str = ""
    figures: set[str] = field(default_factory=set)
    names: list[str] = field(default_factory=list)  # when rows are what the answer names: each row's name


def table_answer(q: QuestionAnalysis, ranked, table_rows, *, rows: list[AnswerUnit] = (),
                 passage_terms=lambda n: set(), answerable: bool = False) -> TableAnswer | None:
    """The comparison or calculation `q` asks for, computed from a table row: the best-ranked units first (the
    first CANDIDATE_UNITS of `ranked`, rag.answer_select.ScoredUnit), then every other row of the passages
    (`rows`) that the question names, the most fully named first ("Revenue" for "Northwind's revenue", though
    answer selection ranked the ratio table's rows that mention Northwind above it). An item comparison reads the
    other rows of its table too (`table_rows(unit)`).

    A word the question says of what is compared that the row's passage lacks (`passage_terms(n)`) may be a near
    miss: with a row named only in part ("Interest expense" for "In which year were marketing expenses highest?")
    the row is another item; with a row named in full ("R&D" for "R&D headcount", or for "R&D spending") the
    abstention model decides (`answerable`, its decision on the best unit). None when the question asks for
    neither or no row answers it well-defined, and for a calculation when the best unit is a sentence stating a
    change that answer selection judged to answer (`answerable`)."""
    if q.comparison is None and q.calculation is None:
        return None
    if (q.calculation is not None and answerable and ranked and ranked[0].unit.kind != "row"
            and _STATES_CHANGE.search(ranked[0].unit.text)):
        return None  # the text states the change itself ("The $29.3 million increase in ...")
    first = [s.unit for s in ranked[:CANDIDATE_UNITS] if s.unit.row is not None]
    seen = {(u.n, u.index) for u in first}
    named = sorted((u for u in rows if u.row is not None and (u.n, u.index) not in seen and _names_row(u, q)),
                   key=lambda u: (-named_share(u, q), u.n, u.index))
    if q.comparison is not None and q.comparison.target == "row":
        # "Which letter grade ...?" names a table's column, not a row: each other table of the passages is read.
        tables = {(u.n, u.block) for u in first + named}
        for u in rows:
            if u.row is not None and (u.n, u.block) not in tables:
                tables.add((u.n, u.block))
                named.append(u)
    # The kind of item asked for ("which business segment") is what the answer is, not a word its table must say:
    # a table's columns "Cubic Transportation Systems | Cubic Global Defense" never say "segment".
    subject = _subject_terms(q) - set(tokenize(q.comparison.item if q.comparison else ""))
    for unit in first + named:
        share = named_share(unit, q)
        if share > 0 and subject - passage_terms(unit.n) and (share < 1 or not answerable):
            continue
        found = (_calculate(unit, q, q.calculation) if q.calculation is not None and _names_row(unit, q)
                 else _compare(unit, q, table_rows) if q.comparison is not None else None)
        if found is not None:
            return found
    return None


def _compare(unit: AnswerUnit, q: QuestionAnalysis, table_rows) -> TableAnswer | None:
    c = q.comparison
    if c.target == "column" and _names_row(unit, q):
        found = _across_columns(unit, q, c)
        if found is not None:
            return found
    if c.target == "row" and _names_row(unit, q):  # a table whose columns are the items (segments)
        found = _across_item_columns(unit, c)
        if found is not None:
            return found
    if c.target == "row" or not _period_columns(unit, q):  # periods may be the rows: "Aug 2007 - Jan 2011"
        return _across_rows(unit, table_rows(unit), q, c)
    return None


def _subject_terms(q: QuestionAnalysis) -> set[str]:
    """The question's words that name what is compared (not how, not which period)."""
    return {t for t in q.terms - _COMPARISON_WORDS if not re.fullmatch(r"[\d.,]+", t)}


def named_share(unit: AnswerUnit, q: QuestionAnalysis) -> float:
    """The share of the words of the row's key that the question says."""
    key = {t for t in tokenize(unit.row_key.split(": ")[-1]) if t not in _COMPARISON_WORDS
           and not re.fullmatch(r"[\d.,]+", t)}  # "第6月", "Q4 2019": periods, not names
    return len(key & q.terms) / len(key) if key else 0.0


def _names_row(unit: AnswerUnit, q: QuestionAnalysis) -> bool:
    """The question names this row: most of the words of its key are the question's ("Other assets")."""
    return named_share(unit, q) >= ROW_NAMED


def _period_columns(unit: AnswerUnit, q: QuestionAnalysis) -> list[tuple[str, float]]:
    """(label, figure) of the row's cells under a period label (a year, a quarter, a month), restricted to the
    years the question names when it names two or more; empty when a label repeats (a table giving "2019 $" and
    "2019 %" side by side: which one is meant is not clear)."""
    fields = unit.row[1]
    key_label = unit.row_key_label
    cells = [(label, cell_value(value)) for label, value in fields if label and label != key_label]
    cells = [(label, v) for label, v in cells if v is not None and _PERIOD_LABEL.search(label)]
    if q.comparison is not None and q.comparison.item == "year":
        cells = [(label, v) for label, v in cells if YEAR.search(label)]
    if len(q.years) >= 2:
        cells = [(label, v) for label, v in cells if any(y in label for y in q.years)]
    labels = [label for label, _ in cells]
    return cells if len(set(labels)) == len(labels) else []


def _across_columns(unit: AnswerUnit, q: QuestionAnalysis, c: Comparison) -> TableAnswer | None:
    cells = _period_columns(unit, q)
    if len(cells) < 2:
        return None
    picked = _pick(cells, c)
    return TableAnswer(", ".join(picked), [unit], comparison=c) if picked else None


def _across_item_columns(unit: AnswerUnit, c: Comparison) -> TableAnswer | None:
    """Which column of a named row is largest, when the columns are items rather than periods ("Net balances at
    September 30, 2018 — Transportation: 49,786; Mission Solutions: 138,127; Global Defense: 145,713; Total: ...")."""
    if _TOTAL_KEY.match(unit.row_key.split(": ")[-1]):
        return None  # the total of the items: they are the rows above it
    fields = unit.row[1]
    key_label = unit.row_key_label
    cells = [(label, cell_value(value)) for label, value in fields if label and label != key_label
             and not _TOTAL_KEY.match(label)]
    cells = [(label, v) for label, v in cells if v is not None]
    labels = [label for label, _ in cells]
    if len(cells) < 2 or any(_PERIOD_LABEL.search(label) for label in labels) or len(set(labels)) < len(labels):
        return None
    picked = _pick(cells, c)
    return TableAnswer(", ".join(picked), [unit], comparison=c) if picked else None


def _across_rows(unit: AnswerUnit, rows: list[AnswerUnit], q: QuestionAnalysis, c: Comparison
                 ) -> TableAnswer | None:
    """Which row's figure in the asked column is largest (smallest, beyond the bound). The asked column is the one
    whose label the question names (a word of it, or its year); with one figure column, that one. The question
    must name the table too (most of its subject words are in the caption, heading or rows), and total rows are
    not items."""
    if not MIN_ROWS <= len(rows) <= MAX_ROWS:
        return None
    subject = _subject_terms(q)
    table_words = set(tokenize(unit.context)).union(*(tokenize(r.text) for r in rows))
    if not subject or len(subject & table_words) / len(subject) < TABLE_NAMED:
        return None
    fields = unit.row[1]
    key_label = unit.row_key_label
    labels = [label for label, _ in fields if label != key_label]
    numeric = [label for label in labels if any(cell_value(v) is not None for r in rows for lb, v in r.row[1]
                                                if lb == label)]
    named = [label for label in numeric if (set(tokenize(label)) & subject)
             or any(y in label for y in q.years)]
    if len(named) > 1 and q.years:
        named = [label for label in named if any(y in label for y in q.years)]
    if len(named) > 1:  # the column the question names most fully ("买入份额" over "基金净值（元）" for 买入的份额)
        share = {label: len(set(tokenize(label)) & subject) / len(set(tokenize(label))) for label in named}
        best = max(share.values())
        named = [label for label in named if share[label] == best]
    column = named[0] if len(named) == 1 else (numeric[0] if len(numeric) == 1 else None)
    if column is None:
        return None
    # "Which letter grade ...?" names the column that names the items: the answer is its cell, not the row's key.
    item_label = next((label for label in labels if label not in numeric and (words := set(tokenize(label)))
                       and words <= q.terms), None)
    # "Which regions ...?" asks for items of a kind: the table's key column, item column or caption says so.
    kind = set(tokenize(c.item)) - _COMPARISON_WORDS
    if kind and not kind & set(tokenize(f"{key_label} {item_label or ''} {unit.context}")):
        return None
    cells, row_of = [], {}
    for r in rows:
        key = r.row_key
        if not key or _TOTAL_KEY.match(key.split(": ")[-1]):
            continue
        if c.target == "column" and not _PERIOD_LABEL.search(key):
            return None  # a period was asked for, and this table's rows are not periods
        value = next((cell_value(v) for lb, v in r.row[1] if lb == column), None)
        name = next((v for lb, v in r.row[1] if lb == item_label), "") if item_label else key.split(": ")[-1]
        if value is not None and name:
            cells.append((name, value))
            row_of.setdefault(name, r)
    if len(cells) < MIN_ROWS or len(row_of) < len(cells):
        return None
    picked = _pick(cells, c)
    if not picked:
        return None
    names = [name for name, _ in cells if name in picked]
    return TableAnswer(", ".join(names), [row_of[name] for name in names], comparison=c, names=names)


def _pick(cells: list[tuple[str, float]], c: Comparison) -> list[str]:
    """The label of the largest (smallest) figure, or the labels beyond the bound in table order; none on a tie,
    or when none or all pass the bound (all passing: the bound is likely in another unit than the table's)."""
    if c.bound is not None:
        op, limit = c.bound
        passed = [label for label, v in cells if (v < limit if op == "<" else v > limit)]
        return passed if len(passed) < len(cells) else []
    if all(v < 0 for _, v in cells):
        # Every figure in brackets (cash used, a loss, a movement): "the larger loss" is the larger amount.
        cells = [(label, -v) for label, v in cells]
    values = sorted(v for _, v in cells)
    best = values[-1] if c.direction == "max" else values[0]
    winners = [label for label, v in cells if v == best]
    return winners if len(winners) == 1 else []


def _year_of(label: str) -> int | None:
    """The year a column label names when it names exactly one ("2019", "Years ended 2019"; not "2019 over 2018")."""
    years = set(YEAR.findall(label))
    return int(years.pop()) if len(years) == 1 else None


def _by_year(unit: AnswerUnit) -> dict[int, tuple[str, float]]:
    """year -> (the cell as written, its figure), for the row's columns labelled with exactly one year; empty when
    two columns name the same year ("2019 $" and "2019 %")."""
    fields = unit.row[1]
    key_label = unit.row_key_label
    out: dict[int, tuple[str, float]] = {}
    for label, value in fields:
        year = _year_of(label)
        v = cell_value(value)
        if label == key_label or year is None or v is None:
            continue
        if year in out:
            return {}
        out[year] = (value.strip(), v)
    return out


def _calculate(unit: AnswerUnit, q: QuestionAnalysis, calc: Calculation) -> TableAnswer | None:
    """The change, percentage change or average of one row over the periods the question names (without a year
    named, a change reads a row of exactly two years)."""
    cells = _by_year(unit)
    asked = sorted(int(y) for y in q.years)
    if calc.kind == "average":
        if len(asked) >= 2:
            years = list(range(asked[0], asked[-1] + 1))
        elif asked:  # "the 2019 average" of a balance: its opening (2018's closing) and closing figures
            years = [asked[0], asked[0] - 1]
        else:
            return None
        if any(y not in cells for y in years):
            return None
        years.sort(reverse=True)
        working = f"({' + '.join(f'{cells[y][0]} in {y}' for y in years)}) / {len(years)}"
        text = computed = _figure(sum(cells[y][1] for y in years) / len(years))
    else:
        if len(asked) >= 2:
            earlier, later = asked[0], asked[-1]
        elif not asked and len(cells) == 2:
            earlier, later = sorted(cells)
        else:
            return None
        if earlier not in cells or later not in cells:
            return None
        (new_text, new), (old_text, old) = cells[later], cells[earlier]
        if (stated := _stated_change(unit, calc, len(cells))) is not None:
            return stated
        difference = f"{new_text} in {later} - {old_text} in {earlier}"
        if calc.kind == "change":
            result = new - old
            working, text = difference, _figure(result)
        else:
            if old == 0:
                return None
            result = (new - old) / abs(old) * 100
            working, text = f"({difference}) / {old_text}", _figure(result) + "%"
        computed = text
        if (shown := _agreeing_cell(unit, calc, result)) is not None:
            # The report's own figure, as it rounds it, checked by the working: "191% (Modules: ... = 190.86%)".
            working, text = f"{working} = {computed}", shown
    key = unit.row_key.split(": ")[-1]
    # The result and, for an average, the count it divides by are the working's own figures, not the table's.
    figures = {computed.rstrip("%").replace(",", "")} | ({str(len(years))} if calc.kind == "average" else set())
    return TableAnswer(text, [unit], calculation=calc, working=f"{key}: {working}", figures=figures)


def _agreeing_cell(unit: AnswerUnit, calc: Calculation, result: float) -> str | None:
    """A cell of the row outside its period columns that states the worked-out change as the report rounds it
    ("191%" for 190.86%; "$ 958,115"): a row of three or more periods keeps its change columns beside the years
    ("2019 over 2018: $ 958,115; 191%"), under labels too loose to pick them by."""
    lead, fields = unit.row
    for label, value in fields if lead else fields[1:]:  # without a lead, the first cell is the row's key
        v = cell_value(value)
        if v is None or _year_of(label) is not None:
            continue
        if ("%" in label or "%" in value) != (calc.kind == "percent_change"):
            continue
        if round(result, cell_decimals(value)) == v and v != 0:
            return value.strip()
    return None


def _stated_change(unit: AnswerUnit, calc: Calculation, periods: int) -> TableAnswer | None:
    """The row's own change column ("$ CHANGE: 86; % CHANGE: 3.6%"), when the row compares two periods only: the
    report's figure, as it rounds it. A "%" in the label or the cell says which of the two columns is which."""
    if periods != 2:
        return None
    for label, value in unit.row[1]:
        if not _CHANGE_LABEL.search(label) or cell_value(value) is None:
            continue
        percent = "%" in label or "%" in value
        if percent == (calc.kind == "percent_change"):
            shown = value.strip()
            return TableAnswer(shown, [unit], calculation=calc, working=f"{unit.row_key.split(': ')[-1]}: {label}")
    return None


def _figure(x: float) -> str:
    """A worked-out figure as a report writes it: two decimals at most, thousands separated ("3,680", "-12.6")."""
    s = f"{round(x, 2):,.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s
