"""Long documents are summarized by their structure: the summary of every data/ document over 3,000 words
represents at least 80% of its top-level sections within the default word budget."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evaluation.summaries import LONG_DOCUMENT_WORDS, evaluate_sections
from rag.summarize import MAX_DEFAULT_WORDS
from tests.conftest import make_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "documents"


def _long_documents() -> list[Path]:
    return sorted(p for p in DATA.rglob("*.md") if len(p.read_text(encoding="utf-8").split()) > LONG_DOCUMENT_WORDS)


@pytest.fixture(scope="module")
def sections(tmp_path_factory, models_dir):
    folder = tmp_path_factory.mktemp("long-docs")
    for p in _long_documents():
        shutil.copy(p, folder / p.name)
    settings = make_settings(tmp_path_factory.mktemp("long-home"), models_dir)
    return evaluate_sections(settings, folder, show_progress=False)


def test_every_long_data_document_summary_covers_most_of_its_sections(sections):
    docs = {d["doc_id"]: d for d in sections["documents"]}
    assert len(docs) == len(_long_documents()) >= 4
    for doc_id, d in docs.items():
        assert d["sections"] >= 10, doc_id  # handbooks with numbered top-level sections
        assert d["share"] >= 0.8, (doc_id, [s["section"] for s in d["per_section"] if not s["covered"]])
        assert 0 < d["summary_words"] <= MAX_DEFAULT_WORDS and d["fallback"] is None
        # the covered sections' sentences are those sections' own words (ROUGE-L precision against the section;
        # a table row or list item is rendered with its header, so a single one may score lower)
        precision = [s["rougeL_precision"] for s in d["per_section"] if s["covered"]]
        assert sum(precision) / len(precision) > 0.75, doc_id


def test_the_diabetes_handbook_summary_reaches_medicines_targets_and_complications(sections):
    d = next(d for d in sections["documents"] if d["doc_id"] == "med-type2-diabetes-handbook")
    covered = {s["section"] for s in d["per_section"] if s["covered"]}
    assert {"3. Targets: the numbers that matter", "8. Medicines",
            "11. Preventing and detecting complications"} <= covered
