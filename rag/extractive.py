"""The extractive backend: answers and summaries made of units copied from the passages, with citations.

It needs no generative model, so it is always available: it is the fallback whenever a generator fails or
writes something the checks reject, and a backend of its own (the CPU default: see README, Answers).

Answers: the unit answer selection ranked first (rag.answer_select): one sentence, list item or table row (with
its header), cited. A list, steps or comparison question, or a unit that introduces a list ("... if:"), takes the
neighbouring items of the same list too, up to LIST_WORDS. A table row the question does not single out gives way
to the asked column of every row of its table, keyed by each row's first field (`unpicked_row`). A comparison or
calculation computed from table rows (rag.table_answers) answers with its result and the row(s) or working it read.

Summaries: centroid selection (sentences closest to the mean meaning of the text, earlier sentences slightly
preferred, near-duplicates penalized MMR-style) within a word budget.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import rjieba

from rag.answer_select import NUMERIC_TERM
from rag.answer_units import AnswerUnit
from rag.grounding import Evidence, Passage, content_terms
from rag.questions import DEFINITION
from rag.text import tokenize

MMR_LAMBDA = 0.7
POSITION_WEIGHT = 0.3  # summaries: earlier sentences preferred by this much (in z-units of centrality) at most
FILL_MARGIN = 1.5  # summaries: no filler sentence this many z-units less central than the best one
MIN_SUMMARY_TERMS = 4  # a summary sentence has at least this many content words
# Summaries, fitted on the odd rows of PubMedQA (bench/results/summaries_pubmedqa.json; README, Summaries): a
# sentence dense with figures is a result's detail rather than the gist ("cIMT 0.66+/-0.17 cm vs 0.65"), and the
# opening of a text says what it is about (as a title would): without both the summary lost to the first
# sentences (ROUGE-L 19.6 vs 21.0), with both it wins (22.5).
FIGURE_WEIGHT = 5.0  # z-units taken per unit share of the sentence's words that hold a figure
OPENING_WEIGHT = 1.0  # z-units of closeness to the text's first two candidate sentences (one document only)
PART_MIN_WORDS = 12  # a part's representative sentence is chosen within max(this, budget / parts) words
PART_CHOICES = 3  # a part whose best sentence no longer fits the budget is represented by its next best
LIST_WORDS = 100  # a list answer stops adding items at this many words
SIBLING_MARGIN = 0.3  # selector logits: closer than this, two sibling rows both answer
SIBLING_WORDS = 45
KEYED_ROWS = (3, 12)  # a table the question does not pick a row of is listed by key within these row counts

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")


@dataclass
class Scored:
    n: int  # passage number
    index: int  # sentence position in its passage
    text: str
    score: float


@dataclass
class Extract:
    text: str
    picks: list[Scored]


def count_words(text: str) -> int:
    """Words as a reader counts them: Latin words, and jieba words inside Chinese runs."""
    cjk = _CJK_RUN.findall(text)
    latin = _LATIN_WORD.findall(_CJK_RUN.sub(" ", text))
    return len(latin) + sum(len(rjieba.cut(run)) for run in cjk)


def cite(sentence: str, n: int) -> str:
    """`sentence [n].`: the marker goes before the final punctuation, as a reader expects it."""
    m = re.search(r"[.!?。！？；]+$", sentence)  # after a closing quote the marker simply follows
    sep = "" if _CJK_RUN.search(sentence[-3:]) or sentence[-1:] in "）」』》】" else " "
    if m:
        return f"{sentence[:m.start()]}{sep}[{n}]{sentence[m.start():]}"
    return f"{sentence}{sep}[{n}]"


def join_sentences(parts: list[str]) -> str:
    out = ""
    for p in parts:
        # Chinese sentences run on without a space; Latin ones need one.
        out += p if not out or _CJK_RUN.match(p[:1]) else " " + p
    return out


def extractive_answer(selection, evidence: Evidence) -> Extract:
    """The answer of the best unit of `selection` (rag.answer_select.Selection), cited, in reading order."""
    if not selection.ranked:
        return Extract("", [])
    best = selection.ranked[0]
    if selection.computed is not None:
        return _computed_answer(selection.computed, best.score, selection.question.language)
    picks = [best.unit]
    if shows_list(selection.question, best.unit):
        picks = _with_neighbours(best.unit, evidence, selection.question.terms,
                                 with_rows=lists_rows(selection.question, best.unit))
    elif (keyed := _rows_by_key(best, selection.question, evidence)) is not None:
        head, rows = keyed
        scored = [Scored(u.n, u.index, u.text, best.score) for u in rows]
        return Extract("\n".join([cite(head, best.unit.n), *(cite(u.text, u.n) for u in rows)]), scored)
    elif len(selection.ranked) > 1 and _close_sibling(best, selection.ranked[1]):
        picks = sorted([best.unit, selection.ranked[1].unit], key=lambda u: u.index)
    scored = [Scored(u.n, u.index, u.text, best.score) for u in picks]
    if len(picks) > 1 and all(u.kind in ("row", "item") for u in picks[1:]):
        # A list reads as a list: its rows and items one per line, each cited.
        return Extract("\n".join(cite(u.text, u.n) for u in picks), scored)
    return Extract(join_sentences([cite(u.text, u.n) for u in picks]), scored)


def _computed_answer(computed, score: float, language: str) -> Extract:
    """"2019 (Other assets — 2019: 4,406; 2018: 3,997) [1]": the result first, then the row that shows it (or the
    working of a calculation), cited; an item comparison names each item it picked with its own row."""
    rows = computed.rows
    names = computed.names or [computed.answer]
    shown = [f"{name}（{computed.working or r.text}）" if language == "zh" else f"{name} ({computed.working or r.text})"
             for name, r in zip(names, rows)]
    scored = [Scored(r.n, r.index, r.text, score) for r in rows]
    # Several rows named (the items beyond a bound) read as a list, one per line, each cited.
    return Extract(("\n" if len(shown) > 1 else " ").join(cite(t, r.n) for t, r in zip(shown, rows)), scored)


def _close_sibling(best, second) -> bool:
    """Two rows of one table (or items of one list) the selector can hardly tell apart ("adults": 18-60 years
    and over 60) both answer: the reader sees the two facts side by side rather than a coin toss."""
    a, b = best.unit, second.unit
    return (a.n == b.n and a.block == b.block and a.kind == b.kind and a.kind in ("row", "item")
            and 0 <= best.score - second.score < SIBLING_MARGIN
            and count_words(a.text) + count_words(b.text) <= SIBLING_WORDS)


def unpicked_row(best, question, evidence: Evidence) -> bool:
    """The best unit is a table row that the question does not single out, and the question names a column: no
    word of the question is in that row and missing from a sibling row, and no figure of the question is the
    row's. "How much ibuprofen can a child take?" over a dosing table by weight has no row of its own: one row's
    dose, cited, would read as the answer for every child."""
    return _unpicked_table(best, question, evidence) is not None


def _unpicked_table(best, question, evidence: Evidence) -> tuple[list[AnswerUnit], set[str]] | None:
    """(the rows of the best unit's table, the asked column labels) when the question picks none of the rows
    (`unpicked_row`), else None."""
    unit = best.unit
    if unit.row is None or (question.figure_spans and (best.features.get("in_range")
                                                       or not best.features.get("figure_missing"))):
        return None
    rows = table_rows(unit, evidence)
    shared = set.intersection(*(set(tokenize(u.text)) for u in rows))
    if question.terms & (set(tokenize(unit.text)) - shared):
        return None  # a word of the question picks this row
    if _spelled_numbers(question.text) & set(re.findall(r"\d+", unit.row_key)):
        return None  # "a third grader" picks the row of grade 3
    asked = _asked_columns(unit, question)
    return (rows, asked) if asked else None


_SPELLED = {w: str(i) for i, ws in enumerate((
    "", "one first", "two second", "three third", "four fourth", "five fifth", "six sixth", "seven seventh",
    "eight eighth", "nine ninth", "ten tenth", "eleven eleventh", "twelve twelfth"), 0) for w in ws.split()}


def _spelled_numbers(text: str) -> set[str]:
    """The figures a question spells out ("third", "nine"), as digits."""
    return {_SPELLED[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _SPELLED}


def _asked_columns(unit: AnswerUnit, question) -> set[str]:
    """The labels of the row's columns that the question names by a word, its key column aside (a year names the
    period asked about, not what is asked: "2019" heads every column of a financial table)."""
    key = unit.row_key_label
    fields = unit.row[1]
    words = {t for t in question.terms if not NUMERIC_TERM.fullmatch(t)}
    return {label for label, _ in fields if label and label != key and set(tokenize(label)) & words}


def same_table(unit: AnswerUnit, other: AnswerUnit) -> bool:
    """Rows with the same columns: one table, or its continuation in another passage of the document."""
    return other.kind == "row" and other.row is not None and unit.row is not None \
        and [label for label, _ in other.row[1]] == [label for label, _ in unit.row[1]]


def _rows_by_key(best, question, evidence: Evidence) -> tuple[str, list[AnswerUnit]] | None:
    """For a row the question does not pick (`unpicked_row`): a line naming the asked columns and the key ("Ibuprofen
    dose (mg), by Child's weight:"), then every row of the table as its key and those columns' values, so each
    reader finds their own case. None when the question picks the row, names no column, or the table is too short
    or too long to list."""
    unpicked = _unpicked_table(best, question, evidence)
    if unpicked is None or not KEYED_ROWS[0] <= len(unpicked[0]) <= KEYED_ROWS[1]:
        return None
    rows, asked = unpicked
    lead, fields = best.unit.row
    names = list(dict.fromkeys(label for label, _ in fields if label in asked))
    head = "; ".join(names) + ("" if lead else f", by {fields[0][0]}") + ":"
    out = []
    for u in rows:
        values = [value for label, value in u.row[1] if label in asked]
        if values:
            key = u.row_key
            out.append(dataclasses.replace(u, text=f"{key}: {'; '.join(values)}"))
    return (head, out) if len(out) >= KEYED_ROWS[0] else None


def table_rows(unit: AnswerUnit, evidence: Evidence) -> list[AnswerUnit]:
    """The rows of the unit's table in every retrieved passage (the chunker splits a long table into passages that
    each repeat its header), in document order, once each: rows of the same document with the same columns."""
    doc = evidence.passages[unit.n].doc_id

    def order(n: int) -> tuple[int, int]:
        return (evidence.passages[n].ordinal or 0, n)

    rows, seen = [], set()
    for n in sorted((n for n, p in evidence.passages.items() if p.doc_id == doc), key=order):
        for u in evidence.units[n].units:
            if same_table(unit, u) and u.text not in seen and (n != unit.n or u.block == unit.block):
                seen.add(u.text)
                rows.append(u)
    return rows


def _with_neighbours(best: AnswerUnit, evidence: Evidence, question_terms: set[str],
                     with_rows: bool = False) -> list[AnswerUnit]:
    """The unit, plus the items or rows it introduces (a lead-in ending in ':') or the other items of its list
    (with `with_rows`, of a row: the rows of its table), in reading order (_rows_picked: of a table's rows, those
    with the value the question asks for). Past LIST_WORDS each item is cut to its label ("Content: ..." ->
    "Content"), so a long list still shows every member."""
    units = evidence.units[best.n].units
    if best.text.rstrip().endswith((":", "：")):
        lead = best.text.rstrip(" :：")
        members = [u for u in units[best.index + 1:] if _listed(u) and (
            u.block == best.block or lead in u.context or (u.block == best.block + 1 and u.kind in ("item", "row")))]
        if not members and not any(u.answers for u in units[best.index + 1:]):
            members = _continued(best, evidence)
    elif best.kind == "item":
        members = list_items(best, evidence)
    elif with_rows:  # "What are the six levels?" answered by a row: its table's rows are the list
        members = table_rows(best, evidence)
    else:
        return [best]
    members = _rows_picked(question_terms, [u for u in members if u is not best])
    if count_words(best.text) + sum(count_words(u.text) for u in members) > LIST_WORDS:
        members = [_labelled(u) for u in members]
    out, words = [best], count_words(best.text)
    # Closest to the best unit first, so a list too long even as labels is cut around what answered; members
    # continued in the next passage (_continued) follow the unit, in their order.
    place = lambda u: (u.n != best.n, u.index if u.n != best.n else abs(u.index - best.index))  # noqa: E731
    for u in sorted(members, key=place):
        size = count_words(u.text)
        if words + size > LIST_WORDS:
            break
        out.append(u)
        words += size
    if best.kind in ("item", "row"):  # members may come from the chunks before the best's: document order
        return sorted(out, key=lambda u: (evidence.passages[u.n].ordinal or 0, u.index))
    return sorted(out, key=lambda u: (u.n != best.n, u.index))


def shows_list(question, unit: AnswerUnit) -> bool:
    """Whether the answer is the unit's list: the question asks for a list, the unit leads one in, or the question
    asks what X is and X is the item's own heading or lead-in ("What is the rule of 15?" -> its steps; not a
    heading further up the path, which the list only sits under)."""
    if question.wants_list or unit.text.rstrip().endswith((":", "：")):
        return True
    return question.expects == DEFINITION and unit.kind == "item" and bool(question.subject) \
        and question.subject <= set(tokenize(unit.context.split(" > ")[-1]))


def lists_rows(question, unit: AnswerUnit) -> bool:
    """A list question answered by a table row whose key column it names ("What are the steps to return to sport?"
    over a table keyed by "Step", "the six levels" by "Level") asks for the table's rows, unless a figure of the
    question picks one (the row whose range holds it answers alone)."""
    if not question.wants_list or unit.row is None or unit.row[0] or question.figure_spans:
        return False
    label = set(tokenize(unit.row_key_label))
    return bool(label) and label <= question.terms


def list_items(item: AnswerUnit, evidence: Evidence) -> list[AnswerUnit]:
    """The items of the item's list in document order, once each: its block, continued into the document's
    neighbouring chunks among the passages while the list runs to the edge of one and the next one under the
    same heading starts (or the previous one ends) with items: the chunker cuts a long list into passages, and
    overlapping chunks repeat a few items."""
    own = evidence.passages[item.n]
    ordinal = own.ordinal or 0
    near = {p.ordinal or 0: n for n, p in evidence.passages.items()
            if p.doc_id == own.doc_id and p.heading == own.heading}

    def block_of(n: int, unit: AnswerUnit) -> list[AnswerUnit]:
        return [u for u in evidence.units[n].units if u.block == unit.block and u.kind == "item" and _listed(u)]

    def edge(n: int, last: bool) -> AnswerUnit | None:
        """The passage's last (or first) answering unit when it is a list item."""
        units = [u for u in evidence.units[n].units if _listed(u)]
        u = (units[-1] if last else units[0]) if units else None
        return u if u is not None and u.kind == "item" else None

    out = block_of(item.n, item)
    for step in (-1, 1):
        k, block = ordinal, out
        while (step < 0 and block and edge(near[k], last=False) is block[0]) \
                or (step > 0 and block and edge(near[k], last=True) is block[-1]):
            if k + step not in near or (u := edge(near[k + step], last=step < 0)) is None:
                break
            k += step
            block = block_of(near[k], u)
            out = block + out if step < 0 else out + block
    kept = [item]  # an overlap repeats an item, or the tail of one cut at a sentence: once, the item's own first
    for u in out:
        if not any(u.text in v.text for v in kept):
            kept.append(u)
    return sorted(kept, key=lambda u: (evidence.passages[u.n].ordinal or 0, u.index))


