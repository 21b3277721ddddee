"""Pipe tables as a reader sees them: which rows are headers, what each column is called, which rows only name a
section, and how one row reads on its own ("Age group: Adults 18–60 years; Recommended sleep: 7 or more hours").

Two dialects occur: Markdown (``| a | b |`` with a ``|---|`` rule under the header) and the exports of financial
reports (``Revenue | $ 1,496.5 | $ 1,202.9``: no outer pipes, no rule, several header rows whose first cell is
empty, rows such as ``Industrial Solutions: |  |  |`` that only name the section below them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.text import CJK_RUN

_RULE_CELL = re.compile(r"\s*:?-+:?\s*")
_CELL_NUMBER = re.compile(r"^\(?-?\s*[$€£¥]?\s*\(?\s*(?P<n>\d[\d,]*(?:\.\d+)?)\s*\)?\s*(?:%|％)?\s*\)?$")
_YEAR = re.compile(r"(?:19|20)\d\d")


@dataclass
class TableRow:
    line: int  # index of the line in the table block
    cells: list[str]
    section: str = ""  # the latest section-label row above it
    sums_above: bool = False  # no label, and its figures are the sums of the rows above it: their total


@dataclass
class Table:
    captions: list[str]  # header lines with one filled cell ("Years Ended September 30,", "(in millions)")
    columns: list[str]  # a label per column (may be "")
    rows: list[TableRow] = field(default_factory=list)  # data rows, in order
    header_lines: list[int] = field(default_factory=list)  # the lines that head the table, its rule included

    @property
    def header_size(self) -> int:
        """How many leading lines head the table: what a part of a split table repeats."""
        return max(self.header_lines) + 1 if self.header_lines else 0


def is_table_line(line: str) -> bool:
    return "|" in line and bool(line.strip())


def split_cells(line: str, outer_pipes: bool) -> list[str]:
    s = line.strip()
    if outer_pipes:
        s = s[1:] if s.startswith("|") else s
        s = s[:-1] if s.endswith("|") else s
        return [" ".join(c.split()) for c in s.split("|")]
    return [" ".join(c.split()) for c in line.split("|")]


def _is_rule(cells: list[str]) -> bool:
    return bool(cells) and all(_RULE_CELL.fullmatch(c) or not c for c in cells) and any(cells)


def cell_value(cell: str) -> float | None:
    """The figure a table cell holds ("$ 1,452.4", "(114)" is negative, "23%"), or None for text and dashes."""
    s = cell.strip().replace(" ", "")
    m = _CELL_NUMBER.match(s)
    if not m:
        return None
    value = float(m.group("n").replace(",", ""))
    return -value if "(" in s[:m.start("n")] or "-" in s[:m.start("n")] else value


def cell_decimals(cell: str) -> int:
    """How many decimals a cell's figure is written with ("$1,452.40" 2, "191%" 0): the precision it was rounded to."""
    m = re.search(r"\.(\d+)", cell)
    return len(m.group(1)) if m else 0


def _is_amount(cell: str) -> bool:
    """A cell stating an amount ("$1,496.5", "(141,770)", "9.8%"), not a label ("2-5 Years", "April 27, 2019"); a
    bare year ("2019") labels a column."""
    return cell_value(cell) is not None and not _YEAR.fullmatch(cell.strip())


def _extend_unlabelled(cells: list[list[str]], header: list[int]) -> None:
    while len(header) < len(cells) and cells[len(header)] and not cells[len(header)][0]:
        header.append(len(header))


def _labels_columns_below_captions(cells: list[list[str]], header: list[int], width: int) -> bool:
    """Whether the row after `header` is a column-label row of a financial export whose first cell is a caption:
    "($ in millions) |  | " then "At December 31: | 2019 | 2018", or " | December 31, 2019 |  | December 31, 2018 |
    " then "(In millions) | Carrying Amount | Fair Value | Carrying Amount | Fair Value". It is when a column is
    still unlabelled by the header so far (a caption row labels none), the row's other cells are labels (no amount
    among them), and one of the three rows below it holds an amount."""
    nxt = len(header)
    if nxt >= len(cells):
        return False
    labelled = {j for i in header if sum(1 for c in cells[i] if c) > 1 for j, c in enumerate(cells[i]) if c}
    if all(j in labelled for j in range(1, width)):
        return False
    row = cells[nxt]
    labels = [c for c in row[1:] if c]
    if not row[0] or not labels or any(_is_amount(c) for c in labels):
        return False
    return any(_is_amount(c) for below in cells[nxt + 1: nxt + 4] for c in below[1:])


