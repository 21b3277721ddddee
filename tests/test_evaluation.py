"""The evaluation commands: metrics by hand, and `rag eval retrieval|answers` end to end on tiny data sets
written here (same formats as ../shared/eval: BEIR folders and SQuAD-style JSONL)."""

from __future__ import annotations

import json
import math

import pytest

from rag.evaluation.answers import contains_answer, exact_match, f1_score
from rag.evaluation.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k
from service.cli import main as cli


def test_ranking_metrics_match_hand_computed_values():
    qrels = {"a": 1, "b": 2}
    ranked = ["x", "b", "a"]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranked, qrels) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["b", "a"], qrels) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], qrels) == 0.0
    assert recall_at_k(ranked, qrels, 2) == 0.5 and recall_at_k(ranked, qrels, 3) == 1.0
    assert mrr_at_k(ranked, qrels) == 0.5 and mrr_at_k(ranked, qrels, k=1) == 0.0
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([], 95) == 0.0


def test_answer_metrics_follow_squad_normalization():
    assert exact_match("The Oil Shock.", ["oil shock"]) == 1.0
    assert exact_match("Until the oil shock", ["the oil shock"]) == 0.0
    # articles dropped: {until, oil, shock} vs {oil, shock}: precision 2/3, recall 1
    assert f1_score("until the oil shock", ["the oil shock"]) == pytest.approx(0.8)
    assert contains_answer("Prices stayed stable until the oil shock of 1973.", ["the oil shock"]) == 1.0
    assert contains_answer("The shocking oil price.", ["oil shock"]) == 0.0  # word-aligned, not substring
    assert contains_answer("Anything", [""]) == 0.0


BEIR_DOCS = {
    "d1": ("Photosynthesis", "Plants turn sunlight, water and carbon dioxide into glucose and oxygen."),
    "d2": ("Volcanoes", "A volcano erupts when magma rises through cracks in the crust of the earth."),
    "d3": ("Tides", "The gravitational pull of the moon causes ocean tides twice a day."),
    "d4": ("Compound interest", "Compound interest earns interest on previously earned interest."),
    "d5": ("Insulin", "Insulin lowers blood glucose by helping cells absorb sugar."),
}
BEIR_QUERIES = {"q1": ("What do plants make from sunlight?", "d1"), "q2": ("Why do volcanoes erupt?", "d2"),
                "q3": ("What causes ocean tides?", "d3"), "q4": ("What lowers blood sugar?", "d5")}


@pytest.fixture(scope="module")
def beir_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("beir") / "tiny-set"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n"
                                               for d, (t, x) in BEIR_DOCS.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                for q, (t, _) in BEIR_QUERIES.items()), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, (_, d) in BEIR_QUERIES.items()), encoding="utf-8")
    return root


def test_eval_retrieval_reports_every_mode_and_reuses_the_generation(beir_set, tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("RAG_MODEL_CACHE", str(models_dir))
    home = ["--home", str(tmp_path / "home")]
    out = tmp_path / "retrieval.json"
    assert cli([*home, "eval", "retrieval", str(beir_set), "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["dataset"] == "tiny-set" and set(report["modes"]) == {"dense", "keyword", "hybrid"}
    for mode, m in report["modes"].items():
        assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_ms", "p95_ms"} <= set(m), mode
        assert 0.0 <= m["ndcg@10"] <= 1.0 and m["p95_ms"] >= m["p50_ms"] > 0
    # one relevant document per query among five easy ones: every mode finds it in the top 10
    assert all(m["recall@10"] == 1.0 for m in report["modes"].values())
    assert report["modes"]["hybrid"]["mrr@10"] >= 0.75
    gens = list((tmp_path / "home" / "eval").iterdir())
    assert cli([*home, "eval", "retrieval", str(beir_set), "--modes", "keyword", "--json", str(out), "--quiet"]) == 0
    assert list((tmp_path / "home" / "eval").iterdir()) == gens  # reused, not rebuilt
    assert set(json.loads(out.read_text())["modes"]) == {"keyword"}

    assert cli([*home, "eval", "retrieval", str(beir_set), "--modes", "dense,fuzzy"]) == 2
    assert cli([*home, "eval", "retrieval", str(tmp_path / "nowhere")]) == 2


def test_eval_answers_scores_extractive_answers_with_checked_citations(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("RAG_MODEL_CACHE", str(models_dir))
    rows = [
        ("a1", "Oil", "The 1970s oil crisis began in October 1973 when an embargo was proclaimed. Prices quadrupled.",
         "When did the oil crisis begin?", ["October 1973"]),
        ("a2", "Rivers", "The Nile is the longest river in Africa. It flows north into the Mediterranean Sea.",
         "Into which sea does the Nile flow?", ["the Mediterranean Sea", "Mediterranean"]),
        ("a3", "Bees", "Honey bees communicate the location of flowers with a waggle dance.",
         "How do honey bees share where flowers are?", ["waggle dance", "with a waggle dance"]),
    ]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": i, "title": t, "context": c, "question": q, "answers": a}) + "\n"
                          for i, t, c, q, a in rows), encoding="utf-8")
    out = tmp_path / "answers.json"
    home = ["--home", str(tmp_path / "home")]
    assert cli([*home, "eval", "answers", str(qa), "--backend", "extractive", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    m = report["metrics"]
    assert report["backend"] == "extractive" and report["questions"] == 3
    assert m["invalid_citation_rate"] == 0.0 and m["gold_context_retrieved"] == 1.0
    assert m["citation_accuracy"] == 1.0 and m["contains_answer"] >= 2 / 3
    assert 0 < m["f1"] <= 100 and m["seconds_per_answer"] > 0
    assert all(q["answer"] and q["has_citations"] for q in report["per_question"])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "no context"}\n', encoding="utf-8")
    assert cli([*home, "eval", "answers", str(bad), "--backend", "extractive"]) == 2