def _listed(u: AnswerUnit) -> bool:
    """Whether a member of a list shows in the list's answer: an item that asks something ("F - Face: ... Does
    one side of the face droop?") answers nothing alone but is one of the list's members."""
    return u.answers or u.text.rstrip().endswith(("?", "？"))


def _rows_picked(question_terms: set[str], members: list[AnswerUnit]) -> list[AnswerUnit]:
    """The rows among `members` with a cell the question says in full in a column it names ("High" of "rated as
    having high utility"), when some rows have one and others do not: the value the question asks for. All of
    them otherwise, or when they are not rows."""
    if len(members) < 2 or any(u.kind != "row" or u.row is None for u in members):
        return members

    def says(u: AnswerUnit) -> bool:
        # The value and its column: "rated as having high utility" picks the rows whose "Rated utility" is
        # "High"; "the steps to return to sport" names a cell of the last step, not a column to filter by.
        return any(cell and cell <= question_terms and set(tokenize(label)) & question_terms
                   for label, value in u.row[1] for cell in [set(tokenize(value))])

    picked = [u for u in members if says(u)]
    return picked if 0 < len(picked) < len(members) else members


def _continued(lead: AnswerUnit, evidence: Evidence) -> list[AnswerUnit]:
    """The items or rows a lead-in ending its passage introduces, when the document's next chunk is among the
    passages read: the first list or table there (a chunk boundary fell between "... rated their usefulness:"
    and the table)."""
    own = evidence.passages[lead.n]
    if own.ordinal is None:
        return []
    for pu in evidence.units.values():
        if pu.passage.doc_id == own.doc_id and pu.passage.ordinal == own.ordinal + 1:
            first = next((u for u in pu.units if u.answers), None)
            if first is None or first.kind not in ("item", "row"):
                return []
            return [u for u in pu.units if u.block == first.block and u.answers and u.kind == first.kind]
    return []