def parse_table(lines: list[str]) -> Table:
    """Header rows, column labels and data rows of one table block (consecutive lines holding '|')."""
    outer = all(ln.strip().startswith("|") and ln.strip().endswith("|") for ln in lines)
    cells = [split_cells(ln, outer) for ln in lines]
    width = max((len(c) for c in cells), default=0)
    rule = next((i for i, c in enumerate(cells[:3]) if _is_rule(c)), None)
    names_table = None  # a header row whose first cell is a caption, not the first column's label
    if rule is not None:
        header = list(range(rule))
        body = [i for i in range(rule + 1, len(cells)) if not _is_rule(cells[i])]
    else:
        # No rule: the first row heads the table, and so does every following row whose first cell is empty
        # (the year row and the "(in millions)" row of a financial table), up to the first labelled row; while a
        # column is still unlabelled, a labelled row of labels heads it too (_labels_columns_below_captions).
        header = [0]
        _extend_unlabelled(cells, header)
        if _labels_columns_below_captions(cells, header, width):
            header.append(len(header))
            names_table = header[-1]
            _extend_unlabelled(cells, header)
        body = list(range(len(header), len(cells)))
    captions: list[str] = []
    labels = [""] * width
    for i in header:
        filled = [(j, c) for j, c in enumerate(cells[i]) if c]
        if i == names_table:  # its first cell ("($ in millions)") is a caption; the others label their columns
            captions.append(filled.pop(0)[1])
        elif len(filled) == 1 and (filled[0][0] > 0 or width > 2) and rule is None:
            captions.append(filled[0][1])
            continue
        for j, c in filled:
            labels[j] = f"{labels[j]} {c}".strip()
    table = Table(captions, labels, header_lines=header + ([rule] if rule is not None else []))
    section = ""
    for i in body:
        row = cells[i]
        filled = [c for c in row if c]
        if not filled:
            continue
        if len(row) > 1 and row[0] and not any(row[1:]):
            section = row[0].rstrip(":：").strip()  # a row that only names what follows
            continue
        table.rows.append(TableRow(i, row, section))
    _find_totals(table.rows)
    return table


def _find_totals(rows: list[TableRow]) -> None:
    """Mark the unlabelled rows of figures that total the rows above them (back to the previous total, which is
    one of the terms, or to the start of the section): the bottom line of a financial table ("  | $8,455 |
    $10,647") then reads "Total — 2019: $8,455; ..." and answers "What were the total costs?". An unlabelled row
    whose figures are not those sums (a net figure below a "Less:" row) stays unnamed: nothing proves it a total."""
    start = 0
    for k, row in enumerate(rows):
        if k and row.section != rows[k - 1].section:
            start = k
        if row.cells[0] or not any(cell_value(c) is not None for c in row.cells[1:]):
            continue
        row.sums_above = k - start >= 2 and _sums(row, rows[start:k])
        start = k


def _sums(row: TableRow, above: list[TableRow]) -> bool:
    checked = 0
    for j, cell in enumerate(row.cells[1:], 1):
        value = cell_value(cell)
        if value is None:
            continue
        terms = [cell_value(r.cells[j]) if j < len(r.cells) else None for r in above]
        figures = [t for t in terms if t is not None]
        if len(figures) < 2:
            return False
        step = 10.0 ** -cell_decimals(cell)
        if abs(sum(figures) - value) > 0.5 * step * len(figures) + 1e-9:  # each term was rounded to the step
            return False
        checked += 1
    return checked > 0


def _total_name(section: str, chinese: bool) -> str:
    """"Total Inventories" under the section "Inventories" (what a statement would print), else "Total"."""
    if chinese:
        return "合计"
    return f"Total {section}" if section else "Total"  # its case kept: "Total United Kingdom tax"


def row_fields(table: Table, row: TableRow) -> tuple[str, list[tuple[str, str]]]:
    """(lead, [(label, value), ...]) of one row: the lead names the row when its first column has no label (or a
    section heads it); each filled cell comes with its column's label ("" where the column has none)."""
    cells = row.cells
    if row.sums_above:  # named by what it is, in the table's language
        said = [*table.columns, row.section, *(r.cells[0] for r in table.rows)]
        cells = [_total_name(row.section, chinese=any(CJK_RUN.search(c) for c in said)), *cells[1:]]
    first = cells[0] if cells else ""
    lead = ""
    if first and not (table.columns and table.columns[0]):
        lead = f"{row.section}: {first}" if row.section else first  # an unlabelled first column names the row
        rest = range(1, len(cells))
    else:
        if row.section:
            lead = row.section
        rest = range(len(cells))
    return lead, [(table.columns[j] if j < len(table.columns) else "", cells[j]) for j in rest if cells[j]]


def render_fields(lead: str, fields: list[tuple[str, str]]) -> str:
    """A row readable alone: "lead — label: value; label: value" (empty cells are not among the fields)."""
    body = "; ".join(f"{label}: {value}" if label else value for label, value in fields)
    if lead and body:
        return f"{lead} — {body}"
    return lead or body
