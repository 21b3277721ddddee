"""Split documents into retrievable chunks measured in the embedder's own tokens.

A document is read as Markdown: headings open sections (their texts form the chunk's heading path), pipe tables
become table chunks, everything else is split into units (paragraphs, list items, then sentences) that are packed
up to `max_tokens`, each chunk starting with `overlap` tokens' worth of the previous chunk's last sentences.
A chunk never crosses a heading. Every text chunk is a slice of `Document.text`, so its offsets are exact.

Token counts come from one tokenizer call per document (per batch of documents in `chunk_many`) and are summed
per unit. The sum equals the count of the joined text because units are cut at whitespace or pre-tokenizer word
boundaries (true for the WordPiece/BERT tokenizers of the supported embedders).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tokenizers import Encoding, Tokenizer

from rag.models.tokenization import counting_copy
from rag.tables import parse_table
from rag.types import Chunk, Document

# Which rules cut documents into chunks: part of a build's key and manifest, so that a change of them rebuilds a
# corpus an unchanged-build check would otherwise keep. 2: capitalised stand-alone lines of plain text are headings.
# 3: a financial table's header includes the column-label row below its captions (rag.tables), so every part of a
# split table repeats it.
CHUNKING_RULES = 3
BATCH_DOCS = 64  # documents per tokenizer call in chunk_many
MIN_TOKENS = 20  # a trailing fragment smaller than this joins the previous chunk of its section when it fits

_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(?:```|~~~)")
# Unit boundaries inside running text: a blank line, or a new list item.
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n|\n(?=[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t])")
_SENTENCE_END = re.compile(
    r"[.!?]+[\"'”’)\]]*(?=\s)"  # Latin: only before whitespace, so 3.5 and e.g.x stay whole
    r"|[。！？；…｡]+[”’」』）)\"']*"  # Chinese: no space follows
)
_ABBREVIATIONS = frozenset("e.g i.e dr mr mrs ms prof st vs fig inc jr sr ltd co approx cf al u.s no".split())


@dataclass
class _Unit:
    """A span of the document text that is never split across chunks (unless longer than a chunk)."""

    start: int
    end: int
    n_tokens: int = 0
    encoding: Encoding | None = None


@dataclass
class _Heading:
    level: int
    text: str


@dataclass
class _TextRun:
    units: list[_Unit]


@dataclass
class _Table:
    header: list[_Unit]  # header row, plus the separator row when there is one
    rows: list[_Unit]


@dataclass
class _Draft:
    """A chunk before it gets its ordinal; `fresh_tokens` excludes the overlap carried from the previous one."""

    text: str
    n_tokens: int
    start: int
    end: int
    kind: str
    fresh_tokens: int
    heading_path: list[str] = field(default_factory=list)


class Chunker:
    """Token-aware, structure-aware chunker. `tokenizer` is the embedder's Hugging Face fast tokenizer."""

    def __init__(self, tokenizer, max_tokens: int = 200, overlap: int = 40):
        """`tokenizer`: a fast Hugging Face tokenizer (copied), or a `tokenizers.Tokenizer` with truncation and
        padding already off, used as is (an embedder's `token_counter`)."""
        if max_tokens < 1 or not 0 <= overlap < max_tokens:
            raise ValueError(f"need max_tokens >= 1 and 0 <= overlap < max_tokens (got {max_tokens}, {overlap})")
        if isinstance(tokenizer, Tokenizer):
            self._tokenizer = tokenizer
        elif getattr(tokenizer, "is_fast", False):
            # A private copy: tokenizer.json files often carry truncation/padding settings that would distort counts.
            self._tokenizer = counting_copy(tokenizer)
        else:
            raise TypeError("Chunker needs a fast (Rust-backed) Hugging Face tokenizer")
        self.max_tokens = max_tokens
        self.overlap = overlap
        # Over-long sentences are cut into pieces this size, so that overlap can still carry whole pieces.
        self._piece_tokens = overlap or max_tokens

    def chunk(self, doc: Document) -> list[Chunk]:
        """The chunks of one document, in order; none for a document without text."""
        return self._chunk_batch([doc])[0]

    def chunk_many(self, docs: Iterable[Document]) -> Iterator[tuple[Document, list[Chunk]]]:
        """Each document with its chunks, in input order. Documents are tokenized in batches: one tokenizer
        call over many short documents runs on all cores."""
        batch: list[Document] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) == BATCH_DOCS:
                yield from zip(batch, self._chunk_batch(batch))
                batch = []
        if batch:
            yield from zip(batch, self._chunk_batch(batch))

    # --- internals -----------------------------------------------------------------------------------------

    def _chunk_batch(self, docs: list[Document]) -> list[list[Chunk]]:
        parsed = [_parse(doc.text, plain=doc.format == "txt") for doc in docs]
        spans = [(doc.text, u) for doc, blocks in zip(docs, parsed) for b in blocks for u in _units_of(b)]
        if spans:
            encodings = self._tokenizer.encode_batch([text[u.start:u.end] for text, u in spans],
                                                     add_special_tokens=False)
            for (_, unit), enc in zip(spans, encodings):
                unit.n_tokens = len(enc.ids)
                unit.encoding = enc
        return [[Chunk(chunk_id=f"{doc.doc_id}#{i}", doc_id=doc.doc_id, ordinal=i, text=d.text,
                       heading_path=d.heading_path, kind=d.kind, n_tokens=d.n_tokens, start_char=d.start,
                       end_char=d.end)
                 for i, d in enumerate(self._drafts(doc, blocks))]
                for doc, blocks in zip(docs, parsed)]

    def _drafts(self, doc: Document, blocks: list[_Heading | _TextRun | _Table]) -> list[_Draft]:
        out: list[_Draft] = []
        path: list[tuple[int, str]] = []
        section: list[_Draft] = []

        def close_section() -> None:
            self._merge_tiny_tail(doc.text, section)
            for d in section:
                d.heading_path = [text for _, text in path]
            out.extend(section)
            section.clear()

        title = _fold(doc.title)
        for block in blocks:
            if isinstance(block, _Heading):
                close_section()
                path[:] = [(lvl, text) for lvl, text in path if lvl < block.level]
                # The title is already the chunk's context (Chunk.embed_text); an H1 repeating it is no section.
                if not (block.level == 1 and _fold(block.text) == title):
                    path.append((block.level, block.text))
            elif isinstance(block, _TextRun):
                section.extend(self._pack(doc.text, self._fit(block.units, self.max_tokens)))
            else:
                section.extend(self._table(doc.text, block))
        close_section()
        return out

    def _fit(self, units: list[_Unit], limit: int) -> list[_Unit]:
        """Units, with any longer than `limit` cut into pieces of at most `_piece_tokens` (or `limit`)."""
        out: list[_Unit] = []
        for u in units:
            out.extend(_split_unit(u, min(self._piece_tokens, limit)) if u.n_tokens > limit else [u])
        return out

    def _pack(self, text: str, units: list[_Unit]) -> list[_Draft]:
        """Greedy packing of consecutive units; each chunk opens with whole trailing units of the last one."""
        drafts: list[_Draft] = []
        current: list[_Unit] = []
        fresh = 0  # index in `current` where the units new to this chunk begin
        for unit in units:
            if current and _tokens(current) + unit.n_tokens > self.max_tokens:
                drafts.append(_text_draft(text, current, fresh))
                carry = _tail(current, self.overlap)
                while carry and _tokens(carry) + unit.n_tokens > self.max_tokens:
                    carry.pop(0)
                current, fresh = carry, len(carry)
            current.append(unit)
        if current:
            drafts.append(_text_draft(text, current, fresh))
        return drafts

    def _table(self, text: str, table: _Table) -> list[_Draft]:
        """The whole table when it fits; else row groups that each repeat the header. Rows are not cut unless
        a single row cannot fit."""
        units = [*table.header, *table.rows]
        total = _tokens(units)
        if total <= self.max_tokens:
            return [_Draft(text[units[0].start:units[-1].end], total, units[0].start, units[-1].end, "table",
                           total)]
        header = text[table.header[0].start:table.header[-1].end]
        header_tokens, rows = _tokens(table.header), table.rows
        if header_tokens > self.max_tokens // 2:  # too wide to repeat: split its lines like any other row
            header, header_tokens, rows = "", 0, units
        budget = self.max_tokens - header_tokens
        drafts = []
        for group in _groups(self._fit(rows, budget), budget):
            body = text[group[0].start:group[-1].end]
            n = header_tokens + _tokens(group)
            chunk_text = f"{header}\n{body}" if header else body
            drafts.append(_Draft(chunk_text, n, group[0].start, group[-1].end, "table", n))
        return drafts

    def _merge_tiny_tail(self, text: str, section: list[_Draft]) -> None:
        # Greedy packing already fills a chunk, so in practice this catches a short line after a table.
        if len(section) < 2:
            return
        prev, last = section[-2], section[-1]
        if (last.kind == "text" and last.fresh_tokens < MIN_TOKENS
                and prev.n_tokens + last.fresh_tokens <= self.max_tokens):
            prev.text += text[prev.end:last.end]
            prev.n_tokens += last.fresh_tokens
            prev.end = last.end
            section.pop()


