"""PII redaction on ingest (indexer.redaction): a real build of a corpus holding each kind of personal data, in
English and Chinese. No original value reaches any table of the generation, the vectors are the redacted text's,
searching for a raw value finds nothing, and figures that are not personal data stay as written."""

from __future__ import annotations

import os
from collections import Counter

import duckdb
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from indexer.build import build  # noqa: E402
from indexer.redaction import Redactor  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.snapshot import Snapshot  # noqa: E402
from rag.snapshot_files import META_DB  # noqa: E402

# kind -> raw values as written in the corpus (each unique to it, so a keyword search could only find it here)
PII = {
    "email": ["maria.kowalski@clinic-example.org", "zhangwei@yiyuan-example.cn"],
    "phone": ["+44 20 7946 0958", "(212) 555-0147", "13912345678", "139 1234 5679"],
    "card": ["4111 1111 1111 1111", "5500-0000-0000-0004"],
    "ssn": ["536-90-4399"],
    "cn_id": ["11010519491231002X", "440106198506150025"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"],
}
NOT_PII = ["$1,299.00", "2025-03-01", "500 mg", "130/80 mmHg", "2.5 mg/kg", "1-800-222-1222", "5105-1051-0510-5101",
           "320106197001011234", "每次500毫克", "人民币1299元", "2025年3月1日"]

EN = """---
id: med-intake-en
title: Patient intake record
domain: medical
language: en
---
# Patient intake record
The patient wrote to maria.kowalski@clinic-example.org and can be called on +44 20 7946 0958 or (212) 555-0147.
The deposit of $1,299.00 was paid on 2025-03-01 with card 4111 1111 1111 1111; a second card 5500-0000-0000-0004
is on file. Her SSN is 536-90-4399 and refunds go to DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432.
Dose: 500 mg twice daily, 2.5 mg/kg for children; target blood pressure below 130/80 mmHg.
Poison control (toll-free): 1-800-222-1222. Reference 5105-1051-0510-5101 is an order number.
"""
ZH = """---
id: med-intake-zh
title: 患者登记表
domain: medical
language: zh
---
# 患者登记表
患者手机13912345678，备用电话139 1234 5679，邮箱zhangwei@yiyuan-example.cn。
身份证号11010519491231002X，家属身份证440106198506150025。档案编号320106197001011234。
剂量：每日两次，每次500毫克。挂号费人民币1299元，就诊日期2025年3月1日。
"""
FINANCE = """---
id: fin-public-note
title: Branch opening hours
domain: finance
language: en
---
# Branch opening hours
Write to branch.desk@bank-example.com for appointments. The branch opens at 9 and the fee is $15.
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("pii")
    corpus = root / "corpus"
    (corpus / "medical").mkdir(parents=True)
    (corpus / "finance").mkdir()
    (corpus / "medical" / "intake-en.md").write_text(EN, encoding="utf-8")
    (corpus / "medical" / "intake-zh.md").write_text(ZH, encoding="utf-8")
    (corpus / "finance" / "note.md").write_text(FINANCE, encoding="utf-8")
    settings = load_settings(environ={}, home=str(root / "home"), embedder="minilm", model_cache=str(models_dir))
    report = build(settings, [corpus], show_progress=False)
    snapshot = Snapshot(settings.home_path / "generations" / report.generation_id, settings.models_dir)
    yield settings, report, snapshot
    snapshot.close()


def all_text(snapshot: Snapshot) -> str:
    """Every value of every table of the generation's database, as text."""
    con = duckdb.connect(str(snapshot.path / META_DB), read_only=True)
    try:
        out = []
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            for row in con.execute(f"SELECT * FROM {table}").fetchall():
                out.append(" ".join(map(str, row)))
        return "\n".join(out)
    finally:
        con.close()


def test_no_original_value_reaches_any_table_and_the_report_counts_each_kind(built):
    _, report, snapshot = built
    text = all_text(snapshot)
    for kind, values in PII.items():
        for v in values:
            assert v not in text, (kind, v)
            digits = "".join(ch for ch in v if ch.isdigit())
            if len(digits) >= 9:
                assert digits not in text.replace(" ", "").replace("-", ""), (kind, v)
    for kind in PII:
        assert f"[{kind.upper()}]" in text, kind
    assert report.redactions == {"email": 2, "iban": 2, "cn_id": 2, "card": 2, "ssn": 1, "phone": 4}
    # medical is redacted by default, finance is not
    assert "branch.desk@bank-example.com" in text


def test_figures_that_are_not_personal_data_stay(built):
    _, _, snapshot = built
    chunks = " ".join(c["text"] for d in ("med-intake-en", "med-intake-zh") for c in snapshot.document_chunks(d))
    for v in NOT_PII:
        assert v in chunks, v


def test_vectors_come_from_the_redacted_text(built):
    _, _, snapshot = built
    emb = snapshot.embedder
    for doc_id, raw in (("med-intake-en", EN), ("med-intake-zh", ZH)):
        doc = snapshot.document(doc_id, with_text=False)
        for c in snapshot.document_chunks(doc_id):
            head = " > ".join(p for p in [doc["title"], *(c["heading_path"] or [])] if p)
            redacted = f"{head}\n{c['text']}" if head else c["text"]
            stored = snapshot.chunk_vector(c["row"])
            assert float(np.dot(stored, emb.embed_passages([redacted])[0])) > 0.999
            original = redacted
            for kind, values in PII.items():  # put the originals back, in order of appearance
                for v in values:
                    if v in raw:
                        original = original.replace(f"[{kind.upper()}]", v, 1)
            if original != redacted:
                assert float(np.dot(stored, emb.embed_passages([original])[0])) < 0.999


@pytest.mark.parametrize("mode", ["keyword", "hybrid", "dense"])
def test_searching_for_a_raw_value_finds_nothing(built, mode):
    settings, _, snapshot = built
    from rag.retriever import Retriever

    retriever = Retriever(settings.retrieval)
    for values in PII.values():
        for v in values:
            hits = retriever.search(snapshot, v, mode=mode, top_k=10).hits
            assert not any(v in h.text for h in hits), v
            if mode == "keyword" and v not in ("+44 20 7946 0958", "139 1234 5679"):  # "20", "139" are common
                assert hits == [], (v, [h.text[:60] for h in hits])


def test_the_documents_store_parses_as_the_build_redacts(built, tmp_path):
    """The store compares a stored file with its indexed version by content hash: it must parse and redact the
    file as the build did, or a redacted document shows a pending update forever (and its raw text is served)."""
    settings, _, snapshot = built
    from indexer.build import Indexer

    path = tmp_path / "intake-en.md"
    path.write_text(EN, encoding="utf-8")
    (doc,) = Indexer().load_documents(settings, [path])
    assert "maria.kowalski@clinic-example.org" not in doc.text and "[EMAIL]" in doc.text
    assert doc.content_hash == snapshot.document("med-intake-en", with_text=False)["content_hash"]


def test_redactor_leaves_invalid_numbers_alone():
    r = Redactor()
    counts: Counter = Counter()
    text = ("Order 4111 1111 1111 1112, IBAN DE89 3704 0044 0532 0130 01, ID 320106197001011234, SSN 000-12-3456, "
            "CI 0.89-8.44 (16-83), 0.950/0.938/0.979, 每次500毫克")
    assert r.redact(text, counts) == text and not counts