_LABEL_END = re.compile(r"\s*[:：;；]")
_LABEL_DASH = re.compile(r"\s[—–-]\s")


_NAMING = re.compile(r"[A-Za-z]{2}|[\u4e00-\u9fff]")  # a word, not only figures and codes


def _labelled(u: AnswerUnit) -> AnswerUnit:
    """The item's label: what precedes its first ':' (else its first ' — '; "B - Balance: sudden loss of balance"
    -> "B - Balance"), a row's first cell, when that is short."""
    m = _LABEL_END.search(u.text)
    if m is None or count_words(u.text[:m.start()]) > 8:
        m = _LABEL_DASH.search(u.text) or m
    head = u.text[:m.start()] if m else u.text
    if u.kind == "row" and u.row is not None and any(u.row):  # a row's label is its key (AnswerUnit.row_key)
        head = u.row_key
        lead, fields = u.row
        if not lead and len(fields) > 1 and not _NAMING.search(head):
            # a key that is a number or a code names nothing alone: "Step 2A: Light aerobic exercise", not "2A"
            head = f"{fields[0][0]} {head}: {fields[1][1]}"
    elif u.kind == "row" and ": " in head:
        head = head.split(": ", 1)[1]
    if not m or count_words(head) > 8:
        return u
    return dataclasses.replace(u, text=head.strip())