# --- parsing -------------------------------------------------------------------------------------------------

def _parse(text: str, plain: bool = False) -> list[_Heading | _TextRun | _Table]:
    """Headings, pipe tables and the runs of text between them, in document order. In `plain` text (a .txt file)
    a line in capitals standing alone between blank lines ("WHAT TO DO") is a heading too: plain text has no
    other way to mark one, and a section cut in the middle loses the lead-in of its list."""
    lines = text.split("\n")
    starts = [0] * len(lines)
    for i in range(1, len(lines)):
        starts[i] = starts[i - 1] + len(lines[i - 1]) + 1
    blocks: list[_Heading | _TextRun | _Table] = []
    run_start: int | None = None

    def close_run(end: int) -> None:
        nonlocal run_start
        if run_start is not None and (units := _text_units(text, run_start, end)):
            blocks.append(_TextRun(units))
        run_start = None

    i, in_fence = 0, False
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence  # fenced code is plain text: no headings or tables inside
        elif not in_fence and (m := _HEADING.fullmatch(line)):
            close_run(starts[i])
            blocks.append(_Heading(len(m.group(1)), m.group(2).strip()))
            i += 1
            continue
        elif plain and _plain_heading(lines, i):
            close_run(starts[i])
            blocks.append(_Heading(2, line.strip()))
            i += 1
            continue
        elif not in_fence and "|" in line and i + 1 < len(lines) and "|" in lines[i + 1]:
            close_run(starts[i])
            j = i
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                j += 1
            rows = [_line_unit(text, starts[k], lines[k]) for k in range(i, j)]
            # Pipe rows without a separator (as in financial report exports) are a table too, headed by their
            # first row and the rows after it whose first cell is empty (the years, "(in millions)").
            n_header = min(parse_table(lines[i:j]).header_size, j - i - 1)
            blocks.append(_Table(rows[:n_header], rows[n_header:]))
            i = j
            continue
        if run_start is None and line.strip():
            run_start = starts[i]
        i += 1
    close_run(len(text))
    return blocks


