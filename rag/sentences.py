"""Sentence boundaries in English and Chinese text, with the offsets of each sentence: the lowest layer of
grounding (rag.grounding checks sentences, rag.answer_units cuts passages into them)."""

from __future__ import annotations

import re
from dataclasses import dataclass

CITE_GROUP = r"(?:\[\s*\d{1,3}(?:\s*[-–,，;；]\s*\d{1,3})*\s*\]|【\s*\d{1,3}\s*】)"
# A sentence ends at Latin punctuation followed by space/end, or at Chinese punctuation; citation groups and
# closing quotes right after the punctuation belong to the sentence they end.
_END = re.compile(
    r"(?:[.!?]+[\"'”’)\]]*(?=\s|$)|[。！？；…]+[”’」』）)\"']*)"
    rf"(?:\s*{CITE_GROUP})*"
)
_ABBREV = frozenset("e.g i.e dr mr mrs ms prof st vs fig inc jr sr ltd co approx cf al etc no vol pp".split())
_HEADING = re.compile(r"\s{0,3}#{1,6}\s")
_TABLE_RULE = re.compile(r"\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_LIST_MARK = re.compile(r"\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_EMPHASIS = re.compile(r"\*\*|__|`")
_ENUMERATION = re.compile(r"[A-Za-z\u4e00-\u9fff][:：]\s*\d{1,2}$")


@dataclass
class Sentence:
    text: str  # display text: markdown emphasis and list markers removed
    start: int  # offsets of the raw sentence in the text it was split from
    end: int


def _ends_here(line: str, m: re.Match) -> bool:
    """False for the period of an abbreviation or an initial, and before a lowercase continuation."""
    if line[m.start()] != ".":
        return True
    if _ENUMERATION.search(line[:m.start()]):
        return False  # "Level: 1. Remember": a numbered label after a colon, not a sentence ending in a figure
    word = re.search(r"([A-Za-z][A-Za-z.]*)$", line[:m.start()])
    if word and (word.group(1).lower() in _ABBREV or len(word.group(1)) == 1):
        return False
    nxt = line[m.end():].lstrip()[:1]
    return not (nxt and nxt.islower())


def split_sentences(text: str) -> list[Sentence]:
    """Sentences in reading order. Lines are boundaries too (list items, table rows); headings are skipped."""
    out: list[Sentence] = []
    offset = 0
    for line in text.split("\n"):
        base = offset
        offset += len(line) + 1
        if not line.strip() or _HEADING.match(line) or _TABLE_RULE.fullmatch(line):
            continue
        mark = _LIST_MARK.match(line)
        start = mark.end() if mark else len(line) - len(line.lstrip())
        for m in _END.finditer(line):
            if m.end() <= start or not _ends_here(line, m):
                continue
            _add(out, line, start, m.end(), base)
            start = m.end()
        _add(out, line, start, len(line), base)
    return out


def _add(out: list[Sentence], line: str, start: int, end: int, base: int) -> None:
    raw = line[start:end]
    lead = len(raw) - len(raw.lstrip())
    display = _EMPHASIS.sub("", raw).strip()
    if display:
        out.append(Sentence(display, base + start + lead, base + end))