def summary_parts(passages: list[Passage]) -> list[str]:
    """The part of the text each passage belongs to, what a summary should cover: its document when there are
    several, else its top-level section (the first element of the chunk's heading path; "" before the first
    heading). One part means the text has no structure to follow."""
    if len({p.doc_id for p in passages}) > 1:
        return [p.doc_id for p in passages]
    return [p.heading.split(" > ")[0] if p.heading else "" for p in passages]


def extractive_summary(passages: list[Passage], *, max_words: int, style: str = "brief",
                       evidence: Evidence | None = None, embedder=None, query: str | None = None) -> Extract:
    """Centroid sentence selection within `max_words`, in document order, each sentence cited.

    With a text of several parts (sections of one document, or several documents: see
    `summary_parts`), map-reduce over the parts: each part's most representative sentence (closest to the part's
    own centroid, short enough for its share of the budget), the parts taken by weight (their size and
    closeness to the whole) until the budget is spent, then the best remaining sentences (MMR) fill what is left.
    A sentence's worth: its centrality, plus a lead prior (POSITION_WEIGHT) and, for one document, its closeness
    to the opening (OPENING_WEIGHT), less its share of figures (FIGURE_WEIGHT).
    """
    evidence = evidence or Evidence(passages, embedder)
    cands = _summary_candidates(evidence)
    if not cands:
        return Extract("", [])
    vecs = _candidate_vectors(evidence, cands)
    centroid = _unit(vecs.mean(axis=0))
    relevance = _standardized(vecs @ centroid)
    if query and evidence.embedder is not None:
        relevance = 0.5 * relevance + 0.5 * _standardized(vecs @ evidence.text_vector(query))
    sizes = np.array([count_words(c.text) for c in cands])
    part_of = dict(zip((p.n for p in passages), summary_parts(passages)))
    parts = [part_of.get(c.n, "") for c in cands]
    chosen: list[int] = []
    if len(set(parts)) > 1:
        chosen = _representatives(cands, vecs, parts, sizes, centroid, max_words)
    relevance = relevance + POSITION_WEIGHT * np.array([1.0 / (1.0 + k / 10.0) for k in range(len(cands))])
    relevance = relevance - FIGURE_WEIGHT * np.array([_figure_share(c.text) for c in cands])
    if len(cands) > 2 and len({p.doc_id for p in passages}) == 1:
        relevance = relevance + OPENING_WEIGHT * _standardized(vecs @ _unit(vecs[:2].mean(axis=0)))
    chosen = _fill(cands, vecs, relevance, sizes, chosen, max_words)
    for i in chosen:
        cands[i].score = float(relevance[i])
    picks = sorted((cands[i] for i in chosen), key=lambda s: (s.n, s.index))
    lines = [cite(p.text, p.n) for p in picks]
    text = "\n".join(f"- {line}" for line in lines) if style == "bullets" else join_sentences(lines)
    return Extract(text, picks)


