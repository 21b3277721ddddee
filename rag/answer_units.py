"""Answer units: the pieces of a passage that can answer a question on their own.

A passage is read the way a person skims it: headings (Markdown ``#`` lines, and the short stand-alone lines of
plain-text documents such as "HOW MUCH IS ENOUGH?") name what follows but answer nothing; a paragraph gives
sentences; a list, or a run of one-line entries ("B - Balance: ..."), gives one unit per item, with the sentence
that introduced it ("... if:") as its context; a table gives one unit per row, rendered with its header so that
it reads alone ("Age group: Adults 18–60 years; Recommended sleep per 24 hours: 7 or more hours").

Each unit keeps the exact span of the passage it came from (what a citation shows and highlights) apart from the
text an answer quotes (a rendered row), and the block it belongs to, so that a list question can take the
neighbouring items of the unit that answers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.sentences import split_sentences
from rag.tables import is_table_line, parse_table, render_fields, row_fields
from rag.text import tokenize

_HEADING = re.compile(r"\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_TABLE_RULE = re.compile(r"\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_LIST_MARK = re.compile(r"\s*(?:[-*+•]|\d{1,3}[.)、]|[（(]\d{1,2}[)）]|[一二三四五六七八九十]+、)\s*")
_EMPHASIS = re.compile(r"\*\*|__|`")
_ENDS_SENTENCE = re.compile(r"[.!。！；;…]['\"”’)）]*$")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
HEADING_MAX_WORDS = 12  # a stand-alone line longer than this is a sentence without its full stop, not a title
ITEM_MAX_WORDS = 70  # a longer list item is split into its sentences
SHORT_TERMS = 2  # "No." / "Yes, twice." carries its claim in the next sentence: the two form one unit


@dataclass
class AnswerUnit:
    n: int  # the passage it belongs to
    index: int  # position among the passage's units
    kind: str  # sentence | item | row
    text: str  # what an answer quotes (a row with its header)
    span: str  # the passage text it stands for (what a citation highlights)
    start: int  # offsets of the span in the passage text
    end: int
    context: str  # heading, lead-in or table caption: what the unit is about when it does not say so
    block: int  # units of one paragraph, list or table share a block
    answers: bool  # False for text that cannot answer on its own (a question, a restated title)
    row: tuple[str, tuple[tuple[str, str], ...]] | None = None  # a table row's (lead, ((label, value), ...))
    heading: str = ""  # the nearest heading above it ("HOW MUCH IS ENOUGH?"), without lead-in or caption

    @property
    def row_key(self) -> str:
        """What a table row is about: its lead ("Net sales — 2019: ...") or else its first cell's value; ""
        for a unit that is not a row."""
        if not self.row:
            return ""
        lead, fields = self.row
        return lead or (fields[0][1] if fields else "")

    @property
    def row_key_label(self) -> str:
        """The label of the column the key sits in ("Technique"); "" when the row has a lead (the key is no cell)."""
        if not self.row:
            return ""
        lead, fields = self.row
        return "" if lead or not fields else fields[0][0]


def _words(text: str) -> int:
    return len(text.split()) + len(_CJK.findall(text)) // 2


def _heading_like(line: str) -> bool:
    """A stand-alone short line with no full stop: a plain-text heading, a title, an FAQ's question."""
    s = line.strip()
    if not s or _words(s) > HEADING_MAX_WORDS or _ENDS_SENTENCE.search(s) or s.endswith((":", "：")):
        return False
    return True


def _display(raw: str) -> str:
    return _EMPHASIS.sub("", raw).strip()


