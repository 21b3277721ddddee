"""The evaluation commands: metrics by hand, and `rag eval retrieval|answers` end to end on tiny data sets
written here (same formats as ../shared/eval: BEIR folders and SQuAD-style JSONL)."""

from __future__ import annotations

import json
import math

import pytest

from evaluation.answers import contains_answer, exact_match, f1_score
from evaluation.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k
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
    assert m["citation_accuracy"] == 1.0 and m["holds_answer"] >= 2 / 3
    assert 0 < m["f1"] <= 100 and m["seconds_per_answer"] > 0
    assert all(q["answer"] and q["has_citations"] for q in report["per_question"])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "no context"}\n', encoding="utf-8")
    assert cli([*home, "eval", "answers", str(bad), "--backend", "extractive"]) == 2


def test_eval_answers_on_a_probe_reports_answered_and_abstained(tmp_path, small_corpus, models_dir, monkeypatch):
    monkeypatch.setenv("RAG_MODEL_CACHE", str(models_dir))
    probe = tmp_path / "probe.jsonl"
    rows = [
        {"id": "p1", "question": "What blood pressure means hypertension?", "answerable": True,
         "doc_id": "med-hypertension", "answers": ["130/80"], "answer_from": "text", "language": "en"},
        {"id": "p2", "question": "子女教育扣除标准是多少？", "answerable": True, "doc_id": "fin-tax-zh",
         "answers": ["每月二千元"], "answer_from": "text", "language": "zh"},
        {"id": "p3", "question": "Who won the 1998 World Cup?", "answerable": False, "doc_id": None, "answers": [],
         "answer_from": None, "language": "en"},
    ]
    probe.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "probe.json"
    assert cli(["--home", str(tmp_path / "home"), "eval", "answers", str(probe), "--corpus", str(small_corpus),
                "--backend", "extractive", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["kind"] == "probe" and report["questions"] == 3
    m = report["metrics"]
    assert (m["answerable"], m["unanswerable"]) == (2, 1)
    assert m["holds_answer"] == 1.0 and m["answered_when_answerable"] == 1.0
    assert m["abstained_when_unanswerable"] == 1.0 and m["citation_accuracy"] == 1.0
    assert set(report["languages"]) == {"en", "zh"} and report["languages"]["zh"]["holds_answer"] == 1.0
    assert set(report["groups"]) == {"text", "none"}


def test_eval_answers_on_tatqa_asks_each_question_over_its_own_context_when_told(tmp_path, models_dir,
                                                                                  monkeypatch):
    """TAT-QA questions name no company: the same question asked of two filings has two answers. Over the whole
    corpus one answer serves both (at most one is right); with --own-context each question is asked over its own
    table and paragraphs, and both are right."""
    monkeypatch.setenv("RAG_MODEL_CACHE", str(models_dir))
    folder = tmp_path / "tatqa"
    folder.mkdir()
    contexts = {"c1": ("($ in millions) |  | \nAt December 31: | 2019 | 2018\nTotal revenue | $1,496.5 | $1,202.9",
                       "Revenue grew on higher volumes of fixed-price contracts."),
                "c2": (" | Year Ended | \n | 2019 | 2018\nTotal revenue | $3,037.0 | $2,810.4",
                       "Our revenue rose with new subscription customers.")}
    corpus = [{"_id": f"{c}-{part}", "title": "", "text": text, "metadata": {"context": c, "kind": part}}
              for c, (table, para) in contexts.items() for part, text in (("table", table), ("p1", para))]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    qa = [{"id": f"q-{c}", "question": "What was the total revenue in 2019?", "answers": [gold],
           "answer_type": "span", "answer_from": "table", "scale": "million", "gold_doc_ids": [f"{c}-table"]}
          for c, gold in (("c1", "$1,496.5"), ("c2", "$3,037.0"))]
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa), encoding="utf-8")
    home = ["--home", str(tmp_path / "home")]
    run = [*home, "eval", "answers", str(folder), "--backend", "extractive", "--split", "all", "--quiet", "--json"]
    assert cli([*run, str(tmp_path / "corpus.json")]) == 0
    assert cli([*run, str(tmp_path / "own.json"), "--own-context"]) == 0
    whole, own = (json.loads((tmp_path / f).read_text()) for f in ("corpus.json", "own.json"))
    assert whole["metrics"]["holds_answer"] <= 0.5 and whole["own_context"] is False
    assert own["own_context"] is True and own["metrics"]["holds_answer"] == 1.0
    assert all(q["cited_gold"] for q in own["per_question"])
    # only TAT-QA has contexts to keep to
    squad = tmp_path / "squad.jsonl"
    squad.write_text(json.dumps({"id": "s", "title": "T", "context": "A b.", "question": "A?", "answers": ["b"]})
                     + "\n", encoding="utf-8")
    assert cli([*home, "eval", "answers", str(squad), "--own-context", "--quiet"]) == 2


def test_answer_text_metrics():
    from evaluation.metrics import contains_answer, exact_match, f1_score, holds

    # SQuAD v1.1's normalization: case, punctuation and articles do not count
    assert exact_match("The Mediterranean Sea.", ["Mediterranean Sea"]) == 1.0
    assert f1_score("the waggle dance of bees", ["waggle dance"]) == 2 * (2 / 4 * 1.0) / (2 / 4 + 1.0)
    assert contains_answer("It began in October 1973 [1].", ["October 1973"]) == 1.0
    # figures: separators, currency, scale words and the spacing of Chinese text do not count
    assert holds("Total sales — 2019: $1,496.5; 2018: $1,202.9", "$1,496.5")
    assert holds("revenue of 1496.5 million", "$1,496.5")
    assert holds("首套个人住房公积金贷款利率为：5年以上2.6%", "2.6%")
    assert not holds("a rate of 12.6%", "2.6%")
    assert not holds("in 1996", "199")