def _summary_candidates(evidence: Evidence) -> list[Scored]:
    cands: list[Scored] = []
    seen: set[str] = set()
    for n, pu in evidence.units.items():
        for i, unit in enumerate(pu.units):
            key = " ".join(sorted(pu.terms[i]))
            # Overlapping chunks repeat sentences; fragments, questions, table rows and "...:" lead-ins
            # (whose list would not follow) make poor summary sentences.
            text = unit.text.rstrip()
            if (key in seen or len(pu.terms[i]) < MIN_SUMMARY_TERMS or not unit.answers or unit.kind == "row"
                    or text.endswith((":", "："))):
                continue
            seen.add(key)
            cands.append(Scored(n, i, unit.text, 0.0))
    return cands


def _representatives(cands: list[Scored], vecs: np.ndarray, parts: list[str], sizes: np.ndarray,
                     centroid: np.ndarray, max_words: int) -> list[int]:
    """Map: each part's sentences ranked by how well they represent it; reduce: the parts by weight while the
    budget lasts, each with its best sentence that still fits (of its PART_CHOICES best), so a long document's
    summary reaches its main sections instead of its opening."""
    members: dict[str, list[int]] = {}
    for i, p in enumerate(parts):
        members.setdefault(p, []).append(i)
    share = max(PART_MIN_WORDS, max_words // len(members))
    ranked: dict[str, list[int]] = {}
    weight: dict[str, float] = {}
    for p, idx in members.items():
        own = _unit(vecs[idx].mean(axis=0))
        fit = _standardized(vecs[idx] @ own) + 0.5 * _standardized(vecs[idx] @ centroid)
        # Within its share of the budget when the part has such a sentence; a longer one costs its excess.
        over = np.maximum(0, sizes[idx] - share) / share
        ranked[p] = [idx[j] for j in np.argsort(-(fit - over), kind="stable")[:PART_CHOICES]]
        weight[p] = float(np.log1p(sizes[idx].sum())) * (1.0 + float(own @ centroid))
    chosen: list[int] = []
    words = 0
    for p in sorted(ranked, key=lambda p: -weight[p]):
        pick = next((i for i in ranked[p] if words + sizes[i] <= max_words), None)
        if pick is not None:
            chosen.append(pick)
            words += int(sizes[pick])
    return chosen


def _fill(cands: list[Scored], vecs: np.ndarray, relevance: np.ndarray, sizes: np.ndarray, chosen: list[int],
          max_words: int) -> list[int]:
    """MMR over the rest while sentences fit the budget. A sentence far less central than the best one does not
    pad the summary ("The mean age was 62 years.")."""
    chosen = list(chosen)
    words = int(sum(sizes[i] for i in chosen))
    floor = float(relevance.max()) - FILL_MARGIN
    rest = [i for i in range(len(cands)) if i not in chosen]
    while rest:
        redundancy = (vecs[rest] @ vecs[chosen].T).max(axis=1) if chosen else np.zeros(len(rest))
        scores = MMR_LAMBDA * relevance[rest] - (1 - MMR_LAMBDA) * redundancy
        best = rest.pop(int(np.argmax(scores)))
        if chosen and relevance[best] < floor:
            continue
        if words + sizes[best] > max_words:
            if not chosen:  # even the best sentence is too long: keep its first max_words words
                cands[best].text = truncate_words(cands[best].text, max_words)
                chosen.append(best)
                words = max_words
            continue
        chosen.append(best)
        words += int(sizes[best])
    return chosen


_FIGURE = re.compile(r"\d")


def _figure_share(text: str) -> float:
    words = text.split()
    return sum(1 for w in words if _FIGURE.search(w)) / max(1, len(words))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) or 1.0)