PLAIN_HEADING_MAX_WORDS = 12


def _plain_heading(lines: list[str], i: int) -> bool:
    """A short line in capitals with blank lines (or the text's edge) on both sides."""
    line = lines[i].strip()
    alone = (i == 0 or not lines[i - 1].strip()) and (i + 1 == len(lines) or not lines[i + 1].strip())
    return (alone and line.isupper() and sum(c.isalpha() for c in line) >= 3
            and len(line.split()) <= PLAIN_HEADING_MAX_WORDS and not line.endswith((".", ":")))


def _units_of(block: _Heading | _TextRun | _Table) -> list[_Unit]:
    if isinstance(block, _TextRun):
        return block.units
    if isinstance(block, _Table):
        return [*block.header, *block.rows]
    return []


def _line_unit(text: str, start: int, line: str) -> _Unit:
    s, e = _strip(text, start, start + len(line))
    return _Unit(s, e)


def _text_units(text: str, start: int, end: int) -> list[_Unit]:
    """Paragraphs and list items, split into sentences."""
    units: list[_Unit] = []
    pos = start
    for m in _BLOCK_BREAK.finditer(text, start, end):
        units.extend(_sentences(text, pos, m.start()))
        pos = m.end()
    units.extend(_sentences(text, pos, end))
    return units


def _sentences(text: str, start: int, end: int) -> list[_Unit]:
    spans = []
    pos = start
    for m in _SENTENCE_END.finditer(text, start, end):
        if m.group().startswith(".") and _is_abbreviation(text, start, m.start()):
            continue
        spans.append((pos, m.end()))
        pos = m.end()
    spans.append((pos, end))
    units = []
    for s, e in spans:
        s, e = _strip(text, s, e)
        if s < e:
            units.append(_Unit(s, e))
    return units


def _is_abbreviation(text: str, start: int, dot: int) -> bool:
    """Whether the word ending at `dot` is "e.g", "Dr", an initial ("J"): its period ends no sentence."""
    word_start = max(text.rfind(" ", start, dot), text.rfind("\n", start, dot)) + 1
    word = text[max(word_start, start):dot].lstrip("([\"'")
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _fold(s: str) -> str:
    return " ".join(s.split()).casefold()


# --- packing helpers -----------------------------------------------------------------------------------------

def _split_unit(unit: _Unit, limit: int) -> list[_Unit]:
    """Token windows of at most `limit`, cut between pre-tokenizer words so each piece re-tokenizes the same."""
    enc = unit.encoding
    offsets, words = enc.offsets, enc.word_ids
    pieces = []
    i, n = 0, len(offsets)
    while i < n:
        j = min(i + limit, n)
        if j < n:
            j = next((k for k in range(j, i, -1) if words[k] != words[k - 1]), j)
        pieces.append(_Unit(unit.start + offsets[i][0], unit.start + offsets[j - 1][1], j - i))
        i = j
    return pieces


def _tokens(units: list[_Unit]) -> int:
    return sum(u.n_tokens for u in units)


def _tail(units: list[_Unit], budget: int) -> list[_Unit]:
    """The longest run of trailing whole units within `budget` tokens."""
    tail: list[_Unit] = []
    total = 0
    for unit in reversed(units):
        if total + unit.n_tokens > budget:
            break
        tail.insert(0, unit)
        total += unit.n_tokens
    return tail


def _groups(units: list[_Unit], budget: int) -> list[list[_Unit]]:
    """Consecutive units packed up to `budget` tokens, without overlap."""
    groups: list[list[_Unit]] = []
    total = 0
    for unit in units:
        if not groups or total + unit.n_tokens > budget:
            groups.append([])
            total = 0
        groups[-1].append(unit)
        total += unit.n_tokens
    return groups


def _text_draft(text: str, units: list[_Unit], fresh: int) -> _Draft:
    start, end = units[0].start, units[-1].end
    return _Draft(text[start:end], _tokens(units), start, end, "text", _tokens(units[fresh:]))