def passage_units(text: str, n: int, *, title: str = "", heading: str = "") -> list[AnswerUnit]:
    """The answer units of one passage, in reading order. `heading` is the chunk's heading path, if any."""
    lines = text.split("\n")
    starts = [0] * len(lines)
    for i in range(1, len(lines)):
        starts[i] = starts[i - 1] + len(lines[i - 1]) + 1
    title_terms = set(tokenize(title))
    units: list[AnswerUnit] = []
    block = 0
    context = heading
    lead_in = ""

    def add(kind: str, shown: str, span: str, start: int, end: int, ctx: str, answers: bool = True,
            row: tuple[str, tuple[tuple[str, str], ...]] | None = None) -> None:
        terms = set(tokenize(shown))
        if not terms and not shown.strip():
            return
        # A sentence that only restates the title (the first line of a plain-text file) says nothing new.
        if terms and title_terms and terms <= title_terms:
            answers = False
        # A question cannot answer, but a table row whose last cell is one ("Apply | What if there had been no
        # fog?") still answers with its other cells.
        if kind != "row" and shown.rstrip().endswith(("?", "？")):
            answers = False
        units.append(AnswerUnit(n, len(units), kind, shown, span, start, end, ctx, block, answers, row,
                                context.rsplit(" > ", 1)[-1]))

    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        m = _HEADING.match(line)
        if m:
            context, lead_in = m.group(1).strip(), ""
            i += 1
            continue
        if is_table_line(line) and i + 1 < len(lines) and is_table_line(lines[i + 1]):
            j = i
            while j < len(lines) and is_table_line(lines[j]):
                j += 1
            table = parse_table(lines[i:j])
            ctx = " ".join(x for x in (context, *table.captions) if x)
            block += 1
            for row in table.rows:
                k = i + row.line
                lead, fields = row_fields(table, row)
                shown = render_fields(lead, fields)
                if shown:
                    add("row", shown, _display(lines[k]), starts[k], starts[k] + len(lines[k]), ctx,
                        row=(lead, tuple(fields)))
            i, lead_in = j, ""
            continue
        j = i
        while j < len(lines) and lines[j].strip() and not _HEADING.match(lines[j]) \
                and not (is_table_line(lines[j]) and j + 1 < len(lines) and is_table_line(lines[j + 1])):
            j += 1
        para = [k for k in range(i, j) if not _TABLE_RULE.fullmatch(lines[k])]
        block += 1
        if len(para) == 1 and _heading_like(lines[para[0]]) and not _LIST_MARK.match(lines[para[0]]):
            context, lead_in = _display(lines[para[0]]), ""
            i = j
            continue
        listed = len(para) > 1 or bool(_LIST_MARK.match(lines[para[0]]))
        ctx = f"{context}: {lead_in}".strip(": ") if lead_in else context
        new_lead = ""
        for k in para:
            line_k = lines[k]
            if listed and _words(line_k) <= ITEM_MAX_WORDS:
                mark = _LIST_MARK.match(line_k)
                raw = line_k[mark.end():] if mark else line_k
                shown = _display(raw)
                off = starts[k] + (mark.end() if mark else 0)
                add("item", shown, shown, off + (len(raw) - len(raw.lstrip())), starts[k] + len(line_k.rstrip()),
                    ctx)
                new_lead = shown if shown.endswith((":", "：")) else ""  # only a paragraph's last line leads on
                if new_lead:
                    ctx = f"{context}: {shown}".strip(": ")  # the items after it in this paragraph are its list
                continue
            pending: tuple[str, int] | None = None  # a too-short sentence waiting for the next one
            # A list item too long to answer whole is its sentences; its first one still stands for it in the
            # list ("Muscle symptoms are the most common complaint."), so a list answer shows every member.
            kind = "item" if listed else "sentence"
            for s in split_sentences(line_k):
                start = starts[k] + s.start
                if pending is not None:
                    shown = f"{pending[0]} {s.text}" if not _CJK.search(s.text[:1]) else pending[0] + s.text
                    start, pending = pending[1], None
                else:
                    shown = s.text
                if len(set(tokenize(shown))) < SHORT_TERMS and not shown.endswith((":", "：")):
                    pending = (shown, start)
                    continue
                add(kind, shown, _display(text[start:starts[k] + s.end]), start, starts[k] + s.end, ctx)
                kind = "sentence"
                new_lead = shown if shown.endswith((":", "：")) else ""
            if pending is not None:
                add(kind, pending[0], pending[0], pending[1], starts[k] + len(line_k.rstrip()), ctx)
        lead_in = new_lead
        i = j
    return units


def unit_embed_text(u: AnswerUnit) -> str:
    """What the embedder reads for a unit: its context first ("How much sleep do people need?: Age group: ...")."""
    return f"{u.context}: {u.text}" if u.context else u.text