def _standardized(x: np.ndarray) -> np.ndarray:
    """Scores as z-values within the text: embedders' cosines live on different scales (e5's unrelated texts
    are ~0.75 apart, MiniLM's ~0.05), so the position prior and the MMR trade-off mean the same with either."""
    sd = float(x.std())
    return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)


def _candidate_vectors(evidence: Evidence, cands: list[Scored]) -> np.ndarray:
    vectors = evidence.unit_vectors([(c.n, c.index) for c in cands])
    if vectors is not None:
        return vectors
    # No embedder: bag-of-terms vectors, so the same centroid/MMR code still ranks sensibly.
    vocab: dict[str, int] = {}
    rows = [content_terms(c.text) for c in cands]
    for terms in rows:
        for t in terms:
            vocab.setdefault(t, len(vocab))
    m = np.zeros((len(cands), max(len(vocab), 1)), dtype=np.float32)
    for r, terms in enumerate(rows):
        for t in terms:
            m[r, vocab[t]] = 1.0
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)


def truncate_words(text: str, max_words: int) -> str:
    if _CJK_RUN.search(text):
        pieces = rjieba.cut(text)
        return "".join(pieces[:max_words]).rstrip() + "…"
    return " ".join(text.split()[:max_words]).rstrip(",;:") + "…"