# --- rag eval recommend ------------------------------------------------------------------------------------

MOVIES = [("1", "Toy Story", "1995", "Animation Children's Comedy"), ("2", "GoldenEye", "1995", "Action Thriller"),
          ("3", "Heat", "1995", "Action Crime Thriller"), ("4", "Casino", "1995", "Drama Thriller"),
          ("5", "Babe", "1995", "Children's Comedy Drama"), ("6", "Clueless", "1995", "Comedy Romance"),
          ("7", "Apollo 13", "1995", "Action Drama Thriller"), ("8", "Braveheart", "1995", "Action Drama War"),
          ("9", "Jumanji", "1995", "Adventure Children's Fantasy"), ("10", "Se7en", "1995", "Crime Thriller")]
HALF_STARS = [0.5 * n for n in range(1, 11)]  # 0.5 .. 5.0


def write_half_star_set(root):
    """A RecBole folder rated in half stars (like MovieLens' latest-small release), with three broken rows."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                    + "".join("\t".join(m) + "\n" for m in MOVIES), encoding="utf-8")
    rows = []
    for u in range(12):
        for j in range(6):
            rows.append(f"{u + 1}\t{(u + j) % 10 + 1}\t{HALF_STARS[(u * 6 + j) % 10]}\t{880000000 + u * 1000 + j * 10}")
    rows += ["3\t7\tlots\t880000500",  # a rating that is not a number
             "4\t999\t4.0\t880000600",  # an item the .item file does not have
             "5\t2\t3.5"]  # a short row
    (root / "tiny.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                     + "".join(r + "\n" for r in rows), encoding="utf-8")
    return root


def test_eval_recommend_on_half_stars_reads_the_scale_from_the_data_and_skips_bad_rows(tmp_path, models_dir,
                                                                                      monkeypatch, capsys):
    monkeypatch.setenv("RAG_MODEL_CACHE", str(models_dir))
    folder = write_half_star_set(tmp_path / "tiny")
    home = ["--home", str(tmp_path / "home")]
    out = tmp_path / "rec.json"
    assert cli([*home, "eval", "recommend", str(folder), "--json", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    data = report["data"]
    assert data["rating_scale"] == [0.5, 5.0] and data["rating_scale_source"] == "data"
    assert data["rating_neutral"] == 2.75
    assert (data["rows"], data["used"], data["rejected_by_ingest"]) == (75, 72, 0)
    assert data["skipped"]["rows"] == 3
    assert data["skipped"]["by_reason"] == {"rating: not a number": 1, "item_id: not in tiny.item": 1,
                                            "line: expected 4 tab-separated fields": 1}
    assert report["protocol"]["users"] == 12 and report["protocol"]["train_interactions"] == 60
    assert set(report["systems"]) == {"ours", "popularity", "als", "itemknn", "bpr"}
    for name, m in report["systems"].items():
        assert 0.0 <= m["ndcg@10"] <= 1.0 and 0.0 <= m["coverage"] <= 1.0 and m["users"] == 12, name
    assert set(report["phases_s"]) == {"load", "index", "tune", "fit", "score"}
    assert set(report["validation"]) == {"ours", "als", "itemknn", "bpr"}
    assert "skipped 3 of 75 rows" in table and "\nbpr " in table and "wall time: load" in table

    # A given scale wins over the data's: the half stars below 1 are skipped with the events API's reason.
    assert cli([*home, "eval", "recommend", str(folder), "--rating-scale", "1,5", "--json", str(out), "--quiet",
                "--no-tune"]) == 0
    again = json.loads(out.read_text())
    assert again["data"]["rating_scale"] == [1.0, 5.0] and again["data"]["rating_scale_source"] == "given"
    assert again["data"]["skipped"]["rows"] == 11 and again["data"]["used"] == 64
    assert again["data"]["skipped"]["by_reason"]["rating: a rating must be from 1 to 5"] == 8
    assert {"file": "tiny.inter", "line": 2, "field": "rating", "reason": "a rating must be from 1 to 5, got 0.5"} \
        in again["data"]["skipped"]["examples"]
    assert again["generation"]["id"] == report["generation"]["id"]  # the item generation is built once
    capsys.readouterr()

    # Nothing usable left: one line, non-zero, no traceback.
    assert cli([*home, "eval", "recommend", str(folder), "--rating-scale", "6,10", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rag: error: ") and "Traceback" not in err
    assert "nothing usable: 75 of 75 rows skipped" in err and "a rating must be from 6 to 10" in err


def test_cli_errors_from_the_library_are_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    import evaluation.recommend as receval

    folder = tmp_path / "set"
    folder.mkdir()
    for exc, line in ((RuntimeError("1080 ratings were rejected:\n[{'index': 1530}]"),
                       "rag: error: RuntimeError: 1080 ratings were rejected: [{'index': 1530}] "
                       "(run with -v for details)\n"),
                      (ValueError("bad value"), "rag: error: ValueError: bad value (run with -v for details)\n"),
                      (receval.EvaluationError("nothing usable"), "rag: error: nothing usable\n")):
        def boom(*args, exc=exc, **kwargs):
            raise exc

        monkeypatch.setattr(receval, "evaluate", boom)
        code = cli(["--home", str(tmp_path / "home"), "eval", "recommend", str(folder), "--quiet"])
        assert code == (2 if isinstance(exc, receval.EvaluationError) else 1)
        assert capsys.readouterr().err == line
    with pytest.raises(ValueError, match="bad value"):  # -v: the traceback, for a developer
        monkeypatch.setattr(receval, "evaluate", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad value")))
        cli(["--home", str(tmp_path / "home"), "-v", "eval", "recommend", str(folder), "--quiet"])
