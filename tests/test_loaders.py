"""Loaders on real files written into a temporary folder: formats, metadata precedence, ids, skips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from indexer.loaders import LoaderOptions, load_sources


def pdf_bytes(lines: list[str], title: str | None = None) -> bytes:
    """A minimal valid one-page PDF with Helvetica text that pypdf can extract (no lines: no text at all)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = " ".join(f"({esc(line)}) Tj 0 -16 Td" for line in lines)
    content = f"BT /F1 12 Tf 72 720 Td {ops} ET" if lines else ""
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        " /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({esc(title or '')}) >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    info = " /Info 6 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


MD_FRONT_MATTER = """---
id: fin-emergency
title: "Building an Emergency Fund"
domain: finance
tags: [saving, budgeting]
audience: general
date: 2025-03-14
reviewed_by: Ana
---

# Building an Emergency Fund

An emergency fund covers three to six months of essential expenses.
"""

HTML_PAGE = """<!DOCTYPE html>
<html lang="en-GB"><head>
<title>Learning Styles: A Myth</title>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width">
<meta name="id" content="edu-learning-styles">
<meta name="domain" content="education">
<meta name="tags" content="pedagogy, evidence ,myths">
<meta name="audience" content="teachers">
<meta name="date" content="2024-09-01">
<meta name="author" content="R. Lee">
<style>body { color: red }</style>
</head><body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<h1>Learning Styles: A Myth</h1>
<p>Matching teaching to <b>learning styles</b> does not improve outcomes.</p>
<h2>What the studies show</h2>
<table>
  <thead><tr><th>Study</th><th>Year</th><th>Effect</th></tr></thead>
  <tbody>
    <tr><td>Pashler et al.</td><td>2008</td><td>none</td></tr>
    <tr><td>Rogowsky</td><td>2015</td><td>none</td></tr>
  </tbody>
</table>
<ul><li>Use retrieval practice.</li><li>Space study sessions.</li></ul>
<script>console.log("tracking")</script>
</body></html>
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder with one file of every supported kind, the non-document files a data folder also holds,
    and a few broken files."""
    root = tmp_path / "docs"
    (root / "finance").mkdir(parents=True)
    (root / "medical").mkdir()
    (root / "faq").mkdir()
    (root / "beir" / "qrels").mkdir(parents=True)

    (root / "finance" / "emergency.md").write_text(MD_FRONT_MATTER, encoding="utf-8")
    (root / "finance" / "budgeting.md").write_text(
        "# Budgeting Basics\n\nA budget assigns every unit of income a job.\n", encoding="utf-8")
    (root / "finance" / "budgeting.md.meta.yaml").write_text(
        "tags: envelopes; zero-based\naudience: students\n", encoding="utf-8")
    (root / "finance" / "sidecar-wins.md").write_text(
        "---\ndomain: education\ntags: [old]\n---\nSidecar metadata beats front matter.\n", encoding="utf-8")
    (root / "finance" / "sidecar-wins.meta.json").write_text(
        json.dumps({"domain": "finance", "tags": "new, better", "date": "14/03/2025"}), encoding="utf-8")

    (root / "medical" / "hydration.txt").write_text(
        "\ufeffDrink water regularly.\r\n\r\n\r\n\r\nThirst is a late signal.\r\n", encoding="utf-8")
    (root / "medical" / "hydration.txt.meta.yaml").write_text(
        "id: med-hydration\ntitle: Hydration\ndate: 2024/05/01\nlanguage: en-US\n", encoding="utf-8")
    (root / "medical" / "page.html").write_text(HTML_PAGE, encoding="utf-8")
    (root / "medical" / "leaflet.pdf").write_bytes(
        pdf_bytes(["Wash hands for twenty seconds.", "Use soap and water."], title="Hand Hygiene"))
    (root / "medical" / "scan.pdf").write_bytes(pdf_bytes([]))
    (root / "medical" / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog garbage")
    (root / "medical" / "latin1.txt").write_bytes("Caf\xe9 au lait".encode("latin-1"))
    (root / "medical" / "broken-yaml.md").write_text(
        "---\ntitle: [unclosed\n---\nBody text.\n", encoding="utf-8")
    (root / "medical" / "zh.md").write_text("# 高血压\n\n高血压是一种常见的慢性疾病。控制饮食中的盐很重要。\n",
                                            encoding="utf-8")
    (root / "medical" / "dup.md").write_text("---\nid: fin-emergency\n---\nSame id again.\n", encoding="utf-8")

    (root / "faq" / "faq.csv").write_text(
        "id,question,answer,domain,tags\n"
        "faq-1,What is an ETF?,A fund traded on an exchange.,finance,investing;funds\n"
        ",What is a deductible?,The amount you pay before insurance pays.,medical,insurance\n"
        "faq-3,Too few fields\n"
        "faq-4,What is formative assessment?,Assessment used to adapt teaching.,education,\n",
        encoding="utf-8")
    rows = [
        {"id": "kb-1", "title": "Index funds", "text": "Index funds track a market index.", "domain": "finance"},
        {"title": "No id here", "text": "This row gets a generated id.", "tags": ["a", "b"]},
        "{not json",
        {"id": "kb-4", "title": "Empty", "text": ""},
    ]
    (root / "faq" / "kb.jsonl").write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")

    (root / "beir" / "corpus.jsonl").write_text(
        json.dumps({"_id": "MED-1", "title": "Statins", "text": "Statins lower cholesterol.",
                    "metadata": {"kind": "abstract"}}) + "\n"
        + json.dumps({"_id": "MED-2", "title": "", "text": "Fibre helps digestion."}) + "\n", encoding="utf-8")
    (root / "beir" / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "statins"}) + "\n")
    (root / "beir" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tMED-1\t2\n")
    (root / "beir" / "notes.md").write_text("Not part of the corpus.\n")

    # Not documents: a README, code, user/event data, hidden files, an unknown type.
    (root / "README.md").write_text("# About this folder\n")
    (root / "make_events.py").write_text("print('hi')\n")
    (root / "users.jsonl").write_text(json.dumps({"user_id": "u1", "interests": ["finance"]}) + "\n")
    (root / "events.jsonl").write_text(json.dumps({"user_id": "u1", "doc_id": "x", "type": "view"}) + "\n")
    (root / ".hidden.md").write_text("secret\n")
    (root / "image.png").write_bytes(b"\x89PNG")
    return root


@pytest.fixture
def loaded(corpus: Path):
    return load_sources([corpus])


def by_id(result) -> dict:
    return {d.doc_id: d for d in result.documents}


def reasons(result) -> dict[str, str]:
    """Skip reasons by file name, and by "name@line" for a row of a tabular file."""
    out = {}
    for s in result.skipped:
        row = re.match(r"[^:]+:line (\d+): ", s.reason)
        out[Path(s.path).name + (f"@{row[1]}" if row else "")] = s.reason
    return out


def test_markdown_front_matter(loaded):
    doc = by_id(loaded)["fin-emergency"]
    assert doc.title == "Building an Emergency Fund"
    assert doc.domain == "finance"
    assert doc.tags == ["saving", "budgeting"]
    assert doc.audience == "general"
    assert doc.date == "2025-03-14"
    assert doc.language == "en"
    assert doc.format == "md"
    assert doc.metadata["reviewed_by"] == "Ana"
    assert doc.text.startswith("# Building an Emergency Fund\n\nAn emergency fund")
    assert "---" not in doc.text and "reviewed_by" not in doc.text


def test_path_id_folder_domain_h1_title_and_sidecar(loaded):
    doc = by_id(loaded)["finance/budgeting"]
    assert doc.title == "Budgeting Basics"  # first H1
    assert doc.domain == "finance"  # from the folder name
    assert doc.tags == ["envelopes", "zero-based"]  # semicolon-separated, from the sidecar
    assert doc.audience == "students"
    assert doc.date is None


def test_sidecar_wins_over_front_matter_and_bad_date_is_kept_raw(loaded):
    doc = by_id(loaded)["finance/sidecar-wins"]
    assert doc.domain == "finance"
    assert doc.tags == ["new", "better"]
    assert doc.date is None
    assert doc.metadata["date_raw"] == "14/03/2025"


def test_text_file_with_sidecar_is_normalised(loaded):
    doc = by_id(loaded)["med-hydration"]
    assert doc.title == "Hydration"
    assert doc.date == "2024-05-01"
    assert doc.language == "en"
    assert doc.domain == "medical"
    assert doc.format == "txt"
    assert doc.text == "Drink water regularly.\n\nThirst is a late signal."  # BOM, CRLF, blank runs


def test_html_meta_headings_and_table(loaded):
    doc = by_id(loaded)["edu-learning-styles"]
    assert doc.title == "Learning Styles: A Myth"
    assert doc.domain == "education"  # meta wins over the medical/ folder
    assert doc.tags == ["pedagogy", "evidence", "myths"]
    assert doc.audience == "teachers"
    assert doc.date == "2024-09-01"
    assert doc.language == "en"  # from <html lang="en-GB">
    assert doc.metadata["author"] == "R. Lee"
    assert "viewport" not in doc.metadata
    assert doc.format == "html"
    assert "# Learning Styles: A Myth" in doc.text
    assert "## What the studies show" in doc.text
    assert "| Study | Year | Effect |\n| --- | --- | --- |\n| Pashler et al. | 2008 | none |" in doc.text
    assert "- Use retrieval practice.\n- Space study sessions." in doc.text
    assert "Matching teaching to learning styles does not improve outcomes." in doc.text
    for dropped in ("tracking", "color: red", "Home", "About"):
        assert dropped not in doc.text


def test_pdf_text_and_title(loaded):
    doc = by_id(loaded)["medical/leaflet"]
    assert doc.title == "Hand Hygiene"
    assert doc.format == "pdf"
    assert "Wash hands for twenty seconds." in doc.text and "Use soap and water." in doc.text


def test_csv_faq_rows(loaded):
    docs = by_id(loaded)
    etf = docs["faq-1"]
    assert etf.title == "What is an ETF?"  # no title column: the question is the title
    assert etf.text == "What is an ETF?\n\nA fund traded on an exchange."
    assert etf.tags == ["investing", "funds"]
    assert etf.domain == "finance" and etf.format == "csv"
    assert docs["faq/faq-2"].domain == "medical"  # a row without id: file path and row number
    assert docs["faq-4"].tags == []
    assert "faq-3" not in docs


def test_jsonl_rows(loaded):
    docs = by_id(loaded)
    assert docs["kb-1"].title == "Index funds" and docs["kb-1"].format == "jsonl"
    assert docs["faq/kb-2"].tags == ["a", "b"]
    assert "kb-4" not in docs


def test_beir_folder_loads_only_the_corpus(loaded):
    docs = by_id(loaded)
    med = docs["MED-1"]
    assert med.format == "beir" and med.title == "Statins" and med.text == "Statins lower cholesterol."
    assert med.metadata["kind"] == "abstract"
    assert docs["MED-2"].text == "Fibre helps digestion."
    assert "q1" not in docs
    assert not any(d.doc_id.startswith("beir/") for d in loaded.documents)  # notes.md is not loaded


def test_chinese_language_is_detected(loaded):
    doc = by_id(loaded)["medical/zh"]
    assert doc.language == "zh"
    assert doc.title == "高血压"


def test_bad_files_and_rows_are_skipped_with_reasons(loaded):
    got = reasons(loaded)
    assert "no extractable text" in got["scan.pdf"]
    assert got["corrupt.pdf"].startswith("unreadable PDF")
    assert got["latin1.txt"] == "not valid UTF-8 (byte 0xe9 at offset 3)"
    assert got["broken-yaml.md"].startswith("broken front matter")
    assert got["dup.md"].startswith("duplicate id fin-emergency (first seen in ")
    assert got["dup.md"].endswith("emergency.md)")
    assert got["faq.csv@4"] == "faq.csv:line 4: expected 5 fields, got 2"
    assert got["kb.jsonl@3"].startswith("kb.jsonl:line 3: invalid JSON")
    assert got["kb.jsonl@4"] == "kb.jsonl:line 4: empty text"
    assert len(loaded.skipped) == 8


def test_counts_and_ignored_files(loaded):
    ids = sorted(d.doc_id for d in loaded.documents)
    assert ids == sorted([
        "fin-emergency", "finance/budgeting", "finance/sidecar-wins", "med-hydration", "edu-learning-styles",
        "medical/leaflet", "medical/zh", "faq-1", "faq/faq-2", "faq-4", "kb-1", "faq/kb-2", "MED-1", "MED-2",
    ])
    # Every document file once; README, .py, users/events, hidden, sidecars, png and BEIR extras not at all.
    assert loaded.files_seen == 15
    assert not any("README" in s.path or "users" in s.path or ".png" in s.path for s in loaded.skipped)


def test_explicit_files_unsupported_type_and_missing_path(corpus, tmp_path):
    result = load_sources([corpus / "finance" / "budgeting.md", corpus / "image.png"])
    assert [d.doc_id for d in result.documents] == ["budgeting"]  # relative to its own folder
    assert result.documents[0].domain is None  # no domain folder between the source and the file
    assert [s.reason for s in result.skipped] == ["unsupported file type .png"]
    assert result.files_seen == 2
    with pytest.raises(FileNotFoundError) as err:
        load_sources([tmp_path / "nope"])
    assert str(tmp_path / "nope") in str(err.value)


def test_options_default_domain_and_columns(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text(json.dumps({"key": "n1", "heading": "Note", "body": "Body one.", "extra": "x",
                                "audience": "kids"}) + "\n", encoding="utf-8")
    opts = LoaderOptions(id_field="key", title_field="heading", text_fields=("body",), default_domain="education")
    [doc] = load_sources([path], opts).documents
    assert (doc.doc_id, doc.title, doc.text, doc.domain, doc.audience) == ("n1", "Note", "Body one.",
                                                                          "education", "kids")
    assert "extra" not in doc.metadata  # only the configured metadata columns are read


def test_explicit_file_without_text_column_is_one_skip(corpus):
    result = load_sources([corpus / "users.jsonl"])
    assert result.documents == []
    assert [s.reason for s in result.skipped] == ["no text column (expected text, or question and answer)"]


def test_broken_sidecar_skips_the_file(tmp_path):
    (tmp_path / "a.md").write_text("Some text.\n", encoding="utf-8")
    (tmp_path / "a.md.meta.json").write_text("{not json", encoding="utf-8")
    result = load_sources([tmp_path])
    assert result.documents == []
    assert result.skipped[0].reason.startswith("broken sidecar a.md.meta.json")


def test_nfc_and_empty_documents(tmp_path):
    (tmp_path / "accent.txt").write_text("Cafe\u0301 culture.\n", encoding="utf-8")
    (tmp_path / "blank.md").write_text("---\ntitle: Nothing\n---\n\n   \n", encoding="utf-8")
    result = load_sources([tmp_path])
    assert [d.text for d in result.documents] == ["Caf\u00e9 culture."]
    assert [(Path(s.path).name, s.reason) for s in result.skipped] == [("blank.md", "empty text")]


def test_progress_bar_goes_to_stderr(corpus, capsys):
    load_sources([corpus / "finance"], progress=True)
    captured = capsys.readouterr()
    assert "load" in captured.err and captured.out == ""
